// The device a peer trains and replays on: "cpu" or "cuda:N". Torch-free header.
//
// Only the model and its inner optimiser live on the device; every flat vector that leaves them
// (θ snapshots, Δ, codec payloads, digests, openings) is on the CPU, so nothing downstream of
// the trainer knows or cares where the step ran.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace tributary::runtime {

// "cpu" -> "cpu"; "cuda" -> "cuda:0"; "cuda:N" -> "cuda:N". InvalidArgument for anything else;
// FailedPrecondition when a CUDA device is asked for and this build or machine has none (or
// fewer than N + 1).
Result<std::string> ResolveComputeDevice(std::string_view requested);

// Whether this libtorch build sees at least one CUDA device.
bool CudaAvailable();

}  // namespace tributary::runtime
