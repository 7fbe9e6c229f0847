// Recursive-doubling all-reduce over a Mesh: fp32 sums of mid-sized tensors in power-of-two
// groups.
//
// In step k (k = 0 .. log2(world)-1) every rank sends its current partial sum, whole, to
// rank ^ 2^k and adds the one it gets back. After log2(world) steps every rank holds the total:
// log2(N) one-way delays and log2(N)·S bytes sent per rank, against the ring's 2(N-1) hops of
// 2(N-1)/N·S and the direct path's one delay for (N-1)·S (path_choice.h weighs the three).
// Both ranks of a pair add the same two vectors, and IEEE addition is commutative, so every
// rank ends with the same bits: ((x0 + x1) + (x2 + x3)) + ... , ÷ world if average.
//
// Wire: one message per (rank, partner), TensorHeader{tag = DoublingWireTag(...), DTYPE_F32,
// numel = whole tensor, offset = sender's rank, nbytes = numel·4} then the floats; every header
// is checked before its payload is read (tensor_exchange.h).
//
// Contracts as DirectAllreduce's (direct_allreduce.h): a failure names the peer to blame in
// mesh.failure() — a dead or silent partner, one that sent a bad header or a non-finite value,
// or, relayed, the peer another member blamed — and aborts the mesh, so members that never
// exchange with us directly fail fast too (a silent member is timed out by its partners first,
// so the others learn its name from them: see StepDeadline); `data` is written only on success
// (exact retry);
// our own non-finite input, or a partial sum that overflows, is InvalidArgument (the pair that
// formed the sum says so; the others hear that a rank gave up). Every wait ends at
// options.deadline; control->cancelled() ends the call with Aborted; Mesh::Interrupt with
// Unavailable. A world that is not a power of two is an argument error (nothing sent).
// Blocking; not on an io thread of the mesh.
#pragma once

#include <span>
#include <string>

#include "collectives/collective_stats.h"
#include "collectives/form_control.h"
#include "collectives/mesh.h"
#include "core/clock.h"
#include "core/status.h"

namespace tributary::collectives {

struct DoublingOptions {
  std::string tag;  // every rank must pass the same options
  Deadline deadline = Deadline::max();
  bool average = false;                  // false: the sum
  const FormControl* control = nullptr;  // optional: cancelled() ends the call (Aborted)
};

Result<CollectiveStats> DoublingAllreduce(Mesh& mesh, std::span<float> data,
                                          const DoublingOptions& options);

// "<tag>/doubling/<mean|sum>" as it appears on the wire.
std::string DoublingWireTag(const std::string& tag, bool average);

}  // namespace tributary::collectives
