// Coordinator: rendezvous and round scheduler for one job. Never on the tensor data path.
//
// It admits peers (protocol version, job id and role checked on the first frame), and once
// spec.num_peers have joined it runs rounds: RoundStart{members, rank} to everyone, then waits for
// one RoundReport per member, compares their θ digests, and answers RoundEnd (ok only if every
// digest agrees). A peer that disconnects or reports failure mid-round, or a round that outlives
// spec.round_timeout_ms, aborts the job with a clear reason sent to every peer (recovery with
// survivors belongs to the launcher issue). Bad input from any connection is logged with the
// remote address, answered with an Error frame and that connection closed; others are unaffected.
//
// Threads: the Coordinator owns an IoThread; all state lives on one strand of it. Public methods
// are thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "proto/tributary.pb.h"

namespace tributary::net {
class IoThread;
}

namespace tributary::launcher {

namespace v1 = ::tributary::v1;

struct RoundSummary {
  uint64_t round = 0;
  uint32_t peers = 0;
  double train_loss = 0;            // mean over peers
  std::optional<double> eval_loss;  // reported by rank 0
  uint64_t tokens = 0;              // sum over peers
  uint64_t bytes_sent = 0;          // sum over peers (collective payload + framing)
  double wall_seconds = 0;          // RoundStart to last report
  double compute_seconds = 0;       // mean over peers
  double comm_seconds = 0;          // mean over peers
  std::string theta_digest;         // hex, agreed by all peers
};

struct JobOutcome {
  Status status;  // OK when every round completed with agreeing θ digests
  std::vector<RoundSummary> rounds;
  double wall_seconds = 0;
};

class Coordinator {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 0;  // 0 = ephemeral
    v1::JobSpec spec;
    Millis hello_timeout{10000};  // a connection must introduce itself within this
  };

  static Result<std::unique_ptr<Coordinator>> Start(Options options);
  ~Coordinator();

  uint16_t port() const;
  const std::string& job_id() const;
  // Called on the coordinator's thread after each completed round; must not block for long.
  void OnRound(std::function<void(const RoundSummary&)> callback);
  // Blocks until the job finishes (all rounds or failure) or `deadline` passes.
  Result<JobOutcome> Wait(std::optional<Deadline> deadline = std::nullopt);

 private:
  class Impl;
  Coordinator(std::unique_ptr<net::IoThread> io, std::shared_ptr<Impl> impl);
  std::unique_ptr<net::IoThread> io_;  // owns the thread every Impl handler runs on
  std::shared_ptr<Impl> impl_;
};

}  // namespace tributary::launcher
