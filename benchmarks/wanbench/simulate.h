// Simulation mode of tributary-bench: a discrete-event model of training rounds that projects a
// scenario beyond the peers this machine can run (16–10,000), for DDP (an all-reduce of the
// gradient every step) and DiLoCo (an all-reduce of the pseudo-gradient every H steps), with
// codecs' byte ratios and a group size. Pure and torch-free; docs/BENCHMARKS.md ("Simulation
// mode") states the model, its assumptions and its measured error.
//
// Inputs are measurements: one peer's compute seconds per step and the per-round time outside
// compute and all-reduce (evaluation, commit) come from a finished run's JSON (or flags), the
// links from the scenario's matrix. A projected peer k behaves like scenario peer k mod n.
//
// Events are the ends of compute and of every all-reduce phase. A phase is one message per
// ring edge (or per butterfly pair), all concurrent; it ends when its slowest message has
// arrived. A message's time is TCP over the emulated link: slow start from the connection's
// current window (doubling per RTT while the window limits it, capped by the send buffer), the
// link's payload rate once the window covers the bandwidth-delay product, one-way delay, and
// Linux's window decay after idle (cwnd halves per RTO idle, not below the initial window). Each
// directed link's connection keeps its window across phases, steps and rounds.
//
// Group size g < N: an exact average over N peers in ⌈log_g N⌉ stages of all-reduces within
// groups of at most g peers (Moshpit-style grid: stage s groups the peers whose base-g digits
// differ only in digit s); the groups of one stage run concurrently.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "benchmarks/wan/wan_config.h"
#include "benchmarks/wanbench/scenario.h"
#include "core/status.h"

namespace tributary::wanbench::sim {

struct TcpModel {
  double mss_bytes = 1448;        // payload of one 1500-byte packet (TCP timestamps on)
  double packet_bytes = 1500;     // the link's rate counts IP bytes
  double initial_window_segments = 10;
  double rto_min_s = 0.2;         // Linux: RTO ≈ RTT + 200 ms once the RTT is steady
  bool slow_start_after_idle = true;  // net.ipv4.tcp_slow_start_after_idle (default 1)
  // The window never exceeds this share of the send buffer: Linux's default 4 MiB gave
  // 728 Mbit/s at 30 ms RTT in docs/WAN_EMULATOR.md, i.e. ≈ 0.65 × 4 MiB in flight.
  double window_share_of_buffer = 0.65;
  int64_t default_send_buffer = 4 << 20;
  double unshaped_rate_mbit = 1900;  // "lan": the forwarding thread's own limit (iperf3, same doc)
};

enum class Algorithm {
  kRing,       // Tributary fp32: reduce-scatter + all-gather, 2(g−1) phases of B/g
  kGlooRing,   // Gloo AllreduceRing: g−1 phases, each passing the whole buffer
  kButterfly,  // Tributary with a codec: every pair exchanges shards, 2 phases
};

struct SystemModel {
  std::string name;               // as in the report: "tributary-ddp", "tributary-diloco-h60+int8"
  bool diloco = false;
  uint32_t steps_per_round = 1;   // DiLoCo: H; DDP: steps between evaluations
  Algorithm algorithm = Algorithm::kRing;
  std::string codec = "fp32";
  double compute_s_per_step = 0;  // one peer, one step
  // Optional: each scenario peer's own speed (projected peer k uses entry k mod size); the
  // all-reduce waits for the slowest. Empty: every peer at compute_s_per_step.
  std::vector<double> peer_compute_s_per_step;
  double round_overhead_s = 0;    // per round, outside compute and all-reduce
};

struct Inputs {
  wan::WanConfig network;         // the scenario's peers and directed links
  uint64_t numel = 0;             // parameters (fp32 elements of one gradient)
  uint64_t tokens_per_step = 0;   // one peer
  uint64_t steps_per_peer = 0;    // the budget
  TcpModel tcp;
  bool shared_uplink = false;     // false: links are independent, as in the emulator
};

struct Projection {
  std::string system;
  int peers = 0;
  int group_size = 0;            // peers per all-reduce group (= peers when not grouped)
  int stages = 1;                // sequential group all-reduces per averaging
  uint64_t rounds = 0;
  double train_s = 0;            // whole budget
  double round_s = 0;            // mean
  double allreduce_s_per_round = 0;
  double compute_utilisation = 0;
  double tokens_per_s = 0;       // all peers
  double payload_bytes_per_peer = 0;  // sent per peer over the whole budget (app bytes)
  double byte_ratio = 1;         // codec payload / fp32
};

// One system at N peers and group size g (0 = N). InvalidArgument for impossible inputs
// (N < 2, g < 2, an unknown codec, a codec on a ring system, no compute time).
Result<Projection> Project(const Inputs& inputs, const SystemModel& system, int peers, int group_size);

// Inputs and per-system models taken from a finished run's JSON (ReportJson) of this scenario:
// gradient size from the bytes DDP sent, compute s/step and the per-round overhead per system.
struct RunCalibration {
  Inputs inputs;
  std::vector<SystemModel> systems;  // the run's systems that ran to completion
  double reference_compute_s_per_step = 0;
  std::vector<std::string> notes;    // what was taken from where
};
Result<RunCalibration> CalibrateFromRun(const BenchScenario& scenario, const nlohmann::json& run);

// A system's model from its name ("tributary-ddp", "tributary-diloco-h30", "gloo-ddp", any of
// them + "+<codec>" for DiLoCo over the butterfly with that codec).
Result<SystemModel> ModelFor(const BenchScenario& scenario, const std::string& name);

// The run's own systems at its own N: measured vs predicted train s, all-reduce s per round and
// bytes per peer.
struct ValidationRow {
  std::string system;
  double measured_train_s = 0, predicted_train_s = 0;
  double measured_allreduce_s = 0, predicted_allreduce_s = 0;  // per round
  double measured_bytes = 0, predicted_bytes = 0;              // app bytes per peer
  double train_error() const { return predicted_train_s / measured_train_s - 1; }
  double allreduce_error() const { return predicted_allreduce_s / measured_allreduce_s - 1; }
  double bytes_error() const { return predicted_bytes / measured_bytes - 1; }
};
Result<std::vector<ValidationRow>> Validate(const RunCalibration& calibration, const nlohmann::json& run);

std::string ValidationTable(const std::vector<ValidationRow>& rows);
std::string ProjectionTable(const std::vector<Projection>& rows);
nlohmann::json ToJson(const Projection& p);
nlohmann::json ToJson(const ValidationRow& v);

}  // namespace tributary::wanbench::sim
