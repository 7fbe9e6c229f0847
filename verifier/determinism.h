// Determinism classes: which machines can replay each other's steps bit for bit.
//
// libtorch on the CPU is bit-reproducible only for the same build, the same intra-op thread
// count and the same kernel dispatch (ISA branch of ATen and of the BLAS), so a bitwise replay is
// only meaningful between peers of one class. Every step leaf and round commitment names the
// prover's class; a verifier replays bitwise only inside that class and otherwise falls back to
// the calibrated tolerance of replay.h. A GPU class never claims bitwise equality.
#pragma once

#include <string>
#include <string_view>

#include "core/digest.h"
#include "core/status.h"

namespace tributary::verifier {

struct DeterminismClass {
  std::string device = "cpu";  // "cpu", or "cuda:<gpu model>:sm<cc>:driver<v>:cudart<v>"
  std::string torch;           // libtorch version, e.g. "1.13.0"
  int threads = 1;             // pinned torch intra-op threads (= BLAS threads)
  std::string blas;            // e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell"
  std::string blas_core;       // the BLAS kernel actually dispatched, e.g. "Haswell"
  std::string isa;             // comma-separated CPU features that change kernel dispatch
  std::string env;             // dispatch overrides found in the environment, "K=V,K=V"

  // True for CPU classes: replays inside the class must be bit-identical.
  bool bitwise() const { return device == "cpu"; }
  // "tributary.dclass.v1;device=cpu;torch=1.13.0;threads=1;blas=...;core=...;isa=...;env=..."
  // The string every leaf and commitment carries; equal strings <=> same class.
  std::string Canonical() const;
  // Inverse of Canonical(). InvalidArgument for anything Canonical() cannot produce.
  static Result<DeterminismClass> Parse(std::string_view canonical);
};

// This process's class, for a job that pins `threads` compute threads. Reads the libtorch
// version this build was compiled against, the BLAS that is loaded into the process (OpenBLAS
// is asked for its configuration and kernel through dlsym; otherwise the loaded libblas path is
// named), the CPU features that select kernels, and the overrides ATEN_CPU_CAPABILITY,
// OPENBLAS_CORETYPE, MKL_CBWR and ONEDNN_MAX_CPU_ISA when they are set. Call it after libtorch
// is loaded (any process that trains or replays has it). `device` is the resolved compute device
// (runtime/compute_device.h): for "cuda:N" the class names that GPU's model, compute capability,
// driver and CUDA runtime, read from the driver API.
DeterminismClass LocalDeterminismClass(int threads, std::string_view device = "cpu");

}  // namespace tributary::verifier
