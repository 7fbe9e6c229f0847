// Butterfly all-reduce over a Mesh, for groups whose members do not trust each other:
// reduce-scatter then all-gather, with compression (collectives/codec) and robust aggregation
// (collectives/robust).
//
// The tensor is cut into world() shards (sizes differ by at most one element; with fewer
// elements than ranks some shards are empty and carry no messages). Rank r owns shard r.
//   1. Reduce-scatter: every rank encodes its slice of every shard j with its CodecState and
//      sends it to owner j (its own slice it encodes and decodes locally, so every contribution
//      goes through the same codec). Sends are staggered (rank r starts with shard r+1) so the
//      owners are not all hit at once.
//   2. The owner decodes each contribution as it arrives. A payload that does not decode, or
//      decodes to a non-finite value, fails the call naming the sender; whether to exclude it on
//      retry is the caller's decision (with a binding, the owner hands the signed bytes to
//      ContributionBinding::bad_payload first). With every contribution in, the owner aggregates them in
//      rank order (robust::Aggregate: deterministic), scales the result by world() unless
//      `average`, and encodes it.
//   3. All-gather: the owner sends that one payload to every rank; every rank (the owner too)
//      decodes the same bytes, so the result is bit-identical on every rank.
// ReduceShard() is step 2 as a pure function of the contribution payloads, so anyone holding
// them can recompute an owner's aggregate bit for bit (a spot check; see ShardRecord).
//
// Wire: each message is TensorHeader{tag, DTYPE_F32, numel = whole tensor, offset = shard start,
// nbytes} followed by nbytes of codec payload (proto v1 has no codec dtype yet; the payload's
// own header names codec and element count). The tag on the wire is
// "<tag>/<phase>/<codec>/<aggregator>/<mean|sum>", so ranks that disagree on any option fail at
// once with a ProtocolError ("wrong tag") instead of computing garbage. Every header is checked
// (job, tag, dtype, numel, offset, a payload size within the codec's bound for the shard) before
// any payload byte is read; the bound is checked before anything is allocated.
//
// Failure: every wait ends at options.deadline. On any failure after the first byte was sent the
// mesh is aborted (Mesh::Abort: peers are told whom we blame, then connections close), so the
// others fail fast; mesh.failure() names the peer we blame, when a peer is to blame. An Error a
// peer relays is reported as its claim (PeerFailure::reported_by). Argument errors are found
// before anything is sent and leave the mesh usable.
//
// Exact retry: `data` is written only when the call succeeds (the result is staged), and the
// CodecState's residuals are rolled back on failure, so after a failure the caller can form a
// mesh of the survivors and call again with the same `data` and state: the result is exactly
// what a mesh of only the survivors would have computed.
//
// Success on one rank does not imply success on all (a peer may fail after sending us all we
// needed); the round's commit protocol decides whether the round counts.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "collectives/codec_state.h"
#include "collectives/collective_stats.h"
#include "collectives/mesh.h"
#include "collectives/robust/aggregator.h"
#include "core/clock.h"
#include "core/digest.h"
#include "core/status.h"

