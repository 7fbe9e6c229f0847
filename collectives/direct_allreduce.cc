#include "collectives/direct_allreduce.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "collectives/butterfly.h"
#include "collectives/float_loops.h"
#include "collectives/tensor_exchange.h"

namespace tributary::collectives {
namespace {

using codec::FirstNonFinite;
using codec::ValueName;

// One call on one rank.
class DirectOp {
 public:
  DirectOp(Mesh& mesh, std::span<float> data, const DirectOptions& options, CodecState* codecs,
           std::string tag)
      : mesh_(mesh),
        data_(data),
        options_(options),
        codecs_(codecs),
        tag_(std::move(tag)),
        have_(mesh.world(), false),
        decoded_(mesh.world()) {}

  Status Run() {
    if (codecs_ == nullptr) max_abs_[me()] = MaxAbsBits(data_);
    if (codecs_ == nullptr && max_abs_[me()] >= kNonFiniteBits) {
      const size_t i = FirstNonFinite(data_);
      return InvalidArgument("our own input element " + std::to_string(i) + " is " +
                             ValueName(data_[i]));
    }
    TRIB_RETURN_IF_ERROR(StartReceives());
    TRIB_RETURN_IF_ERROR(SendOurs());
    // Until every contribution is in and our sends finished (they read `data_`, which the
    // reduction overwrites).
    TRIB_RETURN_IF_ERROR(AwaitArrivals(
        *shared_, options_.deadline, options_.control, /*need_sends=*/true,
        [&] { return in_ + 1 == world(); }, [&](const Arrival& a) { return OnArrival(a); },
        [&] { return TimedOut(); }));
    return codecs_ ? ReduceDecoded() : ReduceFloats();
  }

  const std::optional<PeerFailure>& failure() const { return failure_; }

 private:
  uint32_t me() const { return mesh_.rank(); }
  uint32_t world() const { return mesh_.world(); }

  Status StartReceives() {
    std::vector<uint32_t> others;
    for (uint32_t p = 0; p < world(); ++p) {
      if (p != me()) others.push_back(p);
    }
    shared_->ExpectSendsTo(world(), others);
    auto expected = std::make_shared<ExpectedTensor>();
    expected->job_id = mesh_.job_id();
    expected->tag = tag_;
    expected->numel = data_.size();
    if (codecs_) {
      TRIB_ASSIGN_OR_RETURN(expected->max_bytes, codecs_->decoder().MaxPayloadBytes(data_.size()));
      shared_->payloads.resize(world());
    } else {
      expected->exact = true;
      expected->max_bytes = data_.size_bytes();
      shared_->floats.resize(world());
      for (uint32_t p = 0; p < world(); ++p) {
        if (p != me()) shared_->floats[p].reset(new float[data_.size()]);
      }
    }
    for (uint32_t p : others) shared_->ExpectMessage(mesh_.peer(p), p, expected, options_.deadline);
    return Status::Ok();
  }

  // One payload for everyone, sent first to rank me+1 so that ranks are not all hit at once.
  Status SendOurs() {
    std::shared_ptr<const std::string> payload;
    std::span<const std::byte> tail = std::as_bytes(std::span<const float>(data_));
    if (codecs_) {
      TRIB_ASSIGN_OR_RETURN(CodecState::Encoded encoded, codecs_->EncodeWhole(data_));
      decoded_[me()] = std::move(encoded.decoded);  // what every receiver reconstructs
      payload = std::make_shared<const std::string>(std::move(encoded.payload));
      tail = std::as_bytes(std::span(payload->data(), payload->size()));
    }
    TRIB_ASSIGN_OR_RETURN(auto frame, TensorFrame(mesh_.job_id(), tag_, data_.size(), me(), tail.size()));
    for (uint32_t k = 1; k < world(); ++k) {
      const uint32_t to = (me() + k) % world();
      // The tail is `data_` (unchanged until every send finished) or *payload (kept by the
      // callback).
      SendTensorTo(shared_, *mesh_.peer(to), to, frame, tail, payload);
    }
    return Status::Ok();
  }

  Status OnArrival(const Arrival& a) {
    TRIB_RETURN_IF_ERROR(ArrivalFailure(mesh_, a, &failure_));
    if (have_[a.peer]) return Blame(a.peer, ProtocolError("second contribution from " + mesh_.Describe(a.peer)));
    TRIB_RETURN_IF_ERROR(codecs_ ? DecodeFrom(a.peer) : CheckFloatsFrom(a.peer));
    have_[a.peer] = true;
    ++in_;
    return Status::Ok();
  }

  Status CheckFloatsFrom(uint32_t peer) {
    const std::span<const float> v(shared_->floats[peer].get(), data_.size());
    max_abs_[peer] = MaxAbsBits(v);
    if (max_abs_[peer] < kNonFiniteBits) return Status::Ok();
    const size_t i = FirstNonFinite(v);
    return Blame(peer, InvalidArgument("non-finite value " + ValueName(v[i]) + " at element " +
                                       std::to_string(i) + " from " + mesh_.Describe(peer)));
  }

  Status DecodeFrom(uint32_t peer) {
    auto decoded = codec::DecodeChecked(codecs_->decoder(), shared_->payloads[peer], data_.size());
    if (!decoded.ok()) {
      return Blame(peer, decoded.status().WithContext("contribution from " + mesh_.Describe(peer)));
    }
    decoded_[peer] = std::move(decoded).value();
    shared_->payloads[peer].clear();
    return Status::Ok();
  }

