// Which all-reduce path a tensor takes, from a cost model over the group's links.
//
// With α the one-way latency of a message (RTT/2 plus a fixed software cost), B a member's
// outgoing bandwidth (shared by all its connections: one uplink), R the rate at which a member
// sums contributions after they arrived, S the tensor's bytes and N members:
//   direct (direct_allreduce.h):  α + (N-1)·S/B + N·S/R     every member sends S to N-1 peers,
//                                                           then sums all N
//   ring   (allreduce.h):         2(N-1)·α + 2(N-1)/N·S/B   its sums overlap the transfer
// so the direct path wins below S* = (2N-3)·α / ((N-1)(N-2)/(N·B) + N/R). At N = 2 it sends
// the ring's bytes in half the hops and only the summing decides: S* = α·R/2. S* is capped so
// the direct path's (N-1)·S of receive buffers stays bounded. The same model sets the ring's
// segment size: small enough that the store-and-forward of one segment (segment/B per hop)
// stays a few ms on a slow link, large enough that per-segment costs vanish on a fast one.
//
// Every member must take the same path for a call, so every member must derive the choice from
// the same numbers: the link matrix the coordinator hands out, or the defaults, never a member's
// own local probes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "collectives/topology.h"

namespace tributary::collectives {

// Fixed per-message cost on top of RTT/2 (a wake-up and a syscall or two at each end; measured
// ≈ 50-100 µs on loopback, see docs/BENCHMARKS.md).
inline constexpr double kMessageOverheadSeconds = 100e-6;
// Bytes of tensor per second a member sums after the transfer (N inputs read, one output
// written twice: see DirectAllreduce). ≈ 3 GB/s fits the loopback benchmark's direct-vs-ring
// times at world 2 on the 2-vCPU development VM (docs/BENCHMARKS.md).
inline constexpr double kReduceBytesPerSecond = 3e9;
// Without measurements: a LAN-like link (1 ms RTT, 1 Gbit/s).
inline constexpr LinkEstimate kDefaultLink{.rtt_seconds = 1e-3, .bytes_per_second = 125e6};
// Upper bound on the direct path's tensor size (its receive buffers are (N-1)× that).
inline constexpr size_t kMaxDirectBytes = 16 << 20;

// The largest tensor (bytes) that takes the direct path in a group of `world` over `link`.
// A link with unknown bandwidth (0) uses kDefaultLink's.
size_t DirectThresholdBytes(uint32_t world, const LinkEstimate& link);

// The ring's pipelining unit for `link`: ≈ 4 ms of link time, clamped to [64 KiB, 1 MiB] and
// rounded down to whole floats.
size_t RingSegmentBytes(const LinkEstimate& link);

// One estimate for a group: the mean RTT and the smallest bandwidth over links i != j with a
// bandwidth estimate (the slowest uplink bounds both paths). kDefaultLink when there is none.
LinkEstimate GroupLink(const LinkMatrix& links);

}  // namespace tributary::collectives