namespace tributary::collectives {

// Binds every contribution to a statement its sender signed before sending any (used by the
// verifier, docs/VERIFIER.md "Sent Δ"; opaque here). With a binding, each contribution message
// carries u32 length ‖ attestation ‖ codec payload, and the reduce-scatter tag ends in "/bound"
// (ranks that disagree fail at once). Every rank must pass a binding or none.
struct ContributionBinding {
  // Sender: called once, before anything is sent, with the SHA-256 of the encoded payload to
  // each shard (by shard; zero for an empty shard) and the stream's error-feedback residual over
  // the whole tensor before and after encoding (empty when the codec keeps none); returns the
  // attestation for each shard.
  std::function<Result<std::vector<std::string>>(std::span<const Digest> shard_digests,
                                                 std::span<const float> residual_in,
                                                 std::span<const float> residual_out)>
      attest;
  // Owner: checks one contribution (sender rank, its attestation, SHA-256 of its codec payload)
  // before decoding it. An error fails the call and blames the sender.
  std::function<Status(uint32_t from, std::string_view attestation, const Digest& payload)> check;
  // Owner, optional: a contribution passed `check` and then does not decode or decodes to a
  // non-finite value (codec::DecodeChecked). Called with the sender rank, its attestation and the codec
  // payload as received (the bytes the sender signed) before the call fails blaming the sender,
  // as it does without this callback. May run on any thread of the call.
  std::function<void(uint32_t from, std::string_view attestation, std::string_view payload)> bad_payload;
  // Sender, attack harness only (tests/adversary): rewrites the encoded payload to `shard` before
  // its digest is taken, so the attestation states what is really sent. Unset everywhere else.
  std::function<void(uint32_t shard, std::string& payload)> tamper_payload;
  // Sender, attack harness only: rewrites the error-feedback residual before this call encodes
  // with it (a payload that carries more than Δ plus what was honestly owed). Unset elsewhere.
  std::function<void(std::span<float> residual)> tamper_residual;
  // Owner, optional (every rank sets it or none): binds the all-gather too. Then each aggregate
  // message carries u32 length ‖ statement ‖ codec payload and the all-gather tag ends in
  // "/bound". Called once this rank's shard is aggregated and encoded, before it is sent, with
  // the SHA-256 of each rank's contribution payload to the shard (by rank, ours included), of the
  // aggregate payload, and this rank's aggregate residual over its shard's elements (empty when
  // the codec keeps none) before and after encoding; returns the statement that goes with the
  // aggregate. `payloads` are the contributions themselves (by rank, handed over), which an audit
  // of the owner needs.
  std::function<Result<std::string>(std::span<const Digest> contributions, std::vector<std::string> payloads,
                                     const Digest& aggregate, std::span<const float> residual_in,
                                     std::span<const float> residual_out)>
      attest_aggregate;
  // Receiver, with attest_aggregate: checks the statement that came with shard `owner`'s
  // aggregate (given by its payload's SHA-256) before decoding it. An error fails the call and
  // blames the owner.
  std::function<Status(uint32_t owner, std::string_view statement, const Digest& payload)> check_aggregate;
  // Owner, attack harness only: rewrites the aggregate before it is encoded (and stated).
  std::function<void(std::span<float> aggregate)> tamper_aggregate;
  size_t max_attestation_bytes = 1 << 16;  // larger is refused before allocating
};

// What one rank did as owner of its shard during a call, for spot checks.
struct ShardRecord {
  uint32_t shard = 0;
  uint64_t begin = 0;  // first tensor element of the shard
  uint64_t size = 0;   // elements (0: an empty shard, nothing below is set)
  std::vector<std::string> contributions;  // payload of rank i's contribution, by rank
  std::vector<float> aggregate;            // ReduceShard(contributions), before encoding
  std::string aggregate_payload;           // what every rank decoded as this shard
};

struct ButterflyOptions {
  std::string tag;  // names this collective on the wire; every rank must pass the same one
  Deadline deadline = Deadline::max();
  std::string codec = "fp32";  // codec::MakeCodec spec
  robust::AggregatorSpec aggregator;  // default: mean
  bool average = false;               // false: world() × the aggregate (the sum, for mean)
  // The stream's error-feedback state, owned by the caller and passed to every call of the
  // stream; its codec() must be `codec` canonicalised. Null: a fresh state for this call only,
  // so a lossy codec forgets what it dropped.
  CodecState* codec_state = nullptr;
  int aggregate_threads = 1;       // robust::AggregateOptions::threads; never changes the result
  ShardRecord* record = nullptr;   // when set, filled on success
  const ContributionBinding* binding = nullptr;  // when set, see ContributionBinding
};

// Replaces `data` on every rank with the aggregate over all ranks (see the file comment). Every
// rank must pass the same number of elements and the same options. Blocking; not on an io thread
// of the mesh. `data` must not be touched by anyone else until this returns.
Result<CollectiveStats> ButterflyAllreduce(Mesh& mesh, std::span<float> data,
                                           const ButterflyOptions& options);

// Step 2 as a pure function: decodes the contribution payloads (by rank) of a shard of
// `shard_numel` elements with `codec`, checks them (InvalidArgument naming the contributor),
// aggregates them in rank order and scales by contributions.size() unless `average`.
Result<std::vector<float>> ReduceShard(const codec::Codec& codec,
                                       std::span<const std::string> contributions,
                                       size_t shard_numel,
                                       const robust::AggregatorSpec& aggregator, bool average,
                                       int threads = 1);

// The butterfly's partition of `numel` elements into `world` shards: shard s covers
// [ButterflyShardBegin(s), ButterflyShardBegin(s + 1)); sizes differ by at most one element.
// Public so that an audit of what a rank sent can re-encode the very same slices.
inline uint64_t ButterflyShardBegin(uint64_t numel, uint32_t world, uint32_t shard) {
  return shard * (numel / world) + std::min<uint64_t>(shard, numel % world);
}

// A rank's bound contributions recomputed from what it states (a Δ audit,
// runtime/verification.cc): `values` plus the error-feedback residual it owed (`owed`: numel
// floats, or empty for none), encoded shard by shard for `world` shards through a fresh
// CodecState of `codec`, as ButterflyAllreduce encodes them. Warm-started codecs (PowerSGD)
// cannot be reproduced this way: their payloads also depend on earlier calls.
struct ReencodedContributions {
  std::vector<Digest> shard_digests;  // SHA-256 of each shard's payload; zero for an empty shard
  std::vector<float> residual_left;   // what encoding leaves owed; empty when the codec keeps none
  bool lossy = false;                 // the codec keeps a residual
};
Result<ReencodedContributions> ReencodeContributions(std::string_view codec, uint32_t world,
                                                     std::span<const float> values,
                                                     std::span<const float> owed);

// An owner's aggregate recomputed from what it received (the coordinator's aggregate audit,
// verifier/aggregate_statement.h): the contribution payloads of shard `shard` (by rank) are
// reduced as ReduceShard does, the owner's residual `owed` over the shard's elements (or empty
// for none) is added, and the sum is encoded through a fresh CodecState bound as that owner, as
// ButterflyAllreduce encodes it. Not for warm-started codecs (PowerSGD): their
// payload also depends on earlier calls. InvalidArgument when a contribution does not decode.
struct ReproducedAggregate {
  Digest payload{};                  // SHA-256 of the aggregate payload
  std::vector<float> residual_left;  // what the owner owes after, over the shard; empty for none
};
Result<ReproducedAggregate> ReproduceAggregate(std::string_view codec, uint32_t world, uint32_t shard,
                                               uint64_t numel, std::span<const std::string> contributions,
                                               std::span<const float> owed,
                                               const robust::AggregatorSpec& aggregator, bool average);

// The pieces of step 2, shared with the direct all-reduce (direct_allreduce.h) so both run the
// same arithmetic (each decodes with codec::DecodeChecked). AggregateShard: robust::Aggregate over contributions in rank order, scaled by their
// count unless `average` (InvalidArgument when that overflows). CheckAggregatorFits: whether
// `spec` can aggregate `world` contributions (checked before anything is sent).
Result<std::vector<float>> AggregateShard(const robust::AggregatorSpec& spec,
                                          const std::vector<std::vector<float>>& decoded,
                                          bool average, int threads);
Status CheckAggregatorFits(const robust::AggregatorSpec& spec, uint32_t world);

// "<tag>/<phase>/<codec>/<aggregator>/<mean|sum>" as it appears on the wire (see above).
std::string ButterflyWireTag(const std::string& tag, std::string_view phase,
                             const std::string& codec, const robust::AggregatorSpec& aggregator,
                             bool average);

}  // namespace tributary::collectives
