#include "runtime/compute_device.h"

#include <torch/cuda.h>

#include <charconv>

namespace tributary::runtime {

bool CudaAvailable() { return torch::cuda::is_available(); }

Result<std::string> ResolveComputeDevice(std::string_view requested) {
  if (requested == "cpu") return std::string("cpu");
  if (requested.substr(0, 4) != "cuda") {
    return InvalidArgument("device must be \"cpu\", \"cuda\" or \"cuda:N\", got \"" + std::string(requested) + "\"");
  }
  int index = 0;
  std::string_view rest = requested.substr(4);
  if (!rest.empty()) {
    if (rest.front() != ':' || rest.size() == 1) {
      return InvalidArgument("device must be \"cpu\", \"cuda\" or \"cuda:N\", got \"" + std::string(requested) + "\"");
    }
    rest.remove_prefix(1);
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), index);
    if (ec != std::errc() || end != rest.data() + rest.size() || index < 0) {
      return InvalidArgument("bad CUDA device index in \"" + std::string(requested) + "\"");
    }
  }
  if (!CudaAvailable()) {
    return FailedPrecondition("device \"" + std::string(requested) +
                              "\" asked for, but this libtorch build sees no CUDA device");
  }
  const auto count = static_cast<int>(torch::cuda::device_count());
  if (index >= count) {
    return FailedPrecondition("device cuda:" + std::to_string(index) + " asked for, but only " +
                              std::to_string(count) + " CUDA device(s) are present");
  }
  return "cuda:" + std::to_string(index);
}

}  // namespace tributary::runtime
