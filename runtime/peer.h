// The peer process: joins a coordinator, trains its shard, and averages with the group.
//
// RunPeer blocks until the coordinator reports the job done (returns the outcome) or something
// fails (returns the reason: coordinator gone, neighbour dead, θ digests disagree, bad data...).
// On failure it tells the coordinator why (best effort) and closes its ring connections so the
// failure reaches the other members at once instead of at their deadline.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace tributary::runtime {

struct PeerOptions {
  std::string coordinator_host = "127.0.0.1";
  uint16_t coordinator_port = 0;
  std::string job_id;                    // must match the coordinator's job
  std::string name;                      // shown in logs and status
  std::string listen_host = "127.0.0.1"; // where ring neighbours reach this peer
  std::string corpus_dir;                // local copy of the job's corpus
  std::string checkpoint_dir;            // empty = no checkpoints
  int connect_timeout_ms = 10000;
};

struct PeerOutcome {
  uint64_t rounds_completed = 0;
  uint32_t rank = 0;
  double last_eval_loss = -1;  // rank 0 only
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  std::string theta_digest;    // hex, after the last round
};

Result<PeerOutcome> RunPeer(const PeerOptions& options);

}  // namespace tributary::runtime
