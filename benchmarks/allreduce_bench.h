// All-reduce benchmark: ours (collectives::MeshCommunicator, which picks the direct path or the
// ring by size) and our plain RingAllreduce over the same mesh, against Gloo's
// AllreduceRing<float> (and, for reference, Gloo's bandwidth-optimal AllreduceRingChunked<float>),
// same run, same inputs, real processes on loopback.
//
// The launcher (RunLauncher) spawns `world` worker processes of this very binary per world size;
// they rendezvous through files in a fresh temp dir (our mesh: one port file per rank; Gloo: its
// FileStore in the same dir). Rank 0 writes its measurements there as JSON for the launcher,
// which prints a Markdown table and writes the merged JSON.
//
// With --runs N > 1 the launcher starts a fresh set of workers N times per world size (new
// processes, new connections). Interleaving inside one run cancels drift, but not what a run
// settles into once (which core each thread lands on, how far TCP autotuning grew each
// socket's buffers), and on 2 shared cores that moves a small size's ratio by ±20 % from run to
// run. So each cell also reports the per-run gloo/ours ratio as median [min–max] over runs.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "benchmarks/common/bench_stats.h"
#include "core/status.h"

namespace tributary::bench {

struct BenchConfig {
  std::vector<uint32_t> worlds{2, 4};
  std::vector<double> sizes_mib{4.0 / 1024, 64.0 / 1024, 1, 4, 16, 64, 256};  // 4 KiB .. 256 MiB
  uint32_t reps = 9;      // odd, so the median is one measured repetition
  uint32_t small_reps = 31;  // for sizes of at most small_mib: cheap, and noisier per call
  double small_mib = 4;
  uint32_t big_reps = 5;  // for sizes of at least big_mib
  double big_mib = 64;
  uint32_t warmup = 1;
  size_t segment_bytes = 1 << 20;  // our ring's pipelining unit
  uint32_t timeout_s = 300;        // per world, launcher and workers alike
  bool gloo_chunked = true;        // also time Gloo's AllreduceRingChunked
  int64_t direct_max_bytes = -1;  // >= 0 overrides the communicator's direct-path threshold
  int64_t doubling_max_bytes = -1;  // >= 0 overrides its recursive-doubling threshold
  uint32_t runs = 1;               // launcher-only: fresh worker processes per world, N times
  std::string json_path;
  // Worker-only.
  uint32_t rank = 0;
  uint32_t world = 0;
  std::string dir;
};

// One size, measured on every rank; times are per repetition, max over ranks (the slowest rank
// decides when an all-reduce is done), in seconds.
struct SizeResult {
  uint64_t bytes = 0;
  std::vector<double> ours_s;            // MeshCommunicator: the path it picked
  std::string ours_path;                 // "direct" | "ring"
  std::vector<double> ring_s;            // RingAllreduce over the same mesh, always
  std::vector<double> gloo_s;            // AllreduceRing
  std::vector<double> gloo_chunked_s;    // AllreduceRingChunked; empty when not measured
  double max_abs_diff_ours_vs_gloo = 0;  // max over ranks, elements and both Gloo algorithms
  double max_abs_err_ours_vs_fp64 = 0;   // on a sample of elements, vs a float64 reference
  bool ours_bit_identical = false;       // across ranks
  bool gloo_bit_identical = false;
  bool ok = false;  // the checks above passed
  // CPU seconds (user + system, getrusage) that one all-reduce cost all ranks together, mean
  // over the timed repetitions: divided by `bytes`, the CPU cost per byte reduced.
  double ours_cpu_s = 0;
  double ring_cpu_s = 0;
  double gloo_cpu_s = 0;
  double gloo_chunked_cpu_s = 0;
};

nlohmann::json ToJson(const SizeResult& r);
Result<SizeResult> SizeResultFromJson(const nlohmann::json& j);

// Entry points; both return a process exit code.
int RunWorker(const BenchConfig& config);
int RunLauncher(const BenchConfig& config);

}  // namespace tributary::bench
