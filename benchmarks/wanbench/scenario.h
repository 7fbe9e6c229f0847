// A benchmark scenario for tributary-bench: the emulated network, the training job, the token
// budget, the systems to compare and optional faults. Parsing is pure; every error names the
// file, the line and the key, and unknown keys are refused. Format: docs/BENCHMARKS.md.
//
//   name = "continent"                 # optional; names the output files (default: file stem)
//   seed = 1234                        # the job seed (model init and batches)
//   systems = ["tributary-ddp", "tributary-diloco", "gloo-ddp"]   # a Tributary system is
//       tributary-ddp[+<codec>] or tributary-diloco[-async][-h<N>][-k<N>][-ready][+<codec>]
//       (-k: async_apply_step; -ready: async_apply_when_ready)
//   timeout_seconds = 900              # per system
//   [network]    a benchmarks/wan scenario: peers, preset, [network.matrix], [[network.link]], ...
//   [job]        job keys as in jobs/demo.toml (model size, batch, learning rates, ...)
//   [budget]     tokens = N (all peers together) or steps = N (per peer); h; ddp_steps_per_round;
//                diloco_steps = N (per peer, DiLoCo systems only; default: the same budget);
//                diloco_eval_every = N (DiLoCo systems evaluate every N rounds; default: every round)
//   [[fault]]    peer = 3, at_seconds = 20, systems = ["tributary-diloco"]
//                kind = "kill" (SIGKILL the peer's process, the default) or "cut" (every link to
//                and from the peer drops every packet), duration_seconds = 10 (cut only; default:
//                until the system ends)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "benchmarks/wan/wan_config.h"
#include "core/status.h"
#include "proto/tributary.pb.h"

namespace tributary::wanbench {

enum class SystemKind { kTributaryDdp, kTributaryDiloco, kGlooDdp };

struct SystemSpec {
  std::string name;  // as written in the scenario ("tributary-diloco-async-h100+int4")
  SystemKind kind = SystemKind::kTributaryDdp;
  uint32_t steps_per_round = 0;  // H for DiLoCo; steps between evaluations for DDP
  bool async = false;            // DiLoCo only: mode diloco-async (runtime/async_outer.h)
  std::string codec;             // Tributary only: the job's codec; empty = the job's own
  uint64_t steps_per_peer = 0;   // this system's budget (set by the parser)
  uint32_t async_apply_step = 0; // diloco-async only ("-k<N>"): the job's async_apply_step; 0 = default
  bool async_apply_when_ready = false;  // diloco-async only ("-ready", last): async_apply_when_ready
  bool ddp() const { return kind != SystemKind::kTributaryDiloco; }
  bool tributary() const { return kind != SystemKind::kGlooDdp; }
};

enum class FaultKind { kKill, kCut };

struct FaultSpec {
  FaultKind kind = FaultKind::kKill;
  int peer = 0;             // kill: the peer whose process gets SIGKILL; cut: the peer cut off
  double at_seconds = 0;    // after every peer of the system has joined
  double duration_seconds = 0;  // cut: restore the links after this long; 0 = never
  std::vector<std::string> systems;  // empty: every system
  bool Applies(const std::string& system) const;
};

struct BenchScenario {
  std::string source;  // file name, for messages
  std::string name;
  uint64_t seed = 1234;
  double timeout_seconds = 900;
  wan::WanConfig network;
  std::string job_toml;     // the [job] table, as a job file for `tributary coordinator --job-file`
  v1::JobSpec base_spec;    // DefaultJobSpec() + [job] + seed + num_peers
  uint64_t steps_per_peer = 0;         // the budget; DDP systems always train this many
  std::optional<uint64_t> diloco_steps;  // DiLoCo systems' budget when it differs (benchmark (d):
                                         // the time DiLoCo needs to reach DDP's final loss)
  uint32_t diloco_eval_every = 0;       // 0: every round
  uint32_t h = 50;
  uint32_t ddp_steps_per_round = 10;
  std::vector<SystemSpec> systems;
  std::vector<FaultSpec> faults;

  int peers() const { return network.num_peers; }
  uint64_t tokens_per_step() const;  // one step of one peer
  uint64_t total_tokens() const;     // the budget of the DDP systems (all of them without diloco_steps)
  uint64_t total_tokens(const SystemSpec& system) const;
  const FaultSpec* FaultFor(const std::string& system) const;  // nullptr: none
};

// Keys of [job] that the benchmark sets itself, per system.
const std::vector<std::string>& ReservedJobKeys();

Result<BenchScenario> ParseBenchScenario(const std::string& toml_text, const std::string& source);
Result<BenchScenario> LoadBenchScenarioFile(const std::string& path);

// The job one system trains: the base spec with its mode, rounds and steps per round. A system
// that a fault hits gets min_peers = peers - 1, so the survivors may continue.
v1::JobSpec SpecFor(const BenchScenario& scenario, const SystemSpec& system);

// One-paragraph summary (peers, network, model, budget, systems) for the log and the report.
std::string DescribeScenario(const BenchScenario& scenario);

}  // namespace tributary::wanbench
