// Several TCP streams per ring edge: `streams` rings over the same members, each with its own
// connections (and send io thread). One TCP stream cannot fill a long fat link when its window
// is capped (socket buffer limits, a loss-sensitive congestion controller on a lossy path); K
// streams get ~K windows. ParallelRingAllreduce cuts the tensor into `streams` contiguous parts
// and runs the pipelined RingAllreduce (allreduce.h) of part k on ring k, all at once.
//
// Results: every element is reduced by exactly one ring, so the result is bit-identical on
// every rank (not bit-identical to a single ring: chunk owners differ, so sums run in another
// order). Failure: any part failing fails the call, then every ring is aborted (the others
// fail fast too) and `data` is unspecified, as with RingAllreduce; ParallelRingCommunicator
// restores it (exact retry), as RingCommunicator does.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "collectives/allreduce.h"
#include "collectives/communicator.h"
#include "collectives/ring.h"

namespace tributary::collectives {

class ParallelRing {
 public:
  // Forms `streams` rings one after another; ring k is formed for attempt
  // `attempt | k << kStreamShift`, so its hellos cannot be mistaken for another stream's.
  // Every member must pass the same `streams`. streams == 1 is a plain Ring. `control` is passed
  // to every stream's formation (Ring::Form): a superseded attempt gives up at once.
  static constexpr uint32_t kStreamShift = 24;
  static constexpr uint32_t kMaxStreams = 16;
  static Result<std::unique_ptr<ParallelRing>> Form(net::IoThread& io, net::Listener& listener,
                                                    uint32_t my_rank,
                                                    const std::vector<RingMember>& members,
                                                    const std::string& job_id, uint64_t round,
                                                    uint32_t attempt, const net::Identity* identity,
                                                    Deadline deadline, uint32_t streams,
                                                    FormControl* control = nullptr);

  uint32_t streams() const { return static_cast<uint32_t>(rings_.size()); }
  Ring& ring(uint32_t k) { return *rings_[k]; }
  uint32_t rank() const { return rings_[0]->rank(); }
  uint32_t world() const { return rings_[0]->world(); }
  bool broken() const;
  uint64_t bytes_sent() const;
  uint64_t bytes_received() const;
  void Abort();      // every ring
  void Interrupt();  // thread-safe: closes every connection, so a running collective fails

 private:
  std::vector<std::unique_ptr<Ring>> rings_;
};

// Part k of a tensor of n elements cut into `parts` near-equal contiguous pieces.
inline std::pair<size_t, size_t> ParallelPart(size_t n, uint32_t parts, uint32_t k) {
  const size_t base = n / parts, extra = n % parts;
  const size_t begin = k * base + std::min<size_t>(k, extra);
  return {begin, base + (k < extra ? 1 : 0)};
}

// Tensors of at most `latency_bytes` take the latency path instead (SmallRingAllreduce on ring
// 0): every rank's whole tensor travels N-1 hops round the ring and each rank sums all N in rank
// order. That is N-1 one-way delays instead of reduce-scatter + all-gather's 2(N-1), for (N-1)x
// the bytes, which do not matter at this size. Every rank must pass the same latency_bytes.
inline constexpr size_t kLatencyPathBytes = 64 << 10;
Result<AllreduceStats> ParallelRingAllreduce(ParallelRing& rings, std::span<float> data,
                                             const AllreduceOptions& options,
                                             size_t latency_bytes = kLatencyPathBytes);

// The latency path alone (see above): bit-identical on every rank (same summation order),
// headers and values checked as in RingAllreduce, errors name the neighbour, the ring is
// aborted on failure.
Result<AllreduceStats> SmallRingAllreduce(Ring& ring, std::span<float> data,
                                          const AllreduceOptions& options);

// Communicator over a ParallelRing: fp32 + mean only (as RingCommunicator), exact retry.
class ParallelRingCommunicator final : public Communicator {
 public:
  explicit ParallelRingCommunicator(std::unique_ptr<ParallelRing> rings,
                                    size_t segment_bytes = 1 << 20);
  Result<CollectiveStats> Allreduce(std::span<float> data, const CollectiveOptions& options) override;
  std::string_view algorithm() const override { return "ring"; }
  uint32_t rank() const override { return rings_->rank(); }
  uint32_t world() const override { return rings_->world(); }
  bool broken() const override { return rings_->broken(); }
  void Interrupt() override { rings_->Interrupt(); }
  ParallelRing& rings() { return *rings_; }
  void ReplaceRings(std::unique_ptr<ParallelRing> rings) { rings_ = std::move(rings); }

 private:
  std::unique_ptr<ParallelRing> rings_;
  size_t segment_bytes_;
  std::vector<float> backup_;  // `data` as it was before the call in flight
};

}  // namespace tributary::collectives
