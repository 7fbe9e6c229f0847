#include "collectives/nccl/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cmath>
#include <string>

#include "collectives/codec/codec.h"

namespace tributary::collectives {
namespace {

Status CudaStatus(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return Status::Ok();
  return Unavailable("cuda " + what + ": " + cudaGetErrorString(e));
}

Status NcclStatus(ncclResult_t r, const std::string& what) {
  if (r == ncclSuccess) return Status::Ok();
  return Unavailable("nccl " + what + ": " + ncclGetErrorString(r));
}

}  // namespace

struct NcclCommunicator::Impl {
  int device = 0;
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  float* buffer = nullptr;
  size_t capacity = 0;  // floats

  ~Impl() {
    if (buffer) (void)cudaFree(buffer);
    if (stream) (void)cudaStreamDestroy(stream);
    if (comm) (void)ncclCommDestroy(comm);
  }
};

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl, uint32_t rank, uint32_t world)
    : impl_(std::move(impl)), rank_(rank), world_(world) {}
NcclCommunicator::~NcclCommunicator() = default;

int NcclCommunicator::DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

Result<std::vector<std::unique_ptr<NcclCommunicator>>> NcclCommunicator::CreateLocal(int gpus) {
  const int available = DeviceCount();
  if (gpus < 1 || gpus > available) {
    return InvalidArgument("nccl: asked for " + std::to_string(gpus) + " GPUs, " +
                           std::to_string(available) + " visible");
  }
  std::vector<ncclComm_t> comms(static_cast<size_t>(gpus));
  std::vector<int> devices(static_cast<size_t>(gpus));
  for (int d = 0; d < gpus; ++d) devices[static_cast<size_t>(d)] = d;
  TRIB_RETURN_IF_ERROR(NcclStatus(ncclCommInitAll(comms.data(), gpus, devices.data()), "init"));
  std::vector<std::unique_ptr<NcclCommunicator>> out;
  for (int d = 0; d < gpus; ++d) {
    auto impl = std::make_unique<Impl>();
    impl->device = d;
    impl->comm = comms[static_cast<size_t>(d)];
    TRIB_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(d), "set device"));
    TRIB_RETURN_IF_ERROR(CudaStatus(cudaStreamCreate(&impl->stream), "stream"));
    out.push_back(std::unique_ptr<NcclCommunicator>(
        new NcclCommunicator(std::move(impl), static_cast<uint32_t>(d), static_cast<uint32_t>(gpus))));
  }
  return out;
}

Result<CollectiveStats> NcclCommunicator::Allreduce(std::span<float> data,
                                                    const CollectiveOptions& options) {
  last_stats_ = {};
  TRIB_ASSIGN_OR_RETURN(auto codec, codec::MakeCodec(options.codec));
  if (codec->name() != "fp32" || options.aggregator.kind != robust::AggregatorKind::kMean) {
    return InvalidArgument("the NCCL backend runs fp32 with the mean only, not codec '" +
                           codec->name() + "' (use ButterflyCommunicator)");
  }
  if (broken_) return FailedPrecondition("nccl: the group broke in an earlier collective");
  for (size_t i = 0; i < data.size(); ++i) {
    if (!std::isfinite(data[i])) {
      return InvalidArgument("nccl all-reduce '" + options.tag + "': our own input element " +
                             std::to_string(i) + " is not finite");
    }
  }
  const Clock::time_point start = Clock::now();
  Impl& g = *impl_;
  auto run = [&]() -> Status {
    TRIB_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(g.device), "set device"));
    if (g.capacity < data.size()) {
      if (g.buffer) TRIB_RETURN_IF_ERROR(CudaStatus(cudaFree(g.buffer), "free"));
      g.buffer = nullptr;
      g.capacity = 0;
      TRIB_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&g.buffer, data.size_bytes()), "malloc"));
      g.capacity = data.size();
    }
    TRIB_RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(g.buffer, data.data(), data.size_bytes(), cudaMemcpyHostToDevice, g.stream),
        "copy in"));
    TRIB_RETURN_IF_ERROR(NcclStatus(
        ncclAllReduce(g.buffer, g.buffer, data.size(), ncclFloat32,
                      options.average ? ncclAvg : ncclSum, g.comm, g.stream),
        "all-reduce '" + options.tag + "'"));
    return CudaStatus(cudaStreamSynchronize(g.stream), "synchronize");
  };
  if (!data.empty()) {
    if (Status st = run(); !st.ok()) {
      broken_ = true;  // `data` untouched: the reduction ran on the device copy
      return st.WithContext("rank " + std::to_string(rank_) + " of " + std::to_string(world_));
    }
    if (Status st = CudaStatus(cudaMemcpy(data.data(), g.buffer, data.size_bytes(),
                                          cudaMemcpyDeviceToHost), "copy out");
        !st.ok()) {
      broken_ = true;
      return st;
    }
  }
  last_stats_.seconds = SecondsSince(start);
  return last_stats_;
}

}  // namespace tributary::collectives
