#include "collectives/codec_state.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace tributary::collectives {
namespace {

codec::CodecOptions WithoutErrorFeedback(codec::CodecOptions options) {
  options.error_feedback = false;  // this class keeps the residual itself (see the header)
  return options;
}

}  // namespace

CodecState::CodecState(std::string name, bool lossy, const codec::CodecOptions& options,
                       std::unique_ptr<codec::Codec> decoder)
    : name_(std::move(name)), lossy_(lossy), options_(options), decoder_(std::move(decoder)) {}

Result<std::unique_ptr<CodecState>> CodecState::Make(std::string_view spec,
                                                     const codec::CodecOptions& options) {
  TRIB_ASSIGN_OR_RETURN(auto decoder, codec::MakeCodec(spec, WithoutErrorFeedback(options)));
  std::string name = decoder->name();
  const bool lossy = decoder->lossy();
  return std::unique_ptr<CodecState>(
      new CodecState(std::move(name), lossy, options, std::move(decoder)));
}

std::unique_ptr<CodecState> CodecState::Clone() const {
  auto decoder = codec::MakeCodec(name_, WithoutErrorFeedback(options_));
  // name_ came out of MakeCodec, so building it again cannot fail.
  std::unique_ptr<CodecState> copy(
      new CodecState(name_, lossy_, options_, std::move(decoder).value()));
  copy->numel_ = numel_;
  copy->world_ = world_;
  copy->rank_ = rank_;
  copy->contribution_residual_ = contribution_residual_;
  copy->aggregate_residual_ = aggregate_residual_;
  return copy;
}

void CodecState::Reset() {
  numel_ = 0;
  world_ = 0;
  rank_ = 0;
  shard_codecs_.clear();
  aggregate_codec_.reset();
  whole_codec_.reset();
  contribution_residual_.clear();
  aggregate_residual_.clear();
  saved_contribution_residual_.clear();
  saved_aggregate_residual_.clear();
}

Status CodecState::Bind(uint32_t world, uint32_t rank, size_t numel) {
  if (numel_ != 0 && numel != numel_) {
    return FailedPrecondition("codec state of stream '" + name_ + "' carries " +
                              std::to_string(numel_) + " elements, got " + std::to_string(numel) +
                              "; use one CodecState per tensor stream, or Reset() it");
  }
  if (numel_ == 0) {
    numel_ = numel;
    if (keeps_residual()) {
      contribution_residual_.assign(numel, 0.0f);
      aggregate_residual_.assign(numel, 0.0f);
    }
  }
  if (world != world_ || rank != rank_) {
    world_ = world;
    rank_ = rank;
    shard_codecs_.clear();
    aggregate_codec_.reset();
    whole_codec_.reset();
    // The shard this rank owned is gone, and with it whatever it owed as that shard's owner.
    std::fill(aggregate_residual_.begin(), aggregate_residual_.end(), 0.0f);
  }
  return EnsureCodecs();
}

// Codecs are dropped by Rollback (warm-start state cannot be rolled back) and rebuilt here.
Status CodecState::EnsureCodecs() {
  if (world_ == 0) return FailedPrecondition("codec state is not bound to a world; Bind() first");
  if (shard_codecs_.empty()) return BuildCodecs();
  return Status::Ok();
}

Status CodecState::BuildCodecs() {
  const codec::CodecOptions inner = WithoutErrorFeedback(options_);
  std::vector<std::unique_ptr<codec::Codec>> codecs;
  for (uint32_t s = 0; s < world_; ++s) {
    TRIB_ASSIGN_OR_RETURN(auto c, codec::MakeCodec(name_, inner));
    codecs.push_back(std::move(c));
  }
  TRIB_ASSIGN_OR_RETURN(aggregate_codec_, codec::MakeCodec(name_, inner));
  TRIB_ASSIGN_OR_RETURN(whole_codec_, codec::MakeCodec(name_, inner));
  shard_codecs_ = std::move(codecs);
  return Status::Ok();
}

Result<CodecState::Encoded> CodecState::EncodeContribution(uint32_t shard, size_t begin,
                                                           std::span<const float> values) {
  TRIB_RETURN_IF_ERROR(EnsureCodecs());
  if (shard >= shard_codecs_.size()) {
    return InvalidArgument("shard " + std::to_string(shard) + " of a codec state bound to " +
                           std::to_string(shard_codecs_.size()) + " shards");
  }
  return Encode(*shard_codecs_[shard], contribution_residual_, begin, values);
}