  // x0 + x1 + ... in rank order on every rank (the same bits everywhere), ÷ world if averaging;
  // staged in a peer's receive buffer when an overflow is possible, so it leaves `data_` as it was.
  Status ReduceFloats() {
    if (world() == 1) return Status::Ok();
    std::vector<const float*> src(world());
    for (uint32_t r = 0; r < world(); ++r) src[r] = r == me() ? data_.data() : shared_->floats[r].get();
    const float divisor = options_.average ? static_cast<float>(world()) : 1.0f;
    if (auto i = SumUnlessOverflow(src, max_abs_, data_, shared_->floats[me() == 0 ? 1 : 0].get(), divisor)) {
      return InvalidArgument("the sum at element " + std::to_string(*i) + " overflows float");
    }
    return Status::Ok();
  }

  Status ReduceDecoded() {
    TRIB_ASSIGN_OR_RETURN(std::vector<float> values,
                          AggregateShard(options_.aggregator, decoded_, options_.average,
                                         options_.aggregate_threads));
    std::copy(values.begin(), values.end(), data_.begin());
    return Status::Ok();
  }

  // Names every peer still missing and blames the first; with every contribution in, blames
  // the first peer that did not take our contribution.
  Status TimedOut() {
    std::string missing;
    std::optional<uint32_t> first;
    for (uint32_t p = 0; p < world(); ++p) {
      if (p == me() || have_[p]) continue;
      if (!first) first = p;
      missing += (missing.empty() ? "" : ", ") + mesh_.Describe(p);
    }
    if (first) {
      return Blame(*first, DeadlineExceeded("still waiting at the deadline for the contribution of " +
                                            missing));
    }
    const uint32_t unsent = shared_->FirstUnsent().value_or(me());
    return Blame(unsent, DeadlineExceeded("our contribution was not written to " +
                                          mesh_.Describe(unsent) + " by the deadline"));
  }

  Status Blame(uint32_t peer, const Status& why, std::optional<uint32_t> reported_by = {}) {
    failure_ = mesh_.FailureOf(peer, reported_by);
    return why;
  }

  Mesh& mesh_;
  std::span<float> data_;
  const DirectOptions& options_;
  CodecState* codecs_;  // null: plain fp32 sum
  const std::string tag_;
  std::shared_ptr<ArrivalBox> shared_ = std::make_shared<ArrivalBox>();
  std::vector<bool> have_;
  uint32_t in_ = 0;  // peers whose contribution arrived and checked out
  std::vector<uint32_t> max_abs_ = std::vector<uint32_t>(mesh_.world(), 0);  // plain sum: by rank
  std::vector<std::vector<float>> decoded_;  // codec: by rank
  std::optional<PeerFailure> failure_;
};

}  // namespace

bool IsPlainSum(const std::string& codec, const robust::AggregatorSpec& aggregator) {
  return codec == "fp32" && aggregator.kind == robust::AggregatorKind::kMean;
}

std::string DirectWireTag(const std::string& tag, const std::string& codec,
                          const robust::AggregatorSpec& aggregator, bool average) {
  return tag + "/direct/" + codec + "/" + robust::ToString(aggregator) + "/" +
         (average ? "mean" : "sum");
}

Result<CollectiveStats> DirectAllreduce(Mesh& mesh, std::span<float> data,
                                        const DirectOptions& options) {
  MeshCall call(mesh, "direct", options.tag);
  const std::string& ctx = call.context();
  TRIB_RETURN_IF_ERROR(call.CheckUsable());
  // Argument checks: nothing has been sent yet, so the mesh stays usable.
  auto spec = codec::MakeCodec(options.codec);
  if (!spec.ok()) return spec.status().WithContext(ctx);
  const std::string codec_name = (*spec)->name();
  std::unique_ptr<CodecState> local;
  CodecState* codecs = nullptr;
  if (!IsPlainSum(codec_name, options.aggregator)) {
    codecs = options.codec_state;
    if (codecs == nullptr) {
      auto made = CodecState::Make(codec_name);
      if (!made.ok()) return made.status().WithContext(ctx);
      local = std::move(made).value();
      codecs = local.get();
    } else if (codecs->codec() != codec_name) {
      return InvalidArgument(ctx + ": options name codec '" + codec_name +
                             "' but the codec state is for '" + codecs->codec() + "'");
    }
    if (Status fits = CheckAggregatorFits(options.aggregator, mesh.world()); !fits.ok()) {
      return fits.WithContext(ctx + ": aggregator " + robust::ToString(options.aggregator));
    }
  }
  if (data.empty()) return CollectiveStats{};
  if (codecs) {
    if (Status bound = codecs->Bind(mesh.world(), mesh.rank(), data.size()); !bound.ok()) {
      return bound.WithContext(ctx);
    }
    codecs->Checkpoint();
  }
  call.Start();
  DirectOp op(mesh, data, options, codecs,
              DirectWireTag(options.tag, codec_name, options.aggregator, options.average));
  Status st = op.Run();
  if (!st.ok()) {
    if (codecs) codecs->Rollback();
    // Before `op` goes away: afterwards no queued send reads `data` and no handler touches
    // anything but the state it shares.
    st = AbortFailedCall(mesh, std::move(st), op.failure(), options.control);
    return st.WithContext(ctx);
  }
  return call.Stats();
}

}  // namespace tributary::collectives
