// What one system's run measured, and the derived numbers the report compares: tokens/s,
// compute utilisation, all-reduce time, bytes on the wire per peer, eval loss vs wall time and
// tokens, time to a target loss, and the stall a fault caused. Pure; times are seconds since the
// system's training started.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace tributary::wanbench {

struct RoundPoint {
  uint64_t round = 0;
  double t_end = 0;         // commit (Tributary) / end of rank 0's round incl. eval (Gloo)
  double wall_seconds = 0;  // this round
  uint32_t peers = 0;       // members whose work is in the round
  uint32_t attempts = 1;
  uint64_t tokens = 0;      // this round, all members
  uint64_t cum_tokens = 0;
  double train_loss = 0;
  std::optional<double> eval_loss;
  double compute_seconds = 0;  // mean over members
  double comm_seconds = 0;     // mean over members: time inside the all-reduce
  double app_bytes_per_peer = 0;   // what the processes report sending, mean over members
  double wire_bytes_per_peer = 0;  // IP bytes the emulator carried, mean over all peers
};

struct PeerTotals {
  double compute_seconds = 0;
  double comm_seconds = 0;
  uint64_t app_bytes_sent = 0;
  uint64_t wire_bytes_sent = 0;  // IP bytes this peer sent through the emulator
  double process_cpu_seconds = 0;  // CPU the whole process got (rusage), set-up included
};

struct FaultOutcome {
  std::string kind = "kill";          // "kill" or "cut" (FaultKind)
  int peer = 0;
  double at = 0;                      // when the bench killed it or cut its links
  bool recovered = false;             // a round committed after the kill
  std::optional<double> recovery_s;   // kill → next commit
  std::optional<double> stall_s;      // that wait minus the median round before the kill
  std::string note;
};

// One sample of the emulator's counters: cumulative IP bytes each peer has sent.
struct WireSample {
  double t = 0;  // seconds since training start (may be negative: set-up traffic)
  std::vector<uint64_t> bytes_sent;
};

struct SystemResult {
  std::string name;
  std::string mode;            // ddp / diloco
  uint32_t steps_per_round = 0;
  uint32_t rounds_planned = 0;
  uint64_t tokens_per_step = 0;  // one peer, one step
  bool ok = false;
  std::string error;           // why not ok
  double setup_seconds = 0;    // launch → training start (process start, corpus, handshakes)
  double train_seconds = 0;    // training start → last round end
  std::vector<RoundPoint> rounds;
  std::vector<PeerTotals> peers;
  std::optional<FaultOutcome> fault;
  std::optional<bool> theta_identical;  // Gloo: do all ranks end with the same bits?
  std::string log_dir;
  double load_start = 0, load_end = 0;  // 1-minute load average: the cores are shared

  // Derived by Finish().
  uint64_t tokens = 0;
  double tokens_per_second = 0;
  double compute_utilisation = 0;   // mean over peers of compute seconds / train_seconds
  double compute_seconds_per_step = 0;  // wall-clock seconds of one peer's step: shows how
                                        // busy the shared cores were during this system
  // train_seconds with this system's compute time replaced by the same steps at a reference
  // speed (Normalise): what is left differs only by communication and coordination.
  double normalised_train_seconds = 0;
  double comm_fraction = 0;         // mean over peers of all-reduce seconds / train_seconds
  double allreduce_seconds_per_peer = 0;
  double allreduce_seconds_per_round = 0;
  double app_bytes_per_peer = 0;
  double wire_bytes_per_peer = 0;
  std::optional<double> final_eval_loss;
};

// Fills each round's wire bytes from the samples (linear interpolation at round ends), then the
// derived totals.
void AttributeWireBytes(const std::vector<WireSample>& samples, SystemResult& r);
void Finish(SystemResult& r);
// Kill at `at`: recovery time and stall from the rounds around it.
FaultOutcome AssessFault(const SystemResult& r, int peer, double at);

// Sets normalised_train_seconds of every system with rounds, at the median compute s/step of
// the successful systems (other programs share these cores, so that speed drifts from one system
// to the next); returns that reference speed.
double Normalise(std::vector<SystemResult>& results);

// First wall time at which the eval loss is at or below `target` (linear between rounds).
std::optional<double> TimeToLoss(const SystemResult& r, double target);
std::optional<double> TokensToLoss(const SystemResult& r, double target);

nlohmann::json ToJson(const SystemResult& r);

}  // namespace tributary::wanbench
