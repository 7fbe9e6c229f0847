// Direct all-reduce over a Mesh: the latency path for small tensors.
//
// Every rank sends its whole contribution straight to every other rank and reduces all world()
// contributions itself, in rank order, so every rank computes the same bits. That is one
// one-way delay (0.5 RTT) at any world size, against 2(N-1) hops for the ring and 2 for the
// butterfly, for (N-1)x the ring's bytes: worth it below the size path_choice.h derives.
//
//   fp32 + mean: the payload is the raw floats (sent straight from `data`, no copy) and the
//                result is the plain float sum x0 + x1 + ... in rank order (÷ world if average).
//   otherwise:   each rank encodes its tensor once with its CodecState (error feedback as in the
//                butterfly, see codec_state.h) and every rank runs ReduceShard (butterfly.h) on
//                the same payloads: robust aggregation by every member, trusting no owner.
//
// Wire: one message per ordered pair, TensorHeader{tag = DirectWireTag(...), DTYPE_F32,
// numel = whole tensor, offset = sender's rank, nbytes} then the payload. Every header is checked
// (job, tag, dtype, numel, sender, a size within the codec's bound) before a byte of payload is
// read. The tag names the path, codec, aggregator and mean/sum, so ranks that disagree about any
// of them (one took the ring) fail at once with "wrong tag" instead of mixing results.
//
// Contracts shared with the other algorithms:
//   * A failure names the peer to blame in mesh.failure() (a dead or silent peer, one that sent
//     a bad header or a non-finite value, or, relayed, the peer another member blamed); the mesh
//     is aborted (Mesh::Abort), so the others fail fast too.
//   * Exact retry: `data` is written only on success (sends read it, nothing writes it before),
//     and the CodecState is rolled back on failure.
//   * Non-finite values are refused on receipt (blaming the sender); our own non-finite input or
//     a sum that overflows is InvalidArgument and aborts the mesh without blaming a peer.
//   * Every wait ends at options.deadline; control->cancelled() is polled while waiting and ends
//     the call with Aborted (any failure seen once it is true is reported so, blaming nobody: a
//     member that learnt first may have given up on us); Mesh::Interrupt from another thread
//     ends the call with Unavailable.
//
// Argument errors (bad codec, an aggregator that does not fit the world) are found before
// anything is sent and leave the mesh usable. Blocking; not on an io thread of the mesh.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "collectives/codec_state.h"
#include "collectives/collective_stats.h"
#include "collectives/form_control.h"
#include "collectives/mesh.h"
#include "collectives/robust/aggregator.h"
#include "core/clock.h"
#include "core/status.h"

namespace tributary::collectives {

struct DirectOptions {
  std::string tag;  // every rank must pass the same options
  Deadline deadline = Deadline::max();
  std::string codec = "fp32";
  robust::AggregatorSpec aggregator;  // default: mean
  bool average = false;               // false: the sum (world × the aggregate)
  // The stream's error-feedback state (as ButterflyOptions::codec_state); null: a fresh one.
  // Unused for fp32 + mean.
  CodecState* codec_state = nullptr;
  int aggregate_threads = 1;             // never changes the result
  const FormControl* control = nullptr;  // optional: cancelled() ends the call (Aborted)
};

Result<CollectiveStats> DirectAllreduce(Mesh& mesh, std::span<float> data,
                                        const DirectOptions& options);

// Whether `codec` (a canonical name) and `aggregator` ask for a plain fp32 sum (or mean): the
// call then needs no codec state, and the ring and recursive doubling can run it too.
bool IsPlainSum(const std::string& codec, const robust::AggregatorSpec& aggregator);

// "<tag>/direct/<codec>/<aggregator>/<mean|sum>" as it appears on the wire.
std::string DirectWireTag(const std::string& tag, const std::string& codec,
                          const robust::AggregatorSpec& aggregator, bool average);

}  // namespace tributary::collectives
