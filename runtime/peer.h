// The peer process: joins a coordinator, trains its shard, and averages with its group.
//
// RunPeer blocks until the job is done, the peer is asked to stop (Ctrl-C: it sends Leave and
// returns), or something unrecoverable happens (refused admission, job aborted, corpus
// mismatch, coordinator gone for longer than reconnect_timeout). Recoverable failures are
// handled inside: a failed collective is reported and the round retried with whoever the
// coordinator names (the pseudo-gradient is kept, so the retry is exact); a lost coordinator
// connection is re-established and the peer rejoins with its committed state; a late joiner
// fetches the committed state from other peers and verifies it before its first round.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include "core/status.h"
#include "net/identity.h"
#include "proto/tributary.pb.h"

namespace tributary::runtime {

struct AdversaryHooks;  // runtime/verification.h

struct PeerOptions {
  std::string coordinator_host = "127.0.0.1";
  uint16_t coordinator_port = 0;
  std::optional<net::PublicKey> coordinator_key;  // checked in the handshake when given
  std::string job_id;                    // must match the coordinator's job
  std::string name;                      // shown in logs and status
  std::string identity_path;             // Ed25519 key file; empty = a fresh key per run
  std::string invite_token;              // for jobs admitting by invitation
  std::string listen_host = "127.0.0.1"; // where other peers reach this one
  std::string corpus_dir;                // local copy of the job's corpus
  std::string checkpoint_dir;            // empty = no checkpoints
  std::string device = "cpu";            // where this peer trains and replays: cpu, cuda, cuda:N
  int connect_timeout_ms = 10000;
  int reconnect_timeout_ms = 60000;      // how long to keep trying a lost coordinator
  bool relay_only = false;               // behind NAT: accept nothing, use the coordinator's relay
  const std::atomic<bool>* stop = nullptr;  // set (e.g. by SIGINT) to leave gracefully
  // Attack harness only (tributary_adversary): injected misbehaviour. Null in every normal peer.
  const AdversaryHooks* adversary = nullptr;
};

struct PeerOutcome {
  uint64_t rounds_completed = 0;   // rounds of the job this peer holds the state of
  uint64_t rounds_contributed = 0; // rounds whose average includes this peer's work
  double last_eval_loss = -1;      // when this peer evaluated (rank 0)
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  std::string theta_digest;        // hex, after the last committed round
  bool left_early = false;         // stopped on request
};

Result<PeerOutcome> RunPeer(const PeerOptions& options);

// What this machine is (CPU model, cores, memory; GPU when one is visible).
v1::Hardware DetectHardware();

}  // namespace tributary::runtime
