// Runs one system of a scenario on a running WAN emulator and measures it.
//
//   tributary-*  `tributary coordinator` in peer 0's namespace (listening on its address) and one
//                `tributary peer` per namespace; rounds, losses, compute/all-reduce seconds and
//                bytes come from their logs (log_parse.h).
//   gloo-ddp     one `tributary-gloo-ddp` per namespace; they write JSON lines.
//
// Every process runs under `ip netns exec`, in its own process group, with a death signal tied
// to this process (subprocess.h). The emulator's byte counters are sampled while the system
// runs, for the bytes each peer put on the wire. A configured fault SIGKILLs one peer's process
// `at_seconds` after every peer has joined.
#pragma once

#include <atomic>
#include <string>

#include "benchmarks/wan/wan_emulator.h"
#include "benchmarks/wanbench/metrics.h"
#include "benchmarks/wanbench/scenario.h"
#include "core/status.h"

namespace tributary::wanbench {

struct RunnerOptions {
  std::string tributary_binary;
  std::string gloo_binary;
  std::string corpus_dir;
  std::string run_dir;    // logs go to <run_dir>/<system>/
  std::string job_file;   // the scenario's [job] table as a job file
  const std::atomic<bool>* stop = nullptr;  // set by SIGINT/SIGTERM: abort at once
  int index = 0, count = 1;                 // for the progress line
};

// A SystemResult with ok = false when the system itself failed (a process died, a timeout);
// an error Status only when the benchmark could not run it at all or was interrupted.
Result<SystemResult> RunSystem(wan::WanEmulator& wan, const BenchScenario& scenario,
                               const SystemSpec& system, const RunnerOptions& options);

}  // namespace tributary::wanbench
