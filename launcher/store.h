// CoordinatorStore: the coordinator's durable state in SQLite (WAL, synchronous=FULL): jobs,
// peers (by public key), committed rounds and every round report. A round is recorded *before*
// the coordinator tells peers it is committed, so a coordinator killed at any instant restarts
// from a round every peer also has (or can sync). Not thread-safe: the coordinator's strand
// owns it.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

struct sqlite3;

namespace tributary::launcher {

struct StoredJob {
  std::string job_id;
  std::string spec_bytes;      // serialised v1::JobSpec
  std::string researcher_key;  // hex, empty for jobs started by a local command
  std::string signature;       // researcher's signature over spec_bytes (raw), may be empty
};

// What one peer holds after a committed round. Grouped rounds (JobSpec.group_size) end with
// different states in different groups, so the coordinator keeps one per peer.
struct PeerCommit {
  std::string key;           // hex
  uint32_t group = 0;        // its group in that round
  std::string theta_digest;  // 32 raw bytes
  std::string state_digest;  // 32 raw bytes
};

// A verifying DiLoCo job: the error-feedback residual digests (verifier::ContributionManifest)
// that a member's manifest of a committed round stated; its next manifest must continue them.
struct ResidualLink {
  std::string key;           // hex
  std::string residual_in;   // 32 raw bytes
  std::string residual_out;  // 32 raw bytes
};

struct RoundRecord {
  uint64_t round = 0;            // the round that completed (0-based)
  std::string theta_digest;      // 32 raw bytes
  std::string state_digest;      // 32 raw bytes: SHA-256 of the canonical committed state
  std::vector<std::string> members;  // peer keys (hex) whose contribution is in this round
  double train_loss = 0;
  double eval_loss = -1;
  uint64_t tokens = 0;
  uint64_t bytes = 0;
  double wall_seconds = 0;
  // Per member (written in the same transaction). theta/state_digest above are then the
  // reference state: the one late joiners sync to (the largest group's).
  std::vector<PeerCommit> peers;
  // eval_beside_training: the peers (keys, hex) asked to report this round's eval loss later,
  // each group's rank 0. Written with the round, so a restarted coordinator still takes them.
  std::vector<std::string> beside_evaluators;
  // Each member's residual link of this round (verifying DiLoCo jobs), replacing its last one.
  std::vector<ResidualLink> residual_links;
};

struct StoredPeer {
  std::string key;  // hex
  std::string name;
  uint32_t shard = 0;
  uint64_t rounds_contributed = 0;
  std::string hardware;  // human-readable summary
};

class CoordinatorStore {
 public:
  // `path` may be ":memory:" for tests.
  static Result<std::unique_ptr<CoordinatorStore>> Open(const std::string& path);
  ~CoordinatorStore();

  Status PutJob(const StoredJob& job);  // idempotent for the same id and bytes
  Result<std::vector<StoredJob>> Jobs();
  Status RecordRound(const std::string& job_id, const RoundRecord& record);
  // An eval loss that arrived after its round was recorded (JobSpec.eval_beside_training).
  // Takes the eval loss `key` computed beside training for `round`, once: NotFound unless `key`
  // was asked for it (RoundRecord::beside_evaluators) and has not reported it yet. The round's
  // eval loss becomes the mean of the losses in so far (one per group); returns that mean.
  // The same loss from the same key again (a peer resends what a report lost with a crashed
  // coordinator may have carried) changes nothing and comes back `repeated`; a different one
  // is NotFound.
  struct BesideEval {
    double mean = 0;
    bool repeated = false;
  };
  Result<BesideEval> RecordBesideEval(const std::string& job_id, uint64_t round,
                                      const std::string& key, double loss);
  Result<std::optional<RoundRecord>> LastRound(const std::string& job_id);
  Result<std::vector<RoundRecord>> Rounds(const std::string& job_id);
  // The per-peer states of one committed round (empty for rounds recorded without them).
  Result<std::vector<PeerCommit>> PeerCommits(const std::string& job_id, uint64_t round);
  // Each peer's residual link from the last committed round it was in.
  Result<std::vector<ResidualLink>> ResidualLinks(const std::string& job_id);
  Status UpsertPeer(const std::string& job_id, const StoredPeer& peer);
  Result<std::vector<StoredPeer>> Peers(const std::string& job_id);
  Status RecordReport(const std::string& job_id, uint64_t round, uint32_t attempt,
                      const std::string& peer_key, const std::string& theta_digest);
  Status MarkJobFinished(const std::string& job_id, const std::string& outcome);
  Result<std::string> JobOutcome(const std::string& job_id);  // "" while running

  // Verifier (launcher/verification_service.h): the job's ledger as verifier::Ledger::Encode
  // bytes (rewritten after every change; "" when there is none), and the peers banned from it.
  Status SaveLedger(const std::string& job_id, const std::string& ledger_bytes);
  Result<std::string> LoadLedger(const std::string& job_id);
  Status BanPeer(const std::string& job_id, const std::string& peer_key, const std::string& reason);
  Result<std::vector<std::pair<std::string, std::string>>> BannedPeers(const std::string& job_id);  // key, reason
  // Rounds whose openings a peer lost (Opening.not_held) and was forgiven.
  Status RecordLostRound(const std::string& job_id, const std::string& peer_key, uint64_t round);
  Result<std::vector<std::pair<std::string, uint64_t>>> LostRounds(const std::string& job_id);  // key, round

 private:
  explicit CoordinatorStore(sqlite3* db) : db_(db) {}
  Status Exec(const std::string& sql);
  sqlite3* db_;
};

}  // namespace tributary::launcher