Result<CodecState::Encoded> CodecState::EncodeAggregate(size_t begin,
                                                        std::span<const float> values) {
  TRIB_RETURN_IF_ERROR(EnsureCodecs());
  return Encode(*aggregate_codec_, aggregate_residual_, begin, values);
}

Result<CodecState::Encoded> CodecState::EncodeWhole(std::span<const float> values) {
  TRIB_RETURN_IF_ERROR(EnsureCodecs());
  return Encode(*whole_codec_, contribution_residual_, 0, values);
}

// target = values + residual; payload = C(target); residual = target − Decode(payload). The
// residual is only written once everything succeeded, so a refused input leaves it untouched.
Result<CodecState::Encoded> CodecState::Encode(codec::Codec& codec, std::span<float> stream,
                                               size_t begin, std::span<const float> values) {
  if (begin > numel_ || values.size() > numel_ - begin) {
    return InvalidArgument("elements [" + std::to_string(begin) + ", " +
                           std::to_string(begin + values.size()) + ") lie outside a stream of " +
                           std::to_string(numel_));
  }
  // Empty when no residual is kept; otherwise the slice of the stream's residual.
  std::span<float> residual;
  if (!stream.empty()) residual = stream.subspan(begin, values.size());
  std::vector<float> target(values.begin(), values.end());
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return InvalidArgument("input element " + std::to_string(begin + i) + " is not finite");
    }
    if (!residual.empty()) target[i] += residual[i];
    if (!std::isfinite(target[i])) {
      return InvalidArgument("input element " + std::to_string(begin + i) +
                             " plus the error-feedback residual overflows float");
    }
  }
  Encoded out;
  TRIB_ASSIGN_OR_RETURN(out.payload, codec.Encode(target));
  auto decoded = decoder_->Decode(out.payload, values.size());
  if (!decoded.ok()) {
    return Internal("codec " + name_ + " cannot decode its own payload: " +
                    decoded.status().ToString());
  }
  out.decoded = std::move(decoded).value();
  if (!residual.empty()) {
    for (size_t i = 0; i < values.size(); ++i) {
      const float left = target[i] - out.decoded[i];
      if (!std::isfinite(left)) {
        return InvalidArgument("input element " + std::to_string(begin + i) +
                               " leaves a residual that overflows float");
      }
      target[i] = left;
    }
    std::copy(target.begin(), target.end(), residual.begin());
  }
  return out;
}

namespace {
Status CheckResidualFits(bool keeps_residual, size_t numel, size_t size, const std::string& name) {
  if (!keeps_residual || numel == 0) {
    return InvalidArgument("codec state of stream '" + name + "' keeps no residual to set");
  }
  if (size != numel) {
    return InvalidArgument("a residual of " + std::to_string(size) + " elements for a stream of " +
                           std::to_string(numel));
  }
  return Status::Ok();
}
}  // namespace

Status CodecState::SetContributionResidual(std::vector<float> residual) {
  TRIB_RETURN_IF_ERROR(CheckResidualFits(keeps_residual(), numel_, residual.size(), name_));
  contribution_residual_ = std::move(residual);
  return Status::Ok();
}

Status CodecState::SetAggregateResidual(std::vector<float> residual) {
  TRIB_RETURN_IF_ERROR(CheckResidualFits(keeps_residual(), numel_, residual.size(), name_));
  aggregate_residual_ = std::move(residual);
  return Status::Ok();
}

void CodecState::Checkpoint() {
  saved_contribution_residual_ = contribution_residual_;
  saved_aggregate_residual_ = aggregate_residual_;
}

void CodecState::Rollback() {
  contribution_residual_ = saved_contribution_residual_;
  aggregate_residual_ = saved_aggregate_residual_;
  // Warm-start state cannot be rolled back, so it is dropped (rebuilt on the next Bind).
  shard_codecs_.clear();
  aggregate_codec_.reset();
  whole_codec_.reset();
}

Result<CodecState*> CodecStreams::For(const std::string& stream, std::string_view codec) {
  TRIB_ASSIGN_OR_RETURN(auto canonical, codec::MakeCodec(codec));
  std::unique_ptr<CodecState>& state = states_[stream];
  if (!state || state->codec() != canonical->name()) {
    TRIB_ASSIGN_OR_RETURN(state, CodecState::Make(codec));
  }
  return state.get();
}

void CodecStreams::Put(const std::string& stream, std::unique_ptr<CodecState> state) {
  if (state) {
    states_[stream] = std::move(state);
  } else {
    states_.erase(stream);
  }
}

const CodecState* CodecStreams::Find(const std::string& stream) const {
  auto it = states_.find(stream);
  return it == states_.end() ? nullptr : it->second.get();
}

}  // namespace tributary::collectives
