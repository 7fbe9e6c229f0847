#include "launcher/store.h"

#include <sqlite3.h>

#include <sstream>

namespace tributary::launcher {
namespace {

// RAII prepared statement with typed binds; every error names the SQL that failed.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db), sql_(sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement& Bind(int i, const std::string& text) {
    if (ok()) rc_ = sqlite3_bind_blob(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& Bind(int i, int64_t v) {
    if (ok()) rc_ = sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Statement& Bind(int i, double v) {
    if (ok()) rc_ = sqlite3_bind_double(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW -> true, SQLITE_DONE -> false.
  Result<bool> Step() {
    if (!ok()) return Error();
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    rc_ = rc;
    return Error();
  }
  std::string Text(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  double Real(int col) const { return sqlite3_column_double(stmt_, col); }

 private:
  bool ok() const { return rc_ == SQLITE_OK; }
  Status Error() const {
    return IoError(std::string("sqlite: ") + sqlite3_errmsg(db_) + " in: " + sql_);
  }
  sqlite3* db_;
  const char* sql_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

std::string JoinKeys(const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "" : ",") + k;
  return out;
}

std::vector<std::string> SplitKeys(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

RoundRecord ReadRound(const Statement& s) {
  RoundRecord r;
  r.round = static_cast<uint64_t>(s.Int(0));
  r.theta_digest = s.Text(1);
  r.state_digest = s.Text(2);
  r.members = SplitKeys(s.Text(3));
  r.train_loss = s.Real(4);
  r.eval_loss = s.Real(5);
  r.tokens = static_cast<uint64_t>(s.Int(6));
  r.bytes = static_cast<uint64_t>(s.Int(7));
  r.wall_seconds = s.Real(8);
  return r;
}

}  // namespace

Result<std::unique_ptr<CoordinatorStore>> CoordinatorStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string err = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return IoError("cannot open coordinator database '" + path + "': " + err);
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<CoordinatorStore> store(new CoordinatorStore(db));
  TRIB_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode=WAL"));
  TRIB_RETURN_IF_ERROR(store->Exec("PRAGMA synchronous=FULL"));
  TRIB_RETURN_IF_ERROR(store->Exec(R"sql(
    CREATE TABLE IF NOT EXISTS jobs(
      job_id TEXT PRIMARY KEY, spec BLOB NOT NULL, researcher_key TEXT NOT NULL,
      signature BLOB NOT NULL, outcome TEXT NOT NULL DEFAULT '');
    CREATE TABLE IF NOT EXISTS rounds(
      job_id TEXT NOT NULL, round INTEGER NOT NULL, theta_digest BLOB NOT NULL,
      state_digest BLOB NOT NULL, members TEXT NOT NULL, train_loss REAL, eval_loss REAL,
      tokens INTEGER, bytes INTEGER, wall_seconds REAL,
      committed_at REAL DEFAULT (julianday('now')), PRIMARY KEY(job_id, round));
    CREATE TABLE IF NOT EXISTS peers(
      job_id TEXT NOT NULL, peer_key TEXT NOT NULL, name TEXT NOT NULL, shard INTEGER NOT NULL,
      rounds_contributed INTEGER NOT NULL DEFAULT 0, hardware TEXT NOT NULL DEFAULT '',
      PRIMARY KEY(job_id, peer_key));
    CREATE TABLE IF NOT EXISTS reports(
      job_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL,
      peer_key TEXT NOT NULL, theta_digest BLOB NOT NULL,
      PRIMARY KEY(job_id, round, attempt, peer_key));
    CREATE TABLE IF NOT EXISTS peer_states(
      job_id TEXT NOT NULL, round INTEGER NOT NULL, peer_key TEXT NOT NULL, grp INTEGER NOT NULL,
      theta_digest BLOB NOT NULL, state_digest BLOB NOT NULL,
      PRIMARY KEY(job_id, round, peer_key));
    CREATE TABLE IF NOT EXISTS beside_evals(
      job_id TEXT NOT NULL, round INTEGER NOT NULL, peer_key TEXT NOT NULL, loss REAL,
      PRIMARY KEY(job_id, round, peer_key));
    CREATE TABLE IF NOT EXISTS residual_links(
      job_id TEXT NOT NULL, peer_key TEXT NOT NULL, round INTEGER NOT NULL, residual_in BLOB NOT NULL,
      residual_out BLOB NOT NULL, PRIMARY KEY(job_id, peer_key));
    CREATE TABLE IF NOT EXISTS verifier_ledger(
      job_id TEXT PRIMARY KEY, ledger BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS verifier_bans(
      job_id TEXT NOT NULL, peer_key TEXT NOT NULL, reason TEXT NOT NULL,
      PRIMARY KEY(job_id, peer_key));
    CREATE TABLE IF NOT EXISTS verifier_lost_rounds(
      job_id TEXT NOT NULL, peer_key TEXT NOT NULL, round INTEGER NOT NULL,
      PRIMARY KEY(job_id, peer_key, round));
  )sql"));
  return store;
}

CoordinatorStore::~CoordinatorStore() { sqlite3_close(db_); }

Status CoordinatorStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string message = err ? err : "unknown error";
    sqlite3_free(err);
    return IoError("sqlite: " + message);
  }
  return Status::Ok();
}

Status CoordinatorStore::PutJob(const StoredJob& job) {
  Statement s(db_, "INSERT INTO jobs(job_id, spec, researcher_key, signature) VALUES(?1,?2,?3,?4) "
                   "ON CONFLICT(job_id) DO NOTHING");
  s.Bind(1, job.job_id).Bind(2, job.spec_bytes).Bind(3, job.researcher_key).Bind(4, job.signature);
  return s.Step().status();
}

Result<std::vector<StoredJob>> CoordinatorStore::Jobs() {
  Statement s(db_, "SELECT job_id, spec, researcher_key, signature FROM jobs ORDER BY rowid");
  std::vector<StoredJob> out;
  for (;;) {
    TRIB_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back({s.Text(0), s.Text(1), s.Text(2), s.Text(3)});
  }
  return out;
}

Status CoordinatorStore::RecordRound(const std::string& job_id, const RoundRecord& r) {
  TRIB_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  Statement s(db_, "INSERT INTO rounds(job_id, round, theta_digest, state_digest, members, train_loss, "
                   "eval_loss, tokens, bytes, wall_seconds) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)");
  s.Bind(1, job_id).Bind(2, static_cast<int64_t>(r.round)).Bind(3, r.theta_digest)
      .Bind(4, r.state_digest).Bind(5, JoinKeys(r.members)).Bind(6, r.train_loss)
      .Bind(7, r.eval_loss).Bind(8, static_cast<int64_t>(r.tokens)).Bind(9, static_cast<int64_t>(r.bytes))
      .Bind(10, r.wall_seconds);
  Status st = s.Step().status();
  for (const PeerCommit& p : r.peers) {
    if (!st.ok()) break;
    Statement q(db_, "INSERT INTO peer_states(job_id, round, peer_key, grp, theta_digest, state_digest) "
                     "VALUES(?1,?2,?3,?4,?5,?6)");
    q.Bind(1, job_id).Bind(2, static_cast<int64_t>(r.round)).Bind(3, p.key)
        .Bind(4, static_cast<int64_t>(p.group)).Bind(5, p.theta_digest).Bind(6, p.state_digest);
    st = q.Step().status();
  }
  for (const ResidualLink& link : r.residual_links) {
    if (!st.ok()) break;
    Statement q(db_, "INSERT OR REPLACE INTO residual_links(job_id, peer_key, round, residual_in, residual_out) "
                     "VALUES(?1,?2,?3,?4,?5)");
    q.Bind(1, job_id).Bind(2, link.key).Bind(3, static_cast<int64_t>(r.round)).Bind(4, link.residual_in)
        .Bind(5, link.residual_out);
    st = q.Step().status();
  }
  for (const std::string& key : r.beside_evaluators) {
    if (!st.ok()) break;
    Statement q(db_, "INSERT INTO beside_evals(job_id, round, peer_key) VALUES(?1,?2,?3)");
    q.Bind(1, job_id).Bind(2, static_cast<int64_t>(r.round)).Bind(3, key);
    st = q.Step().status();
  }
  for (const std::string& key : r.members) {
    if (!st.ok()) break;
    Statement u(db_, "UPDATE peers SET rounds_contributed = rounds_contributed + 1 "
                     "WHERE job_id = ?1 AND peer_key = ?2");
    u.Bind(1, job_id).Bind(2, key);
    st = u.Step().status();
  }
  if (!st.ok()) {
    (void)Exec("ROLLBACK");
    return st;
  }
  return Exec("COMMIT");
}

Result<std::optional<RoundRecord>> CoordinatorStore::LastRound(const std::string& job_id) {
  Statement s(db_, "SELECT round, theta_digest, state_digest, members, train_loss, eval_loss, tokens, "
                   "bytes, wall_seconds FROM rounds WHERE job_id = ?1 ORDER BY round DESC LIMIT 1");
  s.Bind(1, job_id);
  TRIB_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::optional<RoundRecord>();
  return std::optional<RoundRecord>(ReadRound(s));
}

Result<std::vector<PeerCommit>> CoordinatorStore::PeerCommits(const std::string& job_id, uint64_t round) {
  Statement s(db_, "SELECT peer_key, grp, theta_digest, state_digest FROM peer_states "
                   "WHERE job_id = ?1 AND round = ?2 ORDER BY grp, peer_key");
  s.Bind(1, job_id).Bind(2, static_cast<int64_t>(round));
  std::vector<PeerCommit> out;
  for (;;) {
    TRIB_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back({s.Text(0), static_cast<uint32_t>(s.Int(1)), s.Text(2), s.Text(3)});
  }
  return out;
}

Result<std::vector<ResidualLink>> CoordinatorStore::ResidualLinks(const std::string& job_id) {
  Statement s(db_, "SELECT peer_key, residual_in, residual_out FROM residual_links WHERE job_id = ?1 ORDER BY peer_key");
  s.Bind(1, job_id);
  std::vector<ResidualLink> out;
  for (;;) {
    TRIB_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back({s.Text(0), s.Text(1), s.Text(2)});
  }
  return out;
}

Result<std::vector<RoundRecord>> CoordinatorStore::Rounds(const std::string& job_id) {
  Statement s(db_, "SELECT round, theta_digest, state_digest, members, train_loss, eval_loss, tokens, "
                   "bytes, wall_seconds FROM rounds WHERE job_id = ?1 ORDER BY round");
  s.Bind(1, job_id);
  std::vector<RoundRecord> out;
  for (;;) {
    TRIB_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(ReadRound(s));
  }
  return out;
}

Status CoordinatorStore::UpsertPeer(const std::string& job_id, const StoredPeer& p) {
  Statement s(db_, "INSERT INTO peers(job_id, peer_key, name, shard, hardware) VALUES(?1,?2,?3,?4,?5) "
                   "ON CONFLICT(job_id, peer_key) DO UPDATE SET name = ?3, shard = ?4, hardware = ?5");
  s.Bind(1, job_id).Bind(2, p.key).Bind(3, p.name).Bind(4, static_cast<int64_t>(p.shard)).Bind(5, p.hardware);
  return s.Step().status();
}

Result<std::vector<StoredPeer>> CoordinatorStore::Peers(const std::string& job_id) {
  Statement s(db_, "SELECT peer_key, name, shard, rounds_contributed, hardware FROM peers "
                   "WHERE job_id = ?1 ORDER BY rowid");
  s.Bind(1, job_id);
  std::vector<StoredPeer> out;
  for (;;) {
    TRIB_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back({s.Text(0), s.Text(1), static_cast<uint32_t>(s.Int(2)),
                   static_cast<uint64_t>(s.Int(3)), s.Text(4)});
  }
  return out;
}

Status CoordinatorStore::RecordReport(const std::string& job_id, uint64_t round, uint32_t attempt,
                                      const std::string& peer_key, const std::string& theta_digest) {
  Statement s(db_, "INSERT OR REPLACE INTO reports(job_id, round, attempt, peer_key, theta_digest) "
                   "VALUES(?1,?2,?3,?4,?5)");
  s.Bind(1, job_id).Bind(2, static_cast<int64_t>(round)).Bind(3, static_cast<int64_t>(attempt))
      .Bind(4, peer_key).Bind(5, theta_digest);
  return s.Step().status();
}

Result<CoordinatorStore::BesideEval> CoordinatorStore::RecordBesideEval(const std::string& job_id,
                                                                         uint64_t round,
                                                                         const std::string& key,
                                                                         double loss) {
  TRIB_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  auto round_mean = [&]() -> Result<double> {
    Statement mean(db_, "SELECT AVG(loss) FROM beside_evals WHERE job_id = ?1 AND round = ?2 AND loss IS NOT NULL");
    mean.Bind(1, job_id).Bind(2, static_cast<int64_t>(round));
    TRIB_RETURN_IF_ERROR(mean.Step().status());
    return mean.Real(0);
  };
  auto result = [&]() -> Result<BesideEval> {
    Statement taken(db_, "UPDATE beside_evals SET loss = ?4 "
                         "WHERE job_id = ?1 AND round = ?2 AND peer_key = ?3 AND loss IS NULL");
    taken.Bind(1, job_id).Bind(2, static_cast<int64_t>(round)).Bind(3, key).Bind(4, loss);
    TRIB_RETURN_IF_ERROR(taken.Step().status());
    if (sqlite3_changes(db_) != 1) {
      Statement before(db_, "SELECT loss FROM beside_evals "
                            "WHERE job_id = ?1 AND round = ?2 AND peer_key = ?3 AND loss IS NOT NULL");
      before.Bind(1, job_id).Bind(2, static_cast<int64_t>(round)).Bind(3, key);
      TRIB_ASSIGN_OR_RETURN(bool reported, before.Step());
      if (reported && before.Real(0) == loss) {
        TRIB_ASSIGN_OR_RETURN(double value, round_mean());
        return BesideEval{.mean = value, .repeated = true};
      }
      return NotFound("it was not asked to evaluate round " + std::to_string(round) +
                      " beside training, or has already reported another loss for it");
    }
    TRIB_ASSIGN_OR_RETURN(double value, round_mean());
    Statement update(db_, "UPDATE rounds SET eval_loss = ?3 WHERE job_id = ?1 AND round = ?2");
    update.Bind(1, job_id).Bind(2, static_cast<int64_t>(round)).Bind(3, value);
    TRIB_RETURN_IF_ERROR(update.Step().status());
    if (sqlite3_changes(db_) != 1) {
      return NotFound("job " + job_id + " has no recorded round " + std::to_string(round));
    }
    return BesideEval{.mean = value};
  }();
  if (!result.ok()) {
    (void)Exec("ROLLBACK");
    return result;
  }
  TRIB_RETURN_IF_ERROR(Exec("COMMIT"));
  return result;
}

Status CoordinatorStore::MarkJobFinished(const std::string& job_id, const std::string& outcome) {
  Statement s(db_, "UPDATE jobs SET outcome = ?2 WHERE job_id = ?1");
  s.Bind(1, job_id).Bind(2, outcome);
  return s.Step().status();
}

Result<std::string> CoordinatorStore::JobOutcome(const std::string& job_id) {
  Statement s(db_, "SELECT outcome FROM jobs WHERE job_id = ?1");
  s.Bind(1, job_id);
  TRIB_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return NotFound("unknown job " + job_id);
  return s.Text(0);
}

Status CoordinatorStore::SaveLedger(const std::string& job_id, const std::string& ledger_bytes) {
  Statement s(db_, "INSERT OR REPLACE INTO verifier_ledger(job_id, ledger) VALUES(?1, ?2)");
  s.Bind(1, job_id).Bind(2, ledger_bytes);
  return s.Step().status();
}

Result<std::string> CoordinatorStore::LoadLedger(const std::string& job_id) {
  Statement s(db_, "SELECT ledger FROM verifier_ledger WHERE job_id = ?1");
  s.Bind(1, job_id);
  TRIB_ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? s.Text(0) : std::string();
}

Status CoordinatorStore::BanPeer(const std::string& job_id, const std::string& peer_key,
                                 const std::string& reason) {
  Statement s(db_, "INSERT OR IGNORE INTO verifier_bans(job_id, peer_key, reason) VALUES(?1, ?2, ?3)");
  s.Bind(1, job_id).Bind(2, peer_key).Bind(3, reason);
  return s.Step().status();
}

Result<std::vector<std::pair<std::string, std::string>>> CoordinatorStore::BannedPeers(
    const std::string& job_id) {
  Statement s(db_, "SELECT peer_key, reason FROM verifier_bans WHERE job_id = ?1 ORDER BY peer_key");
  s.Bind(1, job_id);
  std::vector<std::pair<std::string, std::string>> out;
  for (;;) {
    TRIB_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.emplace_back(s.Text(0), s.Text(1));
  }
  return out;
}

Status CoordinatorStore::RecordLostRound(const std::string& job_id, const std::string& peer_key, uint64_t round) {
  Statement s(db_, "INSERT OR IGNORE INTO verifier_lost_rounds(job_id, peer_key, round) VALUES(?1, ?2, ?3)");
  s.Bind(1, job_id).Bind(2, peer_key).Bind(3, static_cast<int64_t>(round));
  return s.Step().status();
}

Result<std::vector<std::pair<std::string, uint64_t>>> CoordinatorStore::LostRounds(const std::string& job_id) {
  Statement s(db_, "SELECT peer_key, round FROM verifier_lost_rounds WHERE job_id = ?1 ORDER BY peer_key, round");
  s.Bind(1, job_id);
  std::vector<std::pair<std::string, uint64_t>> out;
  for (;;) {
    TRIB_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.emplace_back(s.Text(0), static_cast<uint64_t>(s.Int(1)));
  }
  return out;
}

}  // namespace tributary::launcher
