// Coordinator: admission, membership, liveness and round scheduling for one or more jobs.
// Never on the tensor data path.
//
// Every connection starts with the authenticated handshake (net/secure_channel.h); the remote's
// Ed25519 key is its identity from then on. Requests that change state must also carry an
// envelope signature by that key. A peer is admitted to a job per the job's admission policy
// (open, allowlist of keys, invite tokens), gets a data shard, and — if the job has already
// committed rounds — syncs the committed state from other peers before it becomes ready.
//
// Groups: with JobSpec.group_size > 0 and more ready peers than that, each round's peers are
// partitioned into balanced groups re-mixed every round (launcher/grouping.h). Each group runs the
// attempt/retry/report/decide logic below on its own; the round commits when every group has
// decided or been dropped, and each peer's committed state is recorded (groups differ). A group
// whose members hold different states is told to mix them (RoundStart.mix).
//
// Rounds: once `min_peers` are ready the coordinator sends RoundStart{round, attempt, members}.
// A member lost mid-round (disconnect, silence past the liveness timeout, Leave, or a straggler
// past the round deadline) starts attempt+1 with the survivors; peers keep their source buffer,
// so the retry is exact. When every member of the current attempt has reported, the round is
// committed if the θ and state digests agree (a strict majority wins; dissenters are ejected),
// written to SQLite, then announced. A restarted coordinator reloads jobs and committed rounds
// from SQLite; peers reconnect and the job continues after the last committed round.
//
// Threads: one IoThread; all state on one strand. Public methods are thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "net/identity.h"
#include "proto/tributary.pb.h"

namespace tributary::net {
class IoThread;
}

namespace tributary::launcher {

namespace v1 = ::tributary::v1;

// One group of a round (JobSpec.group_size; a round of one group has one).
struct GroupSummary {
  uint32_t index = 0;
  bool mix = false;                          // its members came from different groups
  uint32_t attempts = 1;
  std::vector<std::string> members;          // peer names, by rank
  std::vector<std::string> reported_thetas;  // hex, by rank: what each member reported
  std::string theta_digest, state_digest;    // hex, agreed by the members
};

struct RoundSummary {
  std::string job_id;
  uint64_t round = 0;
  uint32_t attempts = 1;            // 1 = no retry was needed
  uint32_t peers = 0;               // members whose contribution is in the round
  double train_loss = 0;            // mean over members
  std::optional<double> eval_loss;  // reported by rank 0 (mean over groups)
  uint64_t tokens = 0;              // sum over members
  uint64_t bytes_sent = 0;          // sum over members
  double wall_seconds = 0;          // first RoundStart to commit
  double compute_seconds = 0;       // mean over members
  double comm_seconds = 0;          // mean over members
  std::string theta_digest;         // hex: the reference (largest) group's
  std::vector<GroupSummary> groups;  // the groups that committed
};

struct JobOutcome {
  Status status;  // OK when every round of the job committed
  std::vector<RoundSummary> rounds;
  double wall_seconds = 0;
};

class Coordinator {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 0;                 // 0 = ephemeral
    std::optional<v1::JobSpec> spec;   // a job to host from the start
    std::string db_path = ":memory:";  // SQLite file; reopening it resumes its jobs
    std::optional<net::Identity> identity;  // generated when absent
    Millis hello_timeout{10000};
    // Verifier: hold each round's commit until its challenges are settled, so a member convicted
    // of faking that round is dropped and the round retried without it (its contribution never
    // enters θ), at the cost of the verification time on every round's critical path. Off: rounds
    // commit at once and verification runs while the next round trains.
    bool verify_before_commit = false;
    // Fault injection for recovery tests: the process dies (exit status 75) right after round N
    // is recorded in the database and before any peer hears it committed, the window a real
    // crash can hit. Unset in production.
    std::optional<uint64_t> crash_after_recording_round;
  };

  static Result<std::unique_ptr<Coordinator>> Start(Options options);
  ~Coordinator();

  uint16_t port() const;
  net::PublicKey public_key() const;
  // The job given in Options (or the first job in the store).
  const std::string& job_id() const;
  // Called on the coordinator's thread after each committed round; must not block for long.
  void OnRound(std::function<void(const RoundSummary&)> callback);
  // Called on the coordinator's thread when a loss evaluated beside training (job key
  // eval_beside_training) arrives for a round committed earlier: the round and its eval loss
  // (the mean over the groups heard so far). Must not block for long.
  void OnLateEval(std::function<void(uint64_t round, double eval_loss)> callback);
  // Blocks until job `job_id` (default: job_id()) finishes or `deadline` passes.
  Result<JobOutcome> Wait(std::optional<Deadline> deadline = std::nullopt,
                          const std::string& job_id = "");

 private:
  class Impl;
  Coordinator(std::unique_ptr<net::IoThread> io, std::shared_ptr<Impl> impl);
  std::unique_ptr<net::IoThread> io_;  // owns the thread every Impl handler runs on
  std::shared_ptr<Impl> impl_;
};

}  // namespace tributary::launcher
