// Which all-reduce path a tensor takes, from a cost model over the group's links.
//
// With α the one-way latency of a message (RTT/2 plus a fixed software cost), B a member's
// outgoing bandwidth (shared by all its connections: one uplink), R the rate at which a member
// sums contributions after they arrived, S the tensor's bytes, N members and L = log2(N):
//   direct   (direct_allreduce.h):    α + (N-1)·S/B + N·S/R      every member sends S to N-1
//                                                                peers, then sums all N
//   doubling (doubling_allreduce.h):  L·(α + S/B + 2·S/R)        L exchanges of the whole partial
//                                                                sum (power-of-two N ≥ 4 only)
//   ring     (allreduce.h):           2(N-1)·α + 2(N-1)/N·S/B    its sums overlap the transfer
// The direct path wins below its crossover with the cheaper of the others: without doubling
// S* = (2N-3)·α / ((N-1)(N-2)/(N·B) + N/R); at N = 2 it sends the ring's bytes in half the hops
// and only the summing decides: S* = α·R/2 (doubling at N = 2 is the direct path); with doubling
// S* = α·B at N = 4. Doubling sends more bytes than the ring (L·S against 2(N-1)/N·S), so it
// wins only while the ring is latency-bound: the ring pipelines its segments (g bytes), so its
// time is about max(2(N-1)·(α + g/B), 2(N-1)/N·S/B), and doubling takes tensors up to where
// L·(α + S/B + 2·S/R) reaches 2(N-1)·(α + g/B) (≈ 0.8 MB at N = 4 on 100 Mbit/s, 50 ms; the
// linear ring term above overstates the ring there, docs/BENCHMARKS.md). The model needs a
// measured link. Without one (no estimate: a group nobody probed, in practice ranks on one
// host or a LAN, like the loopback benchmark) its α and B would be guesses, and what decides is
// the CPU cost of messages, not latency: the thresholds are then the crossovers measured on
// loopback (kUnmeasured*). Both thresholds are capped so receive buffers ((N-1)·S direct,
// L·S doubling) stay bounded. The same model sets
// the ring's segment size: small enough that the
// store-and-forward of one segment (segment/B per hop) stays a few ms on a slow link, large
// enough that per-segment costs vanish on a fast one.
//
// Every member must take the same path for a call, so every member must derive the choice from
// the same numbers: the link matrix the coordinator hands out, or the defaults, never a member's
// own local probes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "collectives/topology.h"

namespace tributary::collectives {

// Fixed per-message cost on top of RTT/2 (a wake-up and a syscall or two at each end; measured
// ≈ 50-100 µs on loopback, see docs/BENCHMARKS.md).
inline constexpr double kMessageOverheadSeconds = 100e-6;
// Bytes of tensor per second a member sums after the transfer (N inputs read, one output
// written twice: see DirectAllreduce). ≈ 3 GB/s fits the loopback benchmark's direct-vs-ring
// times at world 2 on the 2-vCPU development VM (docs/BENCHMARKS.md).
inline constexpr double kReduceBytesPerSecond = 3e9;
// What the model assumes for an unknown bandwidth, and the ring's segment without a measurement:
// a LAN-like link (1 ms RTT, 1 Gbit/s).
inline constexpr LinkEstimate kDefaultLink{.rtt_seconds = 1e-3, .bytes_per_second = 125e6};
// An unmeasured group's thresholds: the direct path up to 32 KiB (at N = 2 it beats the ring at
// 32 KiB and loses at 64 KiB; at N = 3 they tie at 64 KiB), recursive doubling (power-of-two
// N ≥ 4, where it also beats the direct path at 4 KiB) up to 64 KiB (it beats the ring by 1.3×
// there and loses from 96 KiB). Loopback, 2-vCPU VM, docs/BENCHMARKS.md; whole-tensor messages
// above one 64 KiB loopback segment cost disproportionately, the ring's segments do not.
inline constexpr size_t kUnmeasuredDirectMaxBytes = 32 << 10;
inline constexpr size_t kUnmeasuredDoublingMaxBytes = 64 << 10;
// Upper bound on the direct and doubling paths' tensor size (their receive buffers are (N-1)×
// and log2(N)× that).
inline constexpr size_t kMaxDirectBytes = 16 << 20;

// The model's seconds for one all-reduce of `bytes` (+infinity where the path does not apply).
// A link with unknown bandwidth (0) uses kDefaultLink's; so do the thresholds below.
double DirectSeconds(uint32_t world, const LinkEstimate& link, double bytes);
double DoublingSeconds(uint32_t world, const LinkEstimate& link, double bytes);
double RingSeconds(uint32_t world, const LinkEstimate& link, double bytes);
// The pipelined ring's latency floor: 2(N-1) hops of one segment each.
double RingLatencySeconds(uint32_t world, const LinkEstimate& link, size_t segment_bytes);

// Whether recursive doubling applies to a group of `world`: a power of two, at least 4.
bool DoublingFits(uint32_t world);
// Whether `link` is a measurement the model can use: present, with a bandwidth.
bool Measured(const std::optional<LinkEstimate>& link);
// The largest tensor (bytes) that takes the direct path in a group of `world` over `link`
// (unmeasured: kUnmeasuredDirectMaxBytes, or 0 where doubling fits).
size_t DirectThresholdBytes(uint32_t world, const std::optional<LinkEstimate>& link);
// The largest plain-sum tensor that takes recursive doubling (it takes it above
// DirectThresholdBytes) when the ring runs `segment_bytes` segments; 0 where doubling does not
// fit the world or never wins (unmeasured: kUnmeasuredDoublingMaxBytes where it fits).
size_t DoublingThresholdBytes(uint32_t world, const std::optional<LinkEstimate>& link,
                              size_t segment_bytes);

// The ring's pipelining unit for `link` (none: kDefaultLink's): ≈ 4 ms of link time, clamped to
// [64 KiB, 1 MiB] and rounded down to whole floats.
size_t RingSegmentBytes(const std::optional<LinkEstimate>& link);

// One estimate for a group: the mean RTT and the smallest bandwidth over links i != j with a
// bandwidth estimate (the slowest uplink bounds both paths). None when there is no such link.
std::optional<LinkEstimate> GroupLink(const LinkMatrix& links);

}  // namespace tributary::collectives
