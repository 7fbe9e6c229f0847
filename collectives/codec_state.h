// CodecState: one rank's compression state for one tensor stream of ButterflyAllreduce (or
// DirectAllreduce, which encodes the whole tensor as one contribution), owned by
// the caller and passed to every call of that stream so that lossy codecs keep their error
// feedback across calls.
//
// In a butterfly of `world` ranks this rank encodes one contribution per shard (the shard's owner
// decodes it) and, as owner of its shard, the aggregate every rank decodes. Each of those is a
// codec stream (one codec::Codec per shard plus one for the aggregate). Error feedback, though,
// is kept here rather than inside the codecs: every codec runs with its own error feedback off,
// and this class adds the residual before encoding and keeps input − decode(payload) afterwards.
// That is the same arithmetic the codecs do internally (the residual is computed with the very
// Decode the receivers run), but the residual then lives in two plain vectors over the whole
// tensor, indexed by element rather than by shard, which buys two things the codecs' internal
// state cannot give:
//   * exact retry: ButterflyAllreduce checkpoints the residuals before a call and rolls them
//     back when the call fails, so a retry with the survivors starts from the same state;
//   * re-sharding: when the membership changes, shard boundaries move, but an element's owed
//     contribution is still at the same index, so nothing a rank owes is lost.
// What cannot survive a membership change (or a failed call) is dropped: PowerSGD's warm-start Q
// (it restarts from its seed) and the aggregate residual, which is owed by the owner of a shard
// that no longer exists (it is kept only while world and rank stay the same).
//
// Not thread-safe; one per (rank, tensor stream).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "collectives/codec/codec.h"
#include "core/status.h"

namespace tributary::collectives {

class CodecState {
 public:
  // `spec` as codec::MakeCodec takes it ("int8", "topk:0.01", ...). options.error_feedback off
  // keeps no residual at all (to measure what error feedback buys).
  static Result<std::unique_ptr<CodecState>> Make(std::string_view spec,
                                                  const codec::CodecOptions& options = {});

  // Canonical codec name ("int8:64"); what ButterflyOptions::codec must canonicalise to.
  const std::string& codec() const { return name_; }
  bool lossy() const { return lossy_; }
  // Elements of the stream; 0 until the first call fixes it.
  size_t numel() const { return numel_; }
  // What this rank still owes the wire, over the whole tensor (empty when there is no residual).
  std::span<const float> contribution_residual() const { return contribution_residual_; }
  // What this rank owes as owner of its shard (zero outside that shard's range).
  std::span<const float> aggregate_residual() const { return aggregate_residual_; }

  // Replaces what this rank owes as contributor (a Δ audit re-encoding a prover's contribution
  // from its opened residual; the attack harness). InvalidArgument unless the state keeps a
  // residual and `residual` has numel() elements.
  Status SetContributionResidual(std::vector<float> residual);
  // The same for what this rank owes as owner of its shard (an audit reproducing an owner's
  // aggregate, collectives::ReproduceAggregate; the attack harness).
  Status SetAggregateResidual(std::vector<float> residual);
  // Same residuals, numel and binding, no warm-start state: the state a failed call leaves.
  std::unique_ptr<CodecState> Clone() const;
  // Forgets everything; the next call starts a new stream (of any numel).
  void Reset();

  // --- used by ButterflyAllreduce -------------------------------------------------------------
  struct Encoded {
    std::string payload;
    std::vector<float> decoded;  // Decode(payload), exactly what every receiver reconstructs
  };
  // Fixes the stream to `numel` elements (FailedPrecondition if it already carries another
  // size) and to a world/rank; a new world or rank drops warm-start state and the aggregate
  // residual.
  Status Bind(uint32_t world, uint32_t rank, size_t numel);
  // Encodes `values` (elements [begin, begin + values.size()) of the tensor) as this rank's
  // contribution to `shard`, or as the aggregate of its own shard. Non-finite input, or input
  // that overflows with the residual, is InvalidArgument naming the tensor element.
  Result<Encoded> EncodeContribution(uint32_t shard, size_t begin, std::span<const float> values);
  Result<Encoded> EncodeAggregate(size_t begin, std::span<const float> values);
  // Encodes the whole tensor as this rank's one contribution (the direct all-reduce,
  // direct_allreduce.h). Its own codec stream, so PowerSGD's warm start never sees a shard's
  // shape; the residual is the same per-element contribution residual.
  Result<Encoded> EncodeWhole(std::span<const float> values);
  // Decodes payloads of this codec (stateless, thread-safe).
  const codec::Codec& decoder() const { return *decoder_; }
  // Saves the residuals; Rollback restores them and drops warm-start state (see above).
  void Checkpoint();
  void Rollback();

 private:
  CodecState(std::string name, bool lossy, const codec::CodecOptions& options,
             std::unique_ptr<codec::Codec> decoder);
  Status EnsureCodecs();
  Status BuildCodecs();
  // `stream`: the whole residual vector (empty when none is kept).
  Result<Encoded> Encode(codec::Codec& codec, std::span<float> stream, size_t begin,
                         std::span<const float> values);
  bool keeps_residual() const { return lossy_ && options_.error_feedback; }

  std::string name_;
  bool lossy_;
  codec::CodecOptions options_;  // as given; the codecs themselves run with error feedback off
  std::unique_ptr<codec::Codec> decoder_;
  size_t numel_ = 0;
  uint32_t world_ = 0;
  uint32_t rank_ = 0;
  std::vector<std::unique_ptr<codec::Codec>> shard_codecs_;  // by shard; empty until needed
  std::unique_ptr<codec::Codec> aggregate_codec_;
  std::unique_ptr<codec::Codec> whole_codec_;
  std::vector<float> contribution_residual_;
  std::vector<float> aggregate_residual_;
  std::vector<float> saved_contribution_residual_;
  std::vector<float> saved_aggregate_residual_;
};

// The codec state of each named tensor stream of a communicator. A stream whose codec changes
// starts over with a fresh state (its residual belonged to the other codec).
class CodecStreams {
 public:
  // The state of `stream` for `codec` (a codec::MakeCodec spec). InvalidArgument for a bad spec.
  Result<CodecState*> For(const std::string& stream, std::string_view codec);
  const CodecState* Find(const std::string& stream) const;  // null if the stream never ran
  // Replaces the stream's state (a saved Clone); null forgets it, so the stream starts over.
  void Put(const std::string& stream, std::unique_ptr<CodecState> state);

 private:
  std::map<std::string, std::unique_ptr<CodecState>> states_;
};

}  // namespace tributary::collectives
