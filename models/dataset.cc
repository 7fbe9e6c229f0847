#include "models/dataset.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <span>

#include "core/seed.h"

namespace tributary::models {
namespace {

// Tensor bytes are hashed as they sit in memory; that is the canonical little-endian form only on
// little-endian hosts, the only kind this project targets.
static_assert(std::endian::native == std::endian::little, "canonical bytes assume little-endian");

Status CheckSizes(int batch_size, int context) {
  if (batch_size < 1)
    return InvalidArgument("batch_size must be >= 1, got " + std::to_string(batch_size));
  if (context < 1) return InvalidArgument("context must be >= 1, got " + std::to_string(context));
  return Status::Ok();
}

// floor(a * b / c) without overflowing int64 in the product.
int64_t MulDiv(int64_t a, int64_t b, int64_t c) {
  return static_cast<int64_t>(static_cast<__int128>(a) * b / c);
}

void HashTensorBytes(Sha256& h, const torch::Tensor& t) {
  if (!t.defined() || t.numel() == 0) return;
  torch::Tensor c = t.to(torch::kCPU, torch::kLong).contiguous();
  h.Update(std::span<const std::byte>(reinterpret_cast<const std::byte*>(c.data_ptr<int64_t>()),
                                      static_cast<size_t>(c.numel()) * sizeof(int64_t)));
}

}  // namespace

Result<TokenDataset> TokenDataset::Create(std::vector<int64_t> tokens, double validation_fraction) {
  if (!std::isfinite(validation_fraction) || validation_fraction < 0.0 ||
      validation_fraction >= 1.0) {
    return InvalidArgument("validation_fraction must be in [0, 1), got " +
                           std::to_string(validation_fraction));
  }
  const auto n = static_cast<int64_t>(tokens.size());
  const auto validation =
      static_cast<int64_t>(std::floor(static_cast<double>(n) * validation_fraction));
  const int64_t train = n - validation;
  if (train < 1) {
    return InvalidArgument("dataset of " + std::to_string(n) + " tokens leaves no training tokens");
  }
  return TokenDataset(std::make_shared<const std::vector<int64_t>>(std::move(tokens)), train);
}

Result<TokenRange> TokenDataset::ShardRange(uint32_t shard, uint32_t num_shards) const {
  if (num_shards == 0) return InvalidArgument("num_shards must be >= 1");
  if (shard >= num_shards) {
    return InvalidArgument("shard " + std::to_string(shard) + " out of range for " +
                           std::to_string(num_shards) + " shards");
  }
  return TokenRange{MulDiv(shard, train_tokens_, num_shards),
                    MulDiv(int64_t{shard} + 1, train_tokens_, num_shards)};
}

Result<std::vector<int64_t>> TokenDataset::TrainWindowStarts(const BatchKey& key, int batch_size,
                                                             int context) const {
  TRIB_RETURN_IF_ERROR(CheckSizes(batch_size, context));
  TRIB_ASSIGN_OR_RETURN(TokenRange range, ShardRange(key.shard, key.num_shards));
  if (range.size() < int64_t{context} + 1) {
    return InvalidArgument(
        "shard " + std::to_string(key.shard) + "/" + std::to_string(key.num_shards) + " has " +
        std::to_string(range.size()) +
        " tokens, fewer than context + 1 = " + std::to_string(int64_t{context} + 1));
  }
  const auto num_starts = static_cast<uint64_t>(range.size() - context);
  SeedStream stream(DeriveSeed({key.job_seed, key.shard, key.num_shards, key.round, key.step}));
  std::vector<int64_t> starts(static_cast<size_t>(batch_size));
  for (int64_t& s : starts) s = range.begin + static_cast<int64_t>(stream.Below(num_starts));
  return starts;
}

Result<Batch> TokenDataset::TrainBatch(const BatchKey& key, int batch_size, int context) const {
  TRIB_ASSIGN_OR_RETURN(std::vector<int64_t> starts, TrainWindowStarts(key, batch_size, context));
  return Gather(starts, context);
}

Result<std::vector<Batch>> TokenDataset::ValidationBatches(int count, int batch_size,
                                                           int context) const {
  if (count < 1) return InvalidArgument("count must be >= 1, got " + std::to_string(count));
  TRIB_RETURN_IF_ERROR(CheckSizes(batch_size, context));
  const TokenRange range = validation_range();
  if (range.size() < int64_t{context} + 1) {
    return InvalidArgument(
        "validation split has " + std::to_string(range.size()) +
        " tokens, fewer than context + 1 = " + std::to_string(int64_t{context} + 1));
  }
  const int64_t windows = int64_t{count} * batch_size;
  const int64_t span = range.size() - (int64_t{context} + 1);  // last possible start offset
  std::vector<Batch> batches;
  batches.reserve(static_cast<size_t>(count));
  std::vector<int64_t> starts(static_cast<size_t>(batch_size));
  for (int64_t w = 0; w < windows; ++w) {
    starts[static_cast<size_t>(w % batch_size)] =
        range.begin + (windows == 1 ? 0 : MulDiv(w, span, windows - 1));
    if (w % batch_size == batch_size - 1) batches.push_back(Gather(starts, context));
  }
  return batches;
}

Batch TokenDataset::Gather(const std::vector<int64_t>& starts, int context) const {
  const auto rows = static_cast<int64_t>(starts.size());
  Batch batch{torch::empty({rows, context}, torch::kLong),
              torch::empty({rows, context}, torch::kLong)};
  int64_t* in = batch.inputs.data_ptr<int64_t>();
  int64_t* out = batch.targets.data_ptr<int64_t>();
  const size_t row_bytes = static_cast<size_t>(context) * sizeof(int64_t);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t* src = tokens_->data() + starts[static_cast<size_t>(r)];
    std::memcpy(in + r * context, src, row_bytes);
    std::memcpy(out + r * context, src + 1, row_bytes);
  }
  return batch;
}

Digest BatchDigest(const Batch& batch) {
  Sha256 h;
  const bool shaped = batch.inputs.defined() && batch.inputs.dim() == 2;
  h.UpdateU64(shaped ? static_cast<uint64_t>(batch.inputs.size(0)) : 0);
  h.UpdateU64(shaped ? static_cast<uint64_t>(batch.inputs.size(1)) : 0);
  HashTensorBytes(h, batch.inputs);
  HashTensorBytes(h, batch.targets);
  return h.Finish();
}

}  // namespace tributary::models
