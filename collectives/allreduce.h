// Pipelined ring all-reduce of fp32 over a Ring (reduce-scatter, then all-gather).
//
// The tensor is cut into world() chunks and each chunk into segments of `segment_bytes`; a
// segment is forwarded as soon as it has been received and reduced, so receiving one segment
// overlaps sending the previous ones. Every chunk's final value is computed by exactly one rank
// and then copied around unchanged, so the result is bit-identical on every rank.
//
// Every received segment is checked strictly (job, tag, dtype, numel, offset, size) before its
// bytes are read, and its values must be finite. Every wait ends at options.deadline: a dead or
// silent neighbour yields Unavailable/DeadlineExceeded naming it, never a hang. On any error the
// ring is aborted (see Ring::Abort), so the neighbours fail fast too, and the contents of `data`
// are unspecified unless options.backup is given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "collectives/collective_stats.h"
#include "collectives/ring.h"
#include "core/clock.h"
#include "core/status.h"

namespace tributary::collectives {

struct AllreduceOptions {
  std::string tag;  // names this collective on the wire; every rank must pass the same one
  Deadline deadline = Deadline::max();
  size_t segment_bytes = 1 << 20;  // rounded down to whole floats; at least one
  bool average = false;            // divide the sum by world()
  // Optional scratch of data.size() floats that makes a failed call leave `data` as it was
  // (exact retry) without copying it all up front: each region is copied here just before the
  // call first overwrites it, while the segment that overwrites it is still in flight, and
  // copied back if the call fails. Empty: `data` is unspecified after a failure.
  std::span<float> backup;
};

struct AllreduceStats {
  uint64_t bytes_sent = 0;  // on the ring's connections during this call, frames included
  uint64_t bytes_received = 0;
  double seconds = 0;
};

// Replaces `data` on every rank with the element-wise sum (or mean) over all ranks. Every rank
// must pass the same number of elements. Blocking; not on the ring's io thread. `data` must not
// be touched by anyone else until this returns.
Result<AllreduceStats> RingAllreduce(Ring& ring, std::span<float> data,
                                     const AllreduceOptions& options);

// Checks a ring segment's frame before its `count` floats are read: an Error from the neighbour
// (Aborted), the job id, then tag, dtype and tensor size (`numel`), then where the segment sits
// (`offset`) and its length, each mismatch named. Shared by every ring over Ring connections.
Status CheckSegmentHeader(const v1::Envelope& env, const std::string& job_id,
                          const std::string& tag, uint64_t numel, uint64_t offset, uint64_t count);

// The neighbour a failed RingAllreduce blames: its errors name it ("from prev <DescribePrev>",
// "sending to next <DescribeNext>"), so this is an exact match, not a guess. Nullopt when the
// error names neither (our own input, arguments).
std::optional<PeerFailure> RingAllreduceBlame(const Ring& ring, const Status& status);

}  // namespace tributary::collectives
