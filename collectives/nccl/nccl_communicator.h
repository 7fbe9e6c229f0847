// NcclCommunicator: the Communicator interface over NCCL for the GPUs of one host (a trusted
// inner level). Built only where CMake finds CUDA and NCCL (TRIBUTARY_HAVE_NCCL); CUDA and
// NCCL headers stay in the .cc.
//
// CreateLocal(k) makes one communicator per GPU 0..k-1 of this process (ncclCommInitAll);
// drive each from its own thread, all at once, as with the other communicators. Allreduce
// takes host memory (std::span<float>): copy in, ncclAllReduce (sum) on the device, copy out.
// NCCL's ring/tree reductions give every rank the same bits. fp32 sum/mean only. A failure
// (CUDA or NCCL error) leaves `data` as passed in and marks the communicator broken; NCCL does
// not say which GPU failed, so the status carries NCCL's own message.
#pragma once

#include <memory>
#include <vector>

#include "collectives/communicator.h"

namespace tributary::collectives {

class NcclCommunicator final : public Communicator {
 public:
  // GPUs visible to this process (0 without a driver or device).
  static int DeviceCount();
  static Result<std::vector<std::unique_ptr<NcclCommunicator>>> CreateLocal(int gpus);
  ~NcclCommunicator() override;

  Result<CollectiveStats> Allreduce(std::span<float> data, const CollectiveOptions& options) override;
  std::string_view algorithm() const override { return "nccl"; }
  uint32_t rank() const override { return rank_; }
  uint32_t world() const override { return world_; }
  bool broken() const override { return broken_; }
  void Interrupt() {}  // NCCL collectives cannot be interrupted from outside

 private:
  struct Impl;
  NcclCommunicator(std::unique_ptr<Impl> impl, uint32_t rank, uint32_t world);
  std::unique_ptr<Impl> impl_;
  uint32_t rank_, world_;
  bool broken_ = false;
};

}  // namespace tributary::collectives
