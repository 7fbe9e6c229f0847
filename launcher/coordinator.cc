#include "launcher/coordinator.h"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <map>
#include <mutex>
#include <set>

#include "core/digest.h"
#include "launcher/grouping.h"
#include "launcher/relay.h"
#include "launcher/store.h"
#include "launcher/verification_service.h"
#include "net/connection.h"
#include "net/frame.h"
#include "net/io_thread.h"
#include "net/secure_channel.h"
#include "runtime/job_spec.h"
#include "runtime/ring_topology.h"

namespace tributary::launcher {

namespace asio = boost::asio;
using net::Connection;

namespace {

constexpr const char* kCoordinatorContext = "tributary-coordinator";
constexpr uint32_t kMaxAttemptsPerRound = 20;

enum class PeerState { kSyncing, kReady, kMember };

const char* StateName(PeerState s) {
  switch (s) {
    case PeerState::kSyncing: return "syncing";
    case PeerState::kReady: return "ready";
    case PeerState::kMember: return "member";
  }
  return "?";
}

struct Session {
  uint64_t id = 0;
  std::shared_ptr<Connection> connection;
  bool authenticated = false;
  net::PublicKey key{};
  std::string key_hex;
  bool joined = false;
  std::string job_id;
  std::string name;
  std::string host;
  uint32_t listen_port = 0;
  uint32_t sync_port = 0;
  uint32_t shard = 0;
  v1::Hardware hardware;
  bool relay_only = false;
  PeerState state = PeerState::kSyncing;
  Clock::time_point syncing_since = Clock::now();
  uint64_t sync_sent_for = UINT64_MAX;  // committed round we last told it to fetch
  Clock::time_point joined_at = Clock::now();
  Clock::time_point last_seen = Clock::now();
  uint64_t rounds_contributed = 0;
  double bandwidth = 0;
  std::unique_ptr<asio::steady_timer> hello_timer;
};

// One group of the round in progress. Each group runs its own attempts (retry, report, decide)
// and commits with the others once every group has decided or been dropped.
struct Group {
  uint32_t index = 0;
  enum class State { kRunning, kDecided, kDropped } state = State::kRunning;
  uint32_t attempt = 0;  // RoundStart.attempt: unique within the round across groups
  uint32_t tries = 0;    // attempts of this group
  bool mix = false;      // its members hold different committed states
  std::vector<uint64_t> members;  // session ids, by rank
  std::map<uint64_t, v1::RoundReport> reports;
  std::map<uint64_t, uint32_t> suspicions;  // member -> how many others blamed it this attempt
  std::unique_ptr<asio::steady_timer> round_timer;
  std::unique_ptr<asio::steady_timer> retry_timer;

  bool Has(uint64_t id) const { return std::find(members.begin(), members.end(), id) != members.end(); }
  const char* StateName() const {
    return state == State::kRunning ? "running" : state == State::kDecided ? "decided" : "dropped";
  }
};

// The committed state one peer holds (after the job's last committed round).
struct Held {
  std::string theta_digest, state_digest;  // raw 32 bytes each
};

struct Job {
  std::string id;
  v1::JobSpec spec;
  uint64_t committed_rounds = 0;
  // The reference committed state (raw 32 bytes after the first commit): the largest group's,
  // what late joiners sync to. Grouped rounds leave other groups with other states: `held`.
  std::string state_digest;
  std::string theta_digest;
  std::map<std::string, Held> held;  // key hex -> its committed state after the last round
  enum class Phase { kWaiting, kRunning, kFinished } phase = Phase::kWaiting;
  uint32_t next_attempt = 0;           // of the round in progress (persists across waits)
  std::vector<std::unique_ptr<Group>> groups;  // of the round in progress
  std::set<uint64_t> excluded;              // left out of the rest of this round (unreachable)
  Clock::time_point round_started = Clock::now();
  bool round_started_set = false;
  std::unique_ptr<asio::steady_timer> start_timer;  // re-checks a start delayed for syncing peers
  std::optional<Clock::time_point> gathering_since;  // matchmaking window of the next round
  std::vector<RoundSummary> rounds;
  std::optional<JobOutcome> outcome;
  Clock::time_point started = Clock::now();
  double last_train_loss = 0, last_eval_loss = -1;
  std::map<std::string, uint32_t> shard_of_key;  // remembered across reconnects
  std::unique_ptr<VerificationService> verification;  // when spec.verify_samples() > 0
  runtime::RingTopology topology;  // measured links -> ring order (ring jobs)
  bool finish_after_verification = false;             // the last round's challenges are open
  bool challenged = false;        // verify_before_commit: this round's challenges are drawn
  bool awaiting_verdicts = false;  // ... and its commit waits for them
  bool awaiting_aggregates = false;  // otherwise: the commit waits for the owners' aggregate audits

  uint32_t min_peers() const { return spec.min_peers() ? spec.min_peers() : spec.num_peers(); }
  Millis heartbeat() const { return runtime::HeartbeatInterval(spec); }
  Millis liveness() const { return runtime::LivenessTimeout(spec); }
  // How long a round waits for a peer that is still syncing before starting without it.
  Millis sync_grace() const { return std::min(Millis(spec.round_timeout_ms() / 4), Millis(10000)); }

  // The group (not dropped) of the round in progress that `id` belongs to.
  Group* GroupOf(uint64_t id) const {
    for (const auto& g : groups) {
      if (g->state != Group::State::kDropped && g->Has(id)) return g.get();
    }
    return nullptr;
  }
  Group* GroupAt(uint32_t index) const { return index < groups.size() ? groups[index].get() : nullptr; }
  // The state a peer holds, as far as the coordinator knows (the reference when unknown).
  const std::string& StateOf(const std::string& key_hex) const {
    auto it = held.find(key_hex);
    return it != held.end() ? it->second.state_digest : state_digest;
  }
  // θ digest of a committed state of the last round, if `state` is one.
  std::optional<std::string> ThetaOfCommitted(const std::string& state) const {
    if (state == state_digest) return theta_digest;
    for (const auto& [key, h] : held) {
      if (h.state_digest == state) return h.theta_digest;
    }
    return std::nullopt;
  }
};

std::string Hex(const std::string& raw) {
  auto d = DigestFromBytes(raw);
  return d.ok() ? ToHex(*d) : std::string();
}

}  // namespace

class Coordinator::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(net::IoThread& io, Options options)
      : io_(io),
        strand_(asio::make_strand(io.context())),
        options_(std::move(options)),
        identity_(options_.identity ? *options_.identity : net::Identity::Generate()),
        sweep_timer_(io.context()) {}

  Status Init() {
    TRIB_ASSIGN_OR_RETURN(store_, CoordinatorStore::Open(options_.db_path));
    if (options_.spec) {
      TRIB_RETURN_IF_ERROR(runtime::ValidateJobSpec(*options_.spec));
      TRIB_RETURN_IF_ERROR(AddJob(*options_.spec, "", ""));
      first_job_ = runtime::JobIdOf(*options_.spec);
    }
    TRIB_ASSIGN_OR_RETURN(std::vector<StoredJob> stored, store_->Jobs());
    for (const StoredJob& sj : stored) {
      if (jobs_.count(sj.job_id)) continue;
      v1::JobSpec spec;
      if (!spec.ParseFromString(sj.spec_bytes)) return Corruption("stored job " + sj.job_id + " is unreadable");
      TRIB_RETURN_IF_ERROR(AddJob(spec, sj.researcher_key, sj.signature));
    }
    if (first_job_.empty() && !stored.empty()) first_job_ = stored.front().job_id;
    return Status::Ok();
  }

  Status Listen() {
    TRIB_ASSIGN_OR_RETURN(listener_, net::Listener::Bind(io_.context(), options_.host, options_.port));
    std::weak_ptr<Impl> weak = shared_from_this();
    listener_->AcceptLoop([weak](std::shared_ptr<Connection> c) {
      if (auto self = weak.lock()) asio::post(self->strand_, [self, c] { self->OnAccept(c); });
    });
    TRIB_ASSIGN_OR_RETURN(relay_, RelayServer::Start(io_, options_.host, 0));
    asio::post(strand_, [self = shared_from_this()] { self->ScheduleSweep(); });
    spdlog::info("coordinator {} listening on {}:{} with {} job(s)", net::ShortKey(identity_.public_key()),
                 options_.host, listener_->port(), jobs_.size());
    return Status::Ok();
  }

  void Shutdown() {
    std::promise<void> done;
    relay_.reset();
    asio::post(strand_, [this, &done] {
      shutting_down_ = true;
      if (listener_) listener_->Close();
      sweep_timer_.cancel();
      for (auto& [id, job] : jobs_) {
        CancelGroupTimers(job);
        if (job.start_timer) job.start_timer->cancel();
      }
      for (auto& [id, s] : sessions_) {
        if (s.hello_timer) s.hello_timer->cancel();
        s.connection->Close();
      }
      sessions_.clear();
      done.set_value();
    });
    done.get_future().wait();
  }

  uint16_t port() const { return listener_ ? listener_->port() : 0; }
  net::PublicKey public_key() const { return identity_.public_key(); }
  const std::string& job_id() const { return first_job_; }

  void SetCallback(std::function<void(const RoundSummary&)> cb) {
    std::lock_guard<std::mutex> lock(mu_);
    callback_ = std::move(cb);
  }
  void SetLateEvalCallback(std::function<void(uint64_t, double)> cb) {
    std::lock_guard<std::mutex> lock(mu_);
    late_eval_callback_ = std::move(cb);
  }

  Result<JobOutcome> Wait(std::optional<Deadline> deadline, std::string job_id) {
    if (job_id.empty()) job_id = first_job_;
    std::unique_lock<std::mutex> lock(mu_);
    auto done = [&] { return outcomes_.count(job_id) > 0; };
    if (deadline) {
      if (!cv_.wait_until(lock, *deadline, done)) return DeadlineExceeded("job " + job_id + " still running");
    } else {
      cv_.wait(lock, done);
    }
    return outcomes_.at(job_id);
  }

 private:
  // ------------------------------------------------------------------ jobs
  Status AddJob(const v1::JobSpec& spec, const std::string& researcher_key, const std::string& signature) {
    const std::string id = runtime::JobIdOf(spec);
    if (jobs_.count(id)) return Status::Ok();
    std::string bytes;
    spec.SerializeToString(&bytes);
    TRIB_RETURN_IF_ERROR(store_->PutJob({id, bytes, researcher_key, signature}));
    Job& job = jobs_[id];
    job.id = id;
    job.spec = spec;
    job.start_timer = std::make_unique<asio::steady_timer>(io_.context());
    TRIB_ASSIGN_OR_RETURN(std::optional<RoundRecord> last, store_->LastRound(id));
    if (last) {
      job.committed_rounds = last->round + 1;
      job.state_digest = last->state_digest;
      job.theta_digest = last->theta_digest;
      job.last_train_loss = last->train_loss;
      job.last_eval_loss = last->eval_loss;
      // Who holds which state after that round (grouped rounds differ by group); rounds recorded
      // without per-peer rows had one state for every member.
      TRIB_ASSIGN_OR_RETURN(std::vector<PeerCommit> commits, store_->PeerCommits(id, last->round));
      for (const PeerCommit& c : commits) job.held[c.key] = {c.theta_digest, c.state_digest};
      if (commits.empty()) {
        for (const std::string& key : last->members) job.held[key] = {last->theta_digest, last->state_digest};
      }
    } else {
      // θ_0 as the job's creator published it (empty if not): round 0's chain ends and step-0
      // replays are held to it like any later round's committed θ.
      job.theta_digest = spec.initial_theta_digest();
    }
    TRIB_ASSIGN_OR_RETURN(std::vector<StoredPeer> peers, store_->Peers(id));
    for (const StoredPeer& p : peers) job.shard_of_key[p.key] = p.shard;
    if (spec.verify_samples() > 0) TRIB_RETURN_IF_ERROR(StartVerification(job));
    TRIB_ASSIGN_OR_RETURN(std::string outcome, store_->JobOutcome(id));
    if (!outcome.empty() || job.committed_rounds >= spec.rounds()) {
      job.phase = Job::Phase::kFinished;
      Publish(job, outcome.empty() || outcome == "ok" ? Status::Ok() : Aborted(outcome));
    }
    spdlog::info("hosting job {} ({}, {} mode, {}/{} rounds committed)", id, spec.name(),
                 runtime::ModeName(spec.mode()), job.committed_rounds, spec.rounds());
    return Status::Ok();
  }

  // The job's verifier (launcher/verification_service.h). Bans take effect on the strand after
  // the service returns, so it never re-enters itself through Drop → retry → RoundStart.
  Status StartVerification(Job& job) {
    const std::string job_id = job.id;
    auto send = [this, job_id](const net::PublicKey& to, v1::Envelope e) {
      for (auto& [sid, s] : sessions_) {
        if (s.joined && s.job_id == job_id && s.key == to) {
          Send(s, std::move(e));
          return true;
        }
      }
      return false;
    };
    auto ban = [this, job_id](const net::PublicKey& who, const std::string& why) {
      std::weak_ptr<Impl> weak = shared_from_this();
      asio::post(strand_, [weak, job_id, who, why] {
        auto self = weak.lock();
        if (!self) return;
        for (auto& [sid, s] : self->sessions_) {
          if (s.joined && s.job_id == job_id && s.key == who) {
            return self->Reject(sid, v1::ADMISSION_REFUSED, "banned from job " + job_id + ": " + why);
          }
        }
      });
    };
    TRIB_ASSIGN_OR_RETURN(job.verification,
                          VerificationService::Create(job.spec, job.id, &identity_, store_.get(), send, ban));
    // Openings peer to peer: a prover's state server, where its detached openings are fetched.
    job.verification->SetBulkSources([this, job_id](const net::PublicKey& prover) -> std::optional<v1::Member> {
      for (auto& [sid, s] : sessions_) {
        if (!s.joined || s.job_id != job_id || s.key != prover || s.relay_only || !s.sync_port) continue;
        return StateServerOf(s);
      }
      return std::nullopt;
    });
    return Status::Ok();
  }

  // Members of the decided groups, each with the θ its round started from (its own committed
  // state: groups of the last round differ), which a replay of its step 0 must start from.
  std::vector<VerificationService::Member> VerifierMembers(const Job& job) const {
    std::vector<VerificationService::Member> out;
    for (const auto& g : job.groups) {
      if (g->state != Group::State::kDecided) continue;
      for (uint64_t id : g->members) {
        auto it = sessions_.find(id);
        if (it == sessions_.end()) continue;
        out.push_back({it->second.key, it->second.shard, RoundStartTheta(job, it->second)});
      }
    }
    return out;
  }

  // The θ digest (raw) a member's round starts from: its own committed state (groups of the
  // last round differ), else the job's; before the first commit θ_0 as published in the spec
  // (empty when it is not).
  static std::string RoundStartTheta(const Job& job, const Session& s) {
    auto held = job.held.find(s.key_hex);
    return held != job.held.end() ? held->second.theta_digest : job.theta_digest;
  }

  static uint64_t NowMs() {
    return static_cast<uint64_t>(std::chrono::duration_cast<Millis>(Clock::now().time_since_epoch()).count());
  }

  // A verifier message from a member of `job`; false when the session was refused.
  bool OnVerifierMessage(Job& job, uint64_t id, const v1::Envelope& message) {
    Session& s = sessions_.at(id);
    if (!job.verification) {
      Reject(id, v1::UNEXPECTED_MESSAGE, "job " + job.id + " does not verify");
      return false;
    }
    if (message.has_step_commitment()) {
      Status st = job.verification->OnCommitment(s.key, message.step_commitment(), NowMs());
      if (!st.ok()) {
        Reject(id, v1::UNEXPECTED_MESSAGE, "step commitment refused: " + st.message());
        return false;
      }
    } else if (message.has_opening()) {
      job.verification->OnOpening(s.key, message.opening(), NowMs());
      PostCommitCheck(job.id);
    } else if (message.has_verify_result()) {
      job.verification->OnVerifyResult(s.key, message.verify_result(), NowMs());
    } else if (message.has_contribution_proof()) {
      job.verification->OnContributionProof(s.key, message.contribution_proof());
    }
    return true;
  }

  void SendLedger(uint64_t id, const v1::LedgerRequest& request) {
    v1::Envelope e = net::MakeEnvelope("");
    v1::LedgerReply* reply = e.mutable_ledger_reply();
    reply->set_coordinator_key(net::KeyToBytes(identity_.public_key()));
    for (auto& [job_id, job] : jobs_) {
      if (!job.verification || (!request.job_id().empty() && request.job_id() != job_id)) continue;
      job.verification->FillLedgerReply(*reply, NowMs());
    }
    Send(sessions_.at(id), e);
  }

  // ------------------------------------------------------------------ connections
  void OnAccept(std::shared_ptr<Connection> connection) {
    if (shutting_down_) return connection->Close();
    const uint64_t id = next_session_id_++;
    Session& s = sessions_[id];
    s.id = id;
    s.connection = connection;
    s.hello_timer = std::make_unique<asio::steady_timer>(io_.context(), options_.hello_timeout);
    std::weak_ptr<Impl> weak = shared_from_this();
    s.hello_timer->async_wait([weak, id](const boost::system::error_code& ec) {
      if (ec) return;
      if (auto self = weak.lock()) {
        asio::post(self->strand_, [self, id] {
          auto it = self->sessions_.find(id);
          if (it != self->sessions_.end() && !it->second.joined) {
            self->Reject(id, v1::UNEXPECTED_MESSAGE, "no handshake and Hello within the timeout");
          }
        });
      }
    });
    net::AsyncServerHandshake(connection, identity_, kCoordinatorContext,
                              [weak, id](Result<net::PublicKey> key) {
                                auto self = weak.lock();
                                if (!self) return;
                                asio::post(self->strand_, [self, id, key = std::move(key)] {
                                  self->OnHandshake(id, key);
                                });
                              });
  }

  void OnHandshake(uint64_t id, const Result<net::PublicKey>& key) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    if (!key.ok()) {
      const v1::ErrorCode code = key.status().code() == StatusCode::kProtocolError
                                     ? net::ErrorCodeFor(key.status()) : v1::AUTH_FAILED;
      return Reject(id, code, key.status().message());
    }
    it->second.authenticated = true;
    it->second.key = *key;
    it->second.key_hex = net::KeyToHex(*key);
    ReadNext(id);
  }

  void ReadNext(uint64_t id) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    std::weak_ptr<Impl> weak = shared_from_this();
    it->second.connection->AsyncReceive([weak, id](Result<v1::Envelope> message) {
      auto self = weak.lock();
      if (!self) return;
      asio::post(self->strand_, [self, id, message = std::move(message)]() mutable {
        self->OnMessage(id, std::move(message));
      });
    });
  }

  void OnMessage(uint64_t id, Result<v1::Envelope> message) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    Session& s = it->second;
    if (!message.ok()) {
      if (message.status().code() == StatusCode::kProtocolError) {
        return Reject(id, net::ErrorCodeFor(message.status()), message.status().message());
      }
      return Drop(id, message.status().message());
    }
    Status valid = net::CheckEnvelope(*message, "");
    if (!valid.ok()) return Reject(id, net::ErrorCodeFor(valid), valid.message());
    s.last_seen = Clock::now();
    const auto kind = message->payload_case();
    const bool mutating = kind == v1::Envelope::kHello || kind == v1::Envelope::kRoundReport ||
                          kind == v1::Envelope::kRoundFailed || kind == v1::Envelope::kReady ||
                          kind == v1::Envelope::kLeave || kind == v1::Envelope::kSubmitJob ||
                          kind == v1::Envelope::kStepCommitment || kind == v1::Envelope::kOpening ||
                          kind == v1::Envelope::kVerifyResult;
    if (mutating && !net::VerifyEnvelope(s.key, *message)) {
      return Reject(id, v1::AUTH_FAILED, net::PayloadName(*message) +
                                             " is not signed by the key of this connection (" +
                                             net::ShortKey(s.key) + ")");
    }
    if (kind == v1::Envelope::kHello) {
      if (s.joined) return Reject(id, v1::UNEXPECTED_MESSAGE, "second Hello on one connection");
      if (!OnHello(id, *message)) return;
    } else if (kind == v1::Envelope::kStatusRequest) {
      SendStatus(id);
    } else if (kind == v1::Envelope::kLedgerRequest) {
      SendLedger(id, message->ledger_request());
    } else if (kind == v1::Envelope::kSubmitJob) {
      if (!OnSubmit(id, *message)) return;
    } else {
      if (!s.joined) {
        return Reject(id, v1::UNEXPECTED_MESSAGE, net::PayloadName(*message) + " before Hello");
      }
      if (message->job_id() != s.job_id) {
        return Reject(id, v1::WRONG_JOB, "message for job " + message->job_id() + " on a session of job " + s.job_id);
      }
      Job& job = jobs_.at(s.job_id);
      switch (kind) {
        case v1::Envelope::kHeartbeat: {
          // Answered so that a peer waiting for a round (too few peers yet) keeps hearing us and
          // does not take the quiet for a dead link. Unsigned: it announces nothing.
          v1::Envelope echo = net::MakeEnvelope(s.job_id);
          echo.mutable_heartbeat()->set_committed_rounds(job.committed_rounds);
          s.connection->AsyncSend(echo);
          break;
        }
        case v1::Envelope::kRoundReport:
          if (!OnReport(job, id, message->round_report())) return;
          break;
        case v1::Envelope::kRoundFailed:
          OnRoundFailed(job, id, message->round_failed());
          break;
        case v1::Envelope::kReady:
          if (!OnReady(job, id, message->ready())) return;
          break;
        case v1::Envelope::kStepCommitment:
        case v1::Envelope::kOpening:
        case v1::Envelope::kVerifyResult:
        case v1::Envelope::kContributionProof:
          if (!OnVerifierMessage(job, id, *message)) return;
          break;
        case v1::Envelope::kLeave:
          spdlog::info("peer {} leaves job {}: {}", s.name, job.id, message->leave().reason());
          return Drop(id, "left: " + message->leave().reason());
        default:
          return Reject(id, v1::UNEXPECTED_MESSAGE,
                        "a peer may not send " + net::PayloadName(*message) + " to the coordinator");
      }
    }
    ReadNext(id);
  }

  // Announcements are signed with the coordinator's key: transferable evidence of what each
  // peer was told (rounds, members, commits), checkable offline by anyone with the public key.
  void Send(Session& s, v1::Envelope e) {
    net::SignEnvelope(identity_, e);
    s.connection->AsyncSend(e);
  }

  // Bad input: say why, close this connection, keep serving everyone else.
  void Reject(uint64_t id, v1::ErrorCode code, const std::string& why) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    auto connection = it->second.connection;
    spdlog::error("rejecting {} ({}): {}", connection->remote(),
                  it->second.name.empty() ? "not joined" : it->second.name, why);
    connection->AsyncSend(net::MakeError(it->second.job_id, code, why),
                          [connection](Status) { connection->Close(); });
    Drop(id, why);
  }

  void Drop(uint64_t id, const std::string& why) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    Session s = std::move(it->second);
    sessions_.erase(it);
    if (s.hello_timer) s.hello_timer->cancel();
    s.connection->Close();
    if (!s.joined) return;
    auto job_it = jobs_.find(s.job_id);
    if (job_it == jobs_.end()) return;
    if (job_it->second.phase == Job::Phase::kFinished) {
      spdlog::debug("peer {} disconnected after job {} ended", s.name, s.job_id);
    } else {
      spdlog::warn("peer {} ({}) gone from job {}: {}", s.name, s.connection->remote(), s.job_id, why);
    }
    MemberLost(job_it->second, id, s.name + " (" + s.connection->remote() + "): " + why);
  }

  // ------------------------------------------------------------------ admission
  bool OnHello(uint64_t id, const v1::Envelope& envelope) {
    Session& s = sessions_.at(id);
    const v1::Hello& hello = envelope.hello();
    auto job_it = jobs_.find(envelope.job_id());
    if (job_it == jobs_.end()) {
      Reject(id, v1::UNKNOWN_JOB, "unknown job '" + envelope.job_id() + "'");
      return false;
    }
    Job& job = job_it->second;
    if (hello.role() == v1::ROLE_OBSERVER) {
      s.job_id = job.id;
      s.hello_timer->cancel();
      return true;
    }
    if (hello.role() != v1::ROLE_PEER) {
      Reject(id, v1::UNEXPECTED_MESSAGE, "the coordinator admits roles PEER and OBSERVER only");
      return false;
    }
    Status admitted = Admit(job, s, hello);
    if (!admitted.ok()) {
      Reject(id, v1::ADMISSION_REFUSED, admitted.message());
      return false;
    }
    if ((hello.listen_port() == 0 && !hello.relay_only()) || hello.listen_port() > 65535) {
      Reject(id, v1::UNEXPECTED_MESSAGE, "Hello without a valid listen port (or relay_only)");
      return false;
    }
    // A reconnect replaces the key's previous session.
    for (auto& [other_id, other] : sessions_) {
      if (other_id != id && other.joined && other.job_id == job.id && other.key == s.key) {
        Drop(other_id, "replaced by a new connection from the same key");
        break;
      }
    }
    uint32_t live = 0;
    std::set<uint32_t> used;
    for (auto& [oid, o] : sessions_) {
      if (o.joined && o.job_id == job.id) {
        ++live;
        used.insert(o.shard);
      }
    }
    if (live >= job.spec.num_peers()) {
      Reject(id, v1::JOB_FULL, "job " + job.id + " already has its " +
                                   std::to_string(job.spec.num_peers()) + " peers");
      return false;
    }
    s.joined = true;
    s.job_id = job.id;
    s.hello_timer->cancel();
    s.name = hello.peer_name().empty() ? ("peer-" + net::ShortKey(s.key)) : hello.peer_name();
    s.listen_port = hello.listen_port();
    s.sync_port = hello.sync_port();
    s.hardware = hello.hardware();
    s.relay_only = hello.relay_only();
    const std::string remote = s.connection->remote();
    s.host = remote.substr(0, remote.rfind(':'));
    s.joined_at = Clock::now();
    auto remembered = job.shard_of_key.find(s.key_hex);
    if (remembered != job.shard_of_key.end() && !used.count(remembered->second)) {
      s.shard = remembered->second;
    } else {
      s.shard = 0;
      while (used.count(s.shard)) ++s.shard;
    }
    job.shard_of_key[s.key_hex] = s.shard;
    (void)store_->UpsertPeer(job.id, {s.key_hex, s.name, s.shard, 0, DescribeHardware(s.hardware)});

    // Current: it holds a state some group committed in the last round (not necessarily the
    // reference one: groups end rounds with different states, and a reconnect keeps its own).
    // Or it reported the last round and lost us before hearing it committed (a coordinator
    // that died between recording the round and sending RoundEnd): that state is committed, so
    // the peer commits it too. Without this, every member of that round would come back
    // behind the job and no one would be left to sync from.
    const bool reported_round_committed =
        !hello.reported_state_digest().empty() && hello.committed_rounds() + 1 == job.committed_rounds &&
        job.ThetaOfCommitted(hello.reported_state_digest()).has_value();
    const std::string& held_state = reported_round_committed ? hello.reported_state_digest() : hello.state_digest();
    const bool current = (job.committed_rounds == 0 && hello.committed_rounds() == 0) || reported_round_committed ||
                         (hello.committed_rounds() == job.committed_rounds &&
                          job.ThetaOfCommitted(hello.state_digest()).has_value());
    if (current && job.committed_rounds > 0) job.held[s.key_hex] = {*job.ThetaOfCommitted(held_state), held_state};
    s.state = current ? PeerState::kReady : PeerState::kSyncing;
    s.syncing_since = Clock::now();
    v1::Envelope ack = net::MakeEnvelope(job.id);
    ack.mutable_hello_ack()->set_server_name("tributary-coordinator");
    *ack.mutable_hello_ack()->mutable_spec() = job.spec;
    ack.mutable_hello_ack()->set_shard(s.shard);
    ack.mutable_hello_ack()->set_committed_rounds(job.committed_rounds);
    ack.mutable_hello_ack()->set_state_digest(job.state_digest);
    ack.mutable_hello_ack()->set_relay_port(relay_->port());
    ack.mutable_hello_ack()->set_reported_round_committed(reported_round_committed);
    Send(s, ack);
    spdlog::info("peer {} ({}) joined job {} from {} as shard {} — {}{}", s.name, net::ShortKey(s.key),
                 job.id, remote, s.shard, StateName(s.state),
                 reported_round_committed
                     ? fmt::format(" (it held round {} as reported, which is committed)", hello.committed_rounds())
                     : std::string());
    if (job.phase == Job::Phase::kFinished) {
      v1::Envelope done = net::MakeEnvelope(job.id);
      done.mutable_job_done()->set_rounds(job.committed_rounds);
      Send(s, done);
      return true;
    }
    if (s.state == PeerState::kSyncing) SendSyncInstructions(job);
    // Openings asked for on a connection this peer lost are asked again on the new one.
    if (job.verification) job.verification->OnMemberReconnected(s.key, NowMs());
    MaybeStartRound(job);
    return true;
  }

  Status Admit(const Job& job, const Session& s, const v1::Hello& hello) const {
    if (job.verification && job.verification->IsBanned(s.key)) {
      return FailedPrecondition("this key is banned from job " + job.id + " (caught by the verifier)");
    }
    switch (job.spec.admission()) {
      case v1::ADMISSION_OPEN:
        return Status::Ok();
      case v1::ADMISSION_ALLOWLIST:
        for (const auto& k : job.spec.allowed_keys()) {
          if (k == s.key_hex) return Status::Ok();
        }
        return FailedPrecondition("key " + net::ShortKey(s.key) + " is not on job " + job.id + "'s allowlist");
      case v1::ADMISSION_INVITE: {
        const std::string token_hash = ToHex(Sha256Of(hello.invite_token()));
        for (const auto& t : job.spec.invite_tokens()) {
          if (t == token_hash) return Status::Ok();
        }
        return FailedPrecondition(hello.invite_token().empty() ? "job " + job.id + " needs an invite token"
                                                               : "invalid invite token for job " + job.id);
      }
      default:
        return FailedPrecondition("unknown admission policy");
    }
  }

  static std::string DescribeHardware(const v1::Hardware& hw) {
    return fmt::format("{} × {} cores, {:.1f} GiB{}{}", hw.cpu_model(), hw.cpu_cores(),
                       hw.memory_bytes() / double(1ull << 30), hw.gpu().empty() ? "" : ", " + hw.gpu(),
                       hw.tokens_per_second() > 0 ? fmt::format(", {:.0f} tok/s", hw.tokens_per_second()) : "");
  }

  std::vector<Session*> JobSessions(const Job& job) {
    std::vector<Session*> out;
    for (auto& [id, s] : sessions_) {
      if (s.joined && s.job_id == job.id) out.push_back(&s);
    }
    return out;
  }

  // Where a peer's state server is reached: sync sources, and the bulk of its openings.
  static v1::Member StateServerOf(const Session& s) {
    v1::Member m;
    m.set_peer_name(s.name);
    m.set_host(s.host);
    m.set_port(s.sync_port);
    m.set_public_key(net::KeyToBytes(s.key));
    return m;
  }

  // Late joiners fetch a committed state from peers that hold it: the reference state when a
  // server of it is connected, else the state most connected servers hold (after a grouped
  // round the groups hold different ones; each is a state the job committed).
  void SendSyncInstructions(Job& job) {
    std::map<std::string, std::vector<Session*>> servers;  // state digest -> who serves it
    for (Session* s : JobSessions(job)) {
      if (s->state != PeerState::kSyncing && !s->relay_only && s->sync_port) {
        servers[job.StateOf(s->key_hex)].push_back(s);
      }
    }
    if (servers.empty()) {  // retried when someone holding the state arrives
      size_t waiting = 0;
      for (Session* s : JobSessions(job)) waiting += s->state == PeerState::kSyncing;
      if (waiting > 0) {
        spdlog::warn("job {}: {} peer(s) must sync round {}'s state, but no connected peer serves it; waiting for one",
                     job.id, waiting, job.committed_rounds);
      }
      return;
    }
    std::string target = job.state_digest;
    if (!servers.count(target)) {
      target = std::max_element(servers.begin(), servers.end(), [](const auto& a, const auto& b) {
                 return a.second.size() < b.second.size();
               })->first;
    }
    const std::vector<Session*>& sources = servers.at(target);
    for (Session* s : JobSessions(job)) {
      if (s->state != PeerState::kSyncing || s->sync_sent_for == job.committed_rounds) continue;
      v1::Envelope e = net::MakeEnvelope(job.id);
      v1::SyncState* sync = e.mutable_sync_state();
      sync->set_committed_rounds(job.committed_rounds);
      sync->set_state_digest(target);
      for (Session* src : sources) {
        if (src == s || sync->sources_size() >= 3) continue;
        *sync->add_sources() = StateServerOf(*src);
      }
      if (sync->sources_size() > 0) {
        Send(*s, e);
        s->sync_sent_for = job.committed_rounds;
      }
    }
  }

  bool OnReady(Job& job, uint64_t id, const v1::Ready& ready) {
    Session& s = sessions_.at(id);
    const bool current = ready.committed_rounds() == job.committed_rounds &&
                         (ready.state_digest() == job.state_digest ||
                          (job.committed_rounds > 0 && job.ThetaOfCommitted(ready.state_digest()).has_value()));
    if (current) {
      if (s.state == PeerState::kSyncing) {
        s.state = PeerState::kReady;
        if (job.committed_rounds > 0) {
          job.held[s.key_hex] = {*job.ThetaOfCommitted(ready.state_digest()), ready.state_digest()};
        }
        job.start_timer->cancel();
        spdlog::info("peer {} synced job {} at round {}", s.name, job.id, job.committed_rounds);
        SendSyncInstructions(job);
        MaybeStartRound(job);
      }
      return true;
    }
    if (ready.committed_rounds() < job.committed_rounds) {
      // Behind the job. A peer we counted as current (it missed a commit) must sync first; one
      // whose sync failed gets fresh instructions. Any other stale Ready repeats a request that
      // is already being served (a peer answering queued RoundStarts): resending the
      // instructions would make it download the state again.
      if (s.state != PeerState::kSyncing) {
        s.state = PeerState::kSyncing;
        s.syncing_since = Clock::now();
        s.sync_sent_for = UINT64_MAX;
        MemberLost(job, id, s.name + " (it does not hold round " + std::to_string(job.committed_rounds) + ")");
      } else if (ready.sync_failed()) {
        s.sync_sent_for = UINT64_MAX;
      }
      SendSyncInstructions(job);
      return true;
    }
    Reject(id, v1::UNEXPECTED_MESSAGE, "Ready for a state the job never committed");
    return false;
  }

  // ------------------------------------------------------------------ rounds
  void MaybeStartRound(Job& job) {
    if (job.phase != Job::Phase::kWaiting || job.committed_rounds >= job.spec.rounds()) return;
    std::vector<Session*> ready;
    std::optional<Clock::time_point> wait_until;
    for (Session* s : JobSessions(job)) {
      if (job.excluded.count(s->id)) continue;
      if (s->state != PeerState::kSyncing) {
        ready.push_back(s);
      } else if (Clock::now() < s->syncing_since + job.sync_grace()) {
        const auto until = s->syncing_since + job.sync_grace();
        wait_until = wait_until ? std::max(*wait_until, until) : until;
      }
    }
    if (ready.size() < std::max<uint32_t>(1, job.min_peers())) return;
    if (ready.size() < job.spec.num_peers() && job.spec.gather_ms() > 0) {
      if (!job.gathering_since) job.gathering_since = Clock::now();
      const auto until = *job.gathering_since + Millis(job.spec.gather_ms());
      if (Clock::now() < until) wait_until = wait_until ? std::max(*wait_until, until) : until;
    }
    if (wait_until) {
      // A peer is fetching the committed state right now: give it a moment so it trains in
      // this round instead of waiting a whole round.
      job.start_timer->expires_at(*wait_until);
      std::weak_ptr<Impl> weak = shared_from_this();
      const std::string job_id = job.id;
      job.start_timer->async_wait([weak, job_id](const boost::system::error_code& ec) {
        if (ec) return;
        if (auto self = weak.lock()) {
          asio::post(self->strand_, [self, job_id] { self->MaybeStartRound(self->jobs_.at(job_id)); });
        }
      });
      return;
    }
    StartRound(job, ready);
  }

  // Partitions the ready peers into groups (launcher/grouping.h) and starts each one.
  void StartRound(Job& job, const std::vector<Session*>& ready) {
    job.gathering_since.reset();
    job.start_timer->cancel();
    if (!job.round_started_set) {
      job.round_started = Clock::now();
      job.round_started_set = true;
    }
    job.phase = Job::Phase::kRunning;
    CancelGroupTimers(job);
    job.groups.clear();
    std::vector<std::string> keys;
    for (Session* s : ready) keys.push_back(s->key_hex);
    const auto partition =
        FormGroups(job.id, job.committed_rounds,
                   GroupSizeOfRound(job.spec.group_size(), job.committed_rounds, job.spec.rounds()), keys);
    for (const auto& part : partition) {
      auto group = std::make_unique<Group>();
      group->index = static_cast<uint32_t>(job.groups.size());
      group->round_timer = std::make_unique<asio::steady_timer>(io_.context());
      group->retry_timer = std::make_unique<asio::steady_timer>(io_.context());
      for (size_t i : part) group->members.push_back(ready[i]->id);
      job.groups.push_back(std::move(group));
    }
    for (auto& group : job.groups) {
      std::vector<uint64_t> members = group->members;
      SortByShard(members);
      StartAttempt(job, *group, std::move(members));
    }
    if (job.groups.size() > 1) {
      std::string layout;
      for (const auto& g : job.groups) {
        layout += fmt::format(" [{}{}:", g->index, g->mix ? " mix" : "");
        for (uint64_t id : g->members) layout += " " + sessions_.at(id).name;
        layout += "]";
      }
      spdlog::info("job {} round {}: {} groups of {} ready peers:{}", job.id, job.committed_rounds,
                   job.groups.size(), ready.size(), layout);
    }
  }

  void SortByShard(std::vector<uint64_t>& members) const {
    std::sort(members.begin(), members.end(),
              [this](uint64_t a, uint64_t b) { return sessions_.at(a).shard < sessions_.at(b).shard; });
  }

  void CancelGroupTimers(Job& job) {
    for (auto& g : job.groups) {
      g->round_timer->cancel();
      g->retry_timer->cancel();
    }
  }

  void StartAttempt(Job& job, Group& group, std::vector<uint64_t> members) {
    group.state = Group::State::kRunning;
    group.attempt = job.next_attempt++;
    group.tries++;
    group.members = std::move(members);
    group.reports.clear();
    group.suspicions.clear();
    job.awaiting_verdicts = false;  // a retry collects its reports again
    // Members that hold different committed states (from different groups of the last round)
    // average those states too; when all hold the same one, nothing extra is sent.
    std::set<std::string> states;
    for (uint64_t id : group.members) states.insert(job.StateOf(sessions_.at(id).key_hex));
    group.mix = states.size() > 1;
    v1::RoundStart start;
    start.set_round(job.committed_rounds);
    start.set_attempt(group.attempt);
    start.set_evaluate(runtime::EvaluatesAfterRound(job.spec, job.committed_rounds));
    start.set_mix(group.mix);
    start.set_group(group.index);
    start.set_groups(static_cast<uint32_t>(job.groups.size()));
    {  // Ring order from the members' measured links, or a request to measure them.
      std::vector<std::string> keys;
      bool relayed = false;
      for (uint64_t id : group.members) {
        keys.push_back(net::KeyToBytes(sessions_.at(id).key));
        relayed = relayed || sessions_.at(id).relay_only;
      }
      const auto plan = job.topology.PlanAttempt(keys, runtime::JobUsesRing(job.spec), relayed,
                                                 job.committed_rounds, group.tries - 1);
      std::vector<uint64_t> ordered;
      for (uint32_t i : plan.order) ordered.push_back(group.members[i]);
      group.members = std::move(ordered);
      start.set_probe_links(plan.probe);
    }
    if (job.verification) {
      start.set_challenge_commitment(job.verification->OnRoundStart(job.committed_rounds, job.theta_digest, group.attempt));
    }
    for (size_t r = 0; r < group.members.size(); ++r) {
      Session& s = sessions_.at(group.members[r]);
      s.state = PeerState::kMember;
      v1::Member* m = start.add_members();
      m->set_rank(static_cast<uint32_t>(r));
      m->set_peer_name(s.name);
      m->set_host(s.host);
      m->set_port(s.listen_port);
      m->set_public_key(net::KeyToBytes(s.key));
      if (s.relay_only) {
        // A fresh, single-use token for the edge into this member (see launcher/relay.h).
        m->set_relay_token(ToHex(Sha256Of(job.id + s.key_hex + std::to_string(job.committed_rounds) + "/" +
                                          std::to_string(group.attempt) + "/" + std::to_string(++relay_nonce_) +
                                          DigestToBytes(relay_salt_))));
      }
    }
    for (size_t r = 0; r < group.members.size(); ++r) {
      v1::Envelope e = net::MakeEnvelope(job.id);
      *e.mutable_round_start() = start;
      e.mutable_round_start()->set_your_rank(static_cast<uint32_t>(r));
      Send(sessions_.at(group.members[r]), e);
    }
    if (group.tries > 1) {
      spdlog::warn("job {} round {}{} attempt {} with {} peers", job.id, job.committed_rounds,
                   GroupLabel(job, group), group.attempt, group.members.size());
    }
    const uint64_t round = job.committed_rounds;
    const uint32_t attempt = group.attempt, index = group.index;
    group.round_timer->expires_after(Millis(job.spec.round_timeout_ms()));
    std::weak_ptr<Impl> weak = shared_from_this();
    const std::string job_id = job.id;
    group.round_timer->async_wait([weak, job_id, round, index, attempt](const boost::system::error_code& ec) {
      if (ec) return;
      if (auto self = weak.lock()) {
        asio::post(self->strand_, [self, job_id, round, index, attempt] {
          self->OnRoundDeadline(job_id, round, index, attempt);
        });
      }
    });
  }

  static std::string GroupLabel(const Job& job, const Group& group) {
    return job.groups.size() > 1 ? fmt::format(" group {}/{}", group.index, job.groups.size()) : "";
  }

  // The running group whose current attempt is (round, index, attempt), if any.
  Group* CurrentAttempt(Job& job, uint64_t round, uint32_t index, uint32_t attempt) {
    if (job.phase != Job::Phase::kRunning || job.committed_rounds != round) return nullptr;
    Group* g = job.GroupAt(index);
    return g && g->state == Group::State::kRunning && g->attempt == attempt ? g : nullptr;
  }

  void OnRoundDeadline(const std::string& job_id, uint64_t round, uint32_t index, uint32_t attempt) {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return;
    Job& job = it->second;
    Group* group = CurrentAttempt(job, round, index, attempt);
    if (!group) return;
    std::vector<uint64_t> stragglers;
    for (uint64_t id : group->members) {
      if (!group->reports.count(id)) stragglers.push_back(id);
    }
    for (uint64_t id : stragglers) {
      Reject(id, v1::ROUND_FAILED, "missed the deadline of round " + std::to_string(round) + " (" +
                                       std::to_string(job.spec.round_timeout_ms()) + " ms)");
    }
  }

  // A member is gone before its group's round committed: that group retries with its survivors
  // (their source buffers are intact); every other group carries on.
  void MemberLost(Job& job, uint64_t id, const std::string& who) {
    if (job.phase != Job::Phase::kRunning) return;
    Group* group = job.GroupOf(id);
    if (!group) return;
    std::vector<uint64_t> survivors;
    for (uint64_t m : group->members) {
      if (m != id && sessions_.count(m)) survivors.push_back(m);
    }
    RetryGroup(job, *group, std::move(survivors), "lost " + who);
  }

  void RetryGroup(Job& job, Group& group, std::vector<uint64_t> members, const std::string& why) {
    group.round_timer->cancel();
    group.retry_timer->cancel();
    if (group.tries >= kMaxAttemptsPerRound) {
      return FailJob(job, "round " + std::to_string(job.committed_rounds) + GroupLabel(job, group) + " failed " +
                              std::to_string(group.tries) + " times; last: " + why);
    }
    spdlog::warn("job {} round {}{}: {}; retrying with {} peers", job.id, job.committed_rounds,
                 GroupLabel(job, group), why, members.size());
    const bool single = job.groups.size() == 1;
    if (single) {
      // Newly ready peers join the retry too. With several groups they wait for the next round:
      // the partition of this one is already announced.
      for (Session* s : JobSessions(job)) {
        if (s->state == PeerState::kReady && !job.excluded.count(s->id) &&
            std::find(members.begin(), members.end(), s->id) == members.end()) {
          members.push_back(s->id);
        }
      }
    }
    // Members that no longer wait for this group (e.g. excluded) are ready for the next round.
    for (uint64_t id : group.members) {
      auto it = sessions_.find(id);
      if (it != sessions_.end() && it->second.state == PeerState::kMember &&
          std::find(members.begin(), members.end(), id) == members.end()) {
        it->second.state = PeerState::kReady;
      }
    }
    SortByShard(members);
    if (single && members.size() < std::max<uint32_t>(1, job.min_peers())) {
      job.phase = Job::Phase::kWaiting;
      CancelGroupTimers(job);
      job.groups.clear();
      for (Session* s : JobSessions(job)) {
        if (s->state == PeerState::kMember) s->state = PeerState::kReady;
      }
      spdlog::warn("job {} waits for {} peers (has {})", job.id, job.min_peers(), members.size());
      return;
    }
    if (members.empty()) {
      // Nobody left in this group: the round goes on with the others; its members (if any
      // come back) hold the previous round and sync once it commits.
      group.state = Group::State::kDropped;
      group.members.clear();
      spdlog::warn("job {} round {}{} dropped: no member left", job.id, job.committed_rounds, GroupLabel(job, group));
      return MaybeFinishRound(job);
    }
    StartAttempt(job, group, std::move(members));
  }

  void OnRoundFailed(Job& job, uint64_t id, const v1::RoundFailed& failed) {
    Group* group = job.phase == Job::Phase::kRunning ? job.GroupOf(id) : nullptr;
    if (!group || group->state != Group::State::kRunning || failed.round() != job.committed_rounds ||
        failed.attempt() != group->attempt) {
      return;  // about an attempt that is already over
    }
    spdlog::warn("job {} round {}{} attempt {} failed at {}: {}", job.id, failed.round(), GroupLabel(job, *group),
                 failed.attempt(), sessions_.at(id).name, failed.reason());
    for (uint32_t rank : failed.suspect_ranks()) {
      if (rank < group->members.size() && group->members[rank] != id) ++group->suspicions[group->members[rank]];
    }
    // Usually a member died and its disconnect (or silence) will restart the group; if every
    // member is still alive after a short grace, retry with all of them.
    const std::string job_id = job.id;
    const uint64_t round = job.committed_rounds;
    const uint32_t attempt = group->attempt, index = group->index;
    group->retry_timer->expires_after(job.heartbeat() * 2);
    std::weak_ptr<Impl> weak = shared_from_this();
    group->retry_timer->async_wait([weak, job_id, round, index, attempt](const boost::system::error_code& ec) {
      if (ec) return;
      auto self = weak.lock();
      if (!self) return;
      asio::post(self->strand_, [self, job_id, round, index, attempt] {
        Job& job = self->jobs_.at(job_id);
        Group* group = self->CurrentAttempt(job, round, index, attempt);
        if (!group) return;
        // Every member is alive as far as the coordinator can tell. If members blamed someone,
        // leave out the most blamed (it is alive but unreachable for its group: a partition, a
        // firewall, a frozen process still heartbeating) for the rest of this round; a lone
        // false accusation costs the accused one round, and the accuser is blamed in return if
        // it was the one unreachable. Only while the others still make a quorum: blame spread
        // over many members (a transient, e.g. a ring formed while one member still left the
        // previous attempt) is no verdict, and leaving them all out would stall the round with
        // its ready peers excluded. Then everyone retries; blame accumulates over attempts.
        uint32_t most = 0;
        for (const auto& [m, n] : group->suspicions) most = std::max(most, n);
        std::vector<uint64_t> connected, blamed;
        for (uint64_t m : group->members) {
          if (!self->sessions_.count(m)) continue;
          connected.push_back(m);
          auto it = group->suspicions.find(m);
          if (most > 0 && it != group->suspicions.end() && it->second == most) blamed.push_back(m);
        }
        const size_t quorum = std::max<size_t>(2, job.min_peers());
        if (connected.size() < blamed.size() + quorum) blamed.clear();
        std::vector<uint64_t> alive;
        std::string left_out;
        for (uint64_t m : connected) {
          if (std::find(blamed.begin(), blamed.end(), m) != blamed.end()) {
            job.excluded.insert(m);
            left_out += (left_out.empty() ? "" : ", ") + self->sessions_.at(m).name;
            continue;
          }
          alive.push_back(m);
        }
        self->RetryGroup(job, *group, std::move(alive),
                         left_out.empty() ? "a collective failed with every member alive"
                                          : "members could not reach " + left_out + ", left out of this round");
      });
    });
  }

  bool OnReport(Job& job, uint64_t id, const v1::RoundReport& report) {
    Session& s = sessions_.at(id);
    AcceptEarlierEvals(job, id, report);  // whatever becomes of the report itself
    if (job.phase != Job::Phase::kRunning || report.round() != job.committed_rounds) {
      return true;  // a stale round's report: harmless, ignored
    }
    Group* group = job.GroupOf(id);
    if (!group) {
      bool current_attempt = false;
      for (const auto& g : job.groups) current_attempt = current_attempt || g->attempt == report.attempt();
      if (!current_attempt) return true;  // a stale attempt's report
      Reject(id, v1::UNEXPECTED_MESSAGE, "report from a peer that is not in this round");
      return false;
    }
    if (report.attempt() != group->attempt) return true;  // a stale attempt's report
    const auto rank = std::find(group->members.begin(), group->members.end(), id) - group->members.begin();
    if (report.rank() != static_cast<uint32_t>(rank)) {
      Reject(id, v1::UNEXPECTED_MESSAGE, "report for rank " + std::to_string(report.rank()) +
                                             ", this peer has rank " + std::to_string(rank));
      return false;
    }
    if (group->reports.count(id)) {
      Reject(id, v1::UNEXPECTED_MESSAGE, "duplicate report");
      return false;
    }
    if (report.theta_digest().size() != 32 || report.state_digest().size() != 32) {
      Reject(id, v1::UNEXPECTED_MESSAGE, "θ and state digests must be 32 bytes");
      return false;
    }
    if (job.verification) {
      Status committed = job.verification->CheckReport(s.key, report, static_cast<uint32_t>(group->members.size()),
                                                       RoundStartTheta(job, s));
      if (!committed.ok()) {
        // No root before the report: its steps could be chosen after seeing the challenges.
        job.verification->Ban(s.key, committed.message());
        Reject(id, v1::UNEXPECTED_MESSAGE, committed.message());
        return false;
      }
    }
    job.topology.OnReport(net::KeyToBytes(s.key), report);
    group->reports[id] = report;
    s.bandwidth = report.bandwidth_bytes_per_second();
    (void)store_->RecordReport(job.id, report.round(), report.attempt(), s.key_hex, report.theta_digest());
    if (group->reports.size() == group->members.size()) Decide(job, *group);
    return true;
  }

  // Losses that rank 0s computed beside training for rounds committed earlier. Each is taken
  // once, from a session that was that round's rank 0 of some group, and only when finite; the
  // round's eval loss is their mean over groups, as for losses that come with the round.
  void AcceptEarlierEvals(Job& job, uint64_t id, const v1::RoundReport& report) {
    const Session& s = sessions_.at(id);
    // At most one loss per round of the job: a report stuffed with more is ignored whole,
    // with one warning instead of one per entry.
    if (static_cast<uint64_t>(report.earlier_evals_size()) > job.spec.rounds()) {
      spdlog::warn("job {}: ignoring {} earlier eval losses from {}: the job has {} rounds", job.id,
                   report.earlier_evals_size(), s.name, job.spec.rounds());
      return;
    }
    for (const v1::EarlierEval& e : report.earlier_evals()) {
      // Who was asked is in the store with the round (RoundRecord::beside_evaluators), by key,
      // so a loss that arrives after a coordinator restart still counts.
      Result<CoordinatorStore::BesideEval> taken = InvalidArgument("not a finite, non-negative loss");
      if (std::isfinite(e.loss()) && e.loss() >= 0) taken = store_->RecordBesideEval(job.id, e.round(), s.key_hex, e.loss());
      if (!taken.ok()) {
        spdlog::warn("job {}: ignoring the eval loss {} of round {} from {}: {}", job.id, e.loss(), e.round(),
                     s.name, taken.status().message());
        continue;
      }
      if (taken->repeated) continue;  // resent after a retry: taken before (maybe before a restart)
      const double mean = taken->mean;
      bool newer = false;
      for (RoundSummary& r : job.rounds) {
        if (r.round == e.round()) r.eval_loss = mean;
        newer = newer || (r.round > e.round() && r.eval_loss);
      }
      if (!newer) job.last_eval_loss = mean;
      spdlog::info("round {} eval loss {:.4f} (evaluated beside training by {})", e.round(), mean, s.name);
      std::lock_guard<std::mutex> lock(mu_);
      if (late_eval_callback_) late_eval_callback_(e.round(), mean);
    }
  }

  // Every member of `group` reported: a strict majority of equal (θ, state) digests decides the
  // group's outcome; dissenters are ejected. The round commits once every group is settled.
  void Decide(Job& job, Group& group) {
    std::map<std::string, std::vector<uint64_t>> by_digest;
    for (uint64_t id : group.members) {
      const auto& r = group.reports.at(id);
      by_digest[r.theta_digest() + r.state_digest()].push_back(id);
    }
    auto best = std::max_element(by_digest.begin(), by_digest.end(),
                                 [](const auto& a, const auto& b) { return a.second.size() < b.second.size(); });
    if (by_digest.size() > 1) {
      std::string detail;
      for (const auto& [digest, ids] : by_digest) {
        detail += " [" + Hex(digest.substr(0, 32)).substr(0, 12) + ":";
        for (uint64_t id : ids) detail += " " + sessions_.at(id).name;
        detail += "]";
      }
      if (best->second.size() * 2 <= group.members.size()) {
        const std::string error = "θ digests disagree after round " + std::to_string(job.committed_rounds) +
                                  GroupLabel(job, group) + " with no majority:" + detail;
        v1::Envelope end = net::MakeEnvelope(job.id);
        end.mutable_round_end()->set_round(job.committed_rounds);
        end.mutable_round_end()->set_attempt(group.attempt);
        end.mutable_round_end()->set_ok(false);
        end.mutable_round_end()->set_error(error);
        for (uint64_t id : group.members) Send(sessions_.at(id), end);
        return FailJob(job, error);
      }
      spdlog::error("job {} round {}{}: θ digests disagree{}; the majority commits, dissenters are ejected",
                    job.id, job.committed_rounds, GroupLabel(job, group), detail);
      const std::set<uint64_t> majority(best->second.begin(), best->second.end());
      std::vector<uint64_t> dissenters;
      for (uint64_t id : group.members) {
        if (!majority.count(id)) dissenters.push_back(id);
      }
      group.members = best->second;
      for (uint64_t id : dissenters) {
        Reject(id, v1::ROUND_FAILED, "θ digest disagrees with the majority of round " +
                                         std::to_string(job.committed_rounds));
      }
    }
    group.state = Group::State::kDecided;
    group.round_timer->cancel();
    group.retry_timer->cancel();
    MaybeFinishRound(job);
  }

  // The round is complete when every group has decided or been dropped.
  void MaybeFinishRound(Job& job) {
    if (job.phase != Job::Phase::kRunning) return;
    bool any_decided = false;
    for (const auto& g : job.groups) {
      if (g->state == Group::State::kRunning) return;
      any_decided = any_decided || g->state == Group::State::kDecided;
    }
    if (!any_decided) {  // every group lost all its members: form the round again
      job.phase = Job::Phase::kWaiting;
      CancelGroupTimers(job);
      job.groups.clear();
      for (Session* s : JobSessions(job)) {
        if (s->state == PeerState::kMember) s->state = PeerState::kReady;
      }
      spdlog::warn("job {} round {}: every group was dropped; forming it again", job.id, job.committed_rounds);
      return MaybeStartRound(job);
    }
    // A member the verifier has just banned is still in its group until the posted ban drops it
    // (which retries the group): never commit with it.
    if (HasBannedMember(job)) return;
    if (job.verification && options_.verify_before_commit && !job.challenged) {
      // Challenge before committing: a member convicted meanwhile is banned, which drops it and
      // retries its group without it (the survivors resend their cached Δ), so its contribution
      // never enters θ. The survivors' roots do not change, so the retry commits once its
      // reports are in.
      job.challenged = true;
      job.awaiting_verdicts = true;
      job.verification->OnRoundCommitted(job.committed_rounds, VerifierMembers(job), NowMs());
      return;
    }
    // The owners' aggregates are audited before every commit (with --verify-before-commit these
    // are the aggregates of a retry, which re-shards; the first attempt's were challenged above).
    if (job.verification &&
        job.verification->AuditAggregatesBeforeCommit(job.committed_rounds, VerifierMembers(job), NowMs()) > 0) {
      job.awaiting_aggregates = true;  // PostCommitCheck comes back here once they are settled
      return;
    }
    CommitRound(job);
  }

  // The round's commit waits for its verdicts (--verify-before-commit) or for its owners'
  // aggregate audits (MaybeFinishRound): go on once every verdict is in, every owner passed, or a
  // convicted member's group was retried and has settled again. Posted,
  // because a conviction's ban is posted too (StartVerification): the check must run after it,
  // or the round would commit with the convicted owner still in its group.
  void PostCommitCheck(const std::string& job_id) {
    std::weak_ptr<Impl> weak = shared_from_this();
    asio::post(strand_, [weak, job_id] {
      auto self = weak.lock();
      if (!self) return;
      auto it = self->jobs_.find(job_id);
      if (it == self->jobs_.end() || !it->second.verification) return;
      Job& job = it->second;
      if (job.awaiting_verdicts && !job.verification->busy() && job.phase == Job::Phase::kRunning &&
          self->AllGroupsSettled(job) && !self->HasBannedMember(job)) {
        job.awaiting_verdicts = false;  // every verdict is in and nobody was dropped
        return self->CommitRound(job);
      }
      if (job.awaiting_aggregates && !job.verification->AggregateAuditsOpen(job.committed_rounds) &&
          job.phase == Job::Phase::kRunning && self->AllGroupsSettled(job)) {
        job.awaiting_aggregates = false;
        self->MaybeFinishRound(job);  // audits a retry's new aggregates, else commits
      }
    });
  }

  bool HasBannedMember(const Job& job) const {
    if (!job.verification) return false;
    for (const auto& g : job.groups) {
      if (g->state != Group::State::kDecided) continue;
      for (uint64_t id : g->members) {
        auto it = sessions_.find(id);
        if (it != sessions_.end() && job.verification->IsBanned(it->second.key)) return true;
      }
    }
    return false;
  }

  bool AllGroupsSettled(const Job& job) const {
    if (job.groups.empty()) return false;
    for (const auto& g : job.groups) {
      if (g->state == Group::State::kRunning) return false;
    }
    return true;
  }

  void CommitRound(Job& job) {
    CancelGroupTimers(job);
    std::vector<Group*> decided;
    for (const auto& g : job.groups) {
      if (g->state == Group::State::kDecided) decided.push_back(g.get());
    }
    // The reference state (what late joiners sync to): the largest group's, the first on ties.
    const Group* reference = *std::max_element(decided.begin(), decided.end(), [](const Group* a, const Group* b) {
      return a->members.size() < b->members.size();
    });
    RoundSummary summary;
    summary.job_id = job.id;
    summary.round = job.committed_rounds;
    summary.wall_seconds = SecondsSince(job.round_started);
    RoundRecord record;
    record.round = job.committed_rounds;
    const v1::RoundReport& first = reference->reports.at(reference->members.front());
    record.theta_digest = first.theta_digest();
    record.state_digest = first.state_digest();
    size_t n_members = 0, n_evals = 0;
    double eval_sum = 0;
    for (const Group* g : decided) n_members += g->members.size();
    const double n = static_cast<double>(n_members);
    std::map<std::string, Held> held;
    for (const auto& g : job.groups) summary.attempts = std::max(summary.attempts, g->tries);
    for (const Group* g : decided) {
      GroupSummary gs;
      gs.index = g->index;
      gs.mix = g->mix;
      gs.attempts = g->tries;
      const v1::RoundReport& agreed = g->reports.at(g->members.front());
      gs.theta_digest = Hex(agreed.theta_digest());
      gs.state_digest = Hex(agreed.state_digest());
      for (uint64_t id : g->members) {
        const Session& s = sessions_.at(id);
        const v1::RoundReport& r = g->reports.at(id);
        record.members.push_back(s.key_hex);
        record.peers.push_back({s.key_hex, g->index, r.theta_digest(), r.state_digest()});
        held[s.key_hex] = {r.theta_digest(), r.state_digest()};
        gs.members.push_back(s.name);
        gs.reported_thetas.push_back(Hex(r.theta_digest()));
        summary.train_loss += r.train_loss() / n;
        summary.tokens += r.tokens();
        summary.bytes_sent += r.bytes_sent();
        summary.compute_seconds += r.compute_seconds() / n;
        summary.comm_seconds += r.comm_seconds() / n;
        if (r.has_eval()) {
          eval_sum += r.eval_loss();
          ++n_evals;
        }
      }
      summary.groups.push_back(std::move(gs));
    }
    summary.peers = static_cast<uint32_t>(n_members);
    if (n_evals > 0) summary.eval_loss = eval_sum / static_cast<double>(n_evals);  // mean over groups
    record.train_loss = summary.train_loss;
    record.eval_loss = summary.eval_loss.value_or(-1);
    record.tokens = summary.tokens;
    record.bytes = summary.bytes_sent;
    record.wall_seconds = summary.wall_seconds;
    summary.theta_digest = Hex(record.theta_digest);
    if (runtime::EvaluatesBesideTraining(job.spec, job.committed_rounds)) {
      for (const Group* g : decided) record.beside_evaluators.push_back(sessions_.at(g->members.front()).key_hex);
    }
    if (job.verification) {
      std::vector<net::PublicKey> keys;
      for (const Group* g : decided) {
        for (uint64_t id : g->members) keys.push_back(sessions_.at(id).key);
      }
      record.residual_links = job.verification->CommitResidualLinks(job.committed_rounds, keys);
    }
    // Durable first: peers learn of a commit only once a restarted coordinator would know it.
    Status stored = store_->RecordRound(job.id, record);
    if (!stored.ok()) return FailJob(job, "cannot record round: " + stored.ToString());
    if (options_.crash_after_recording_round == job.committed_rounds) {
      spdlog::critical("fault injection: dying after recording round {}", job.committed_rounds);
      spdlog::default_logger()->flush();
      std::_Exit(75);
    }
    for (const Group* g : decided) {
      v1::Envelope end = net::MakeEnvelope(job.id);
      v1::RoundEnd* re = end.mutable_round_end();
      re->set_round(job.committed_rounds);
      re->set_attempt(g->attempt);
      re->set_ok(true);
      re->set_state_digest(g->reports.at(g->members.front()).state_digest());
      for (uint64_t id : g->members) re->add_theta_digests(g->reports.at(id).theta_digest());
      for (uint64_t id : g->members) {
        Session& s = sessions_.at(id);
        Send(s, end);
        s.state = PeerState::kReady;
        ++s.rounds_contributed;
      }
      if (decided.size() > 1) {
        spdlog::info("job {} round {} group {}/{} committed{}: {} peers, θ {}", job.id, job.committed_rounds,
                     g->index, job.groups.size(), g->mix ? " (mixed)" : "", g->members.size(),
                     Hex(g->reports.at(g->members.front()).theta_digest()).substr(0, 12));
      }
    }
    if (job.verification && !job.challenged) {  // challenges of this round run while the next trains
      job.verification->OnRoundCommitted(job.committed_rounds, VerifierMembers(job), NowMs());
    }
    job.challenged = false;
    job.awaiting_verdicts = false;
    job.awaiting_aggregates = false;
    job.committed_rounds++;
    job.state_digest = record.state_digest;
    job.theta_digest = record.theta_digest;
    job.held = std::move(held);
    job.last_train_loss = summary.train_loss;
    if (summary.eval_loss) job.last_eval_loss = *summary.eval_loss;
    job.next_attempt = 0;
    job.round_started_set = false;
    job.groups.clear();
    job.excluded.clear();
    job.rounds.push_back(summary);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (callback_) callback_(summary);
    }
    job.phase = Job::Phase::kWaiting;
    if (job.committed_rounds >= job.spec.rounds()) {
      if (job.verification && job.verification->busy()) {
        job.finish_after_verification = true;  // Sweep finishes it once every challenge is settled
        return;
      }
      return FinishJob(job);
    }
    // Ready peers outside this round now hold a stale state: they sync like a late joiner.
    for (Session* s : JobSessions(job)) {
      if (s->state == PeerState::kReady && std::find(record.members.begin(), record.members.end(),
                                                     s->key_hex) == record.members.end()) {
        s->state = PeerState::kSyncing;
        s->syncing_since = Clock::now();
      }
    }
    SendSyncInstructions(job);  // anyone syncing needs the new state
    MaybeStartRound(job);
  }

  void FinishJob(Job& job) {
    job.phase = Job::Phase::kFinished;
    (void)store_->MarkJobFinished(job.id, "ok");
    spdlog::info("job {} finished: {} rounds in {:.1f} s", job.id, job.committed_rounds,
                 SecondsSince(job.started));
    v1::Envelope done = net::MakeEnvelope(job.id);
    done.mutable_job_done()->set_rounds(job.committed_rounds);
    net::SignEnvelope(identity_, done);
    auto peers = JobSessions(job);
    if (peers.empty()) return Publish(job, Status::Ok());
    auto remaining = std::make_shared<size_t>(peers.size());
    auto self = shared_from_this();
    const std::string job_id = job.id;
    for (Session* s : peers) {
      s->connection->AsyncSend(done, [self, remaining, job_id](Status) {
        asio::post(self->strand_, [self, remaining, job_id] {
          if (--*remaining == 0) self->Publish(self->jobs_.at(job_id), Status::Ok());
        });
      });
    }
  }

  void FailJob(Job& job, const std::string& reason) {
    if (job.phase == Job::Phase::kFinished) return;
    job.phase = Job::Phase::kFinished;
    CancelGroupTimers(job);
    spdlog::error("job {} aborted: {}", job.id, reason);
    (void)store_->MarkJobFinished(job.id, reason);
    v1::Envelope abort = net::MakeEnvelope(job.id);
    abort.mutable_abort()->set_round(job.committed_rounds);
    abort.mutable_abort()->set_reason(reason);
    for (Session* s : JobSessions(job)) Send(*s, abort);
    Publish(job, Aborted(reason));
  }

  void Publish(const Job& job, Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (outcomes_.count(job.id)) return;
    JobOutcome out;
    out.status = std::move(status);
    out.rounds = job.rounds;
    out.wall_seconds = SecondsSince(job.started);
    outcomes_[job.id] = std::move(out);
    cv_.notify_all();
  }

  // ------------------------------------------------------------------ liveness
  void ScheduleSweep() {
    sweep_timer_.expires_after(kSweepInterval);
    std::weak_ptr<Impl> weak = shared_from_this();
    sweep_timer_.async_wait([weak](const boost::system::error_code& ec) {
      if (ec) return;
      if (auto self = weak.lock()) {
        asio::post(self->strand_, [self] {
          self->Sweep();
          self->ScheduleSweep();
        });
      }
    });
  }

  void Sweep() {
    std::vector<std::pair<uint64_t, std::string>> silent;
    const auto now = Clock::now();
    // While one long handler held this strand (forwarding a large model's openings, say), no
    // heartbeat or opening could be read: that time is not a peer's silence, nor a prover's
    // delay. It is credited to every clock the sweep judges.
    const auto stalled = last_sweep_ == Clock::time_point{} ? Clock::duration::zero()
                                                           : now - last_sweep_ - 2 * kSweepInterval;
    last_sweep_ = now;
    if (stalled > Clock::duration::zero()) {
      spdlog::info("coordinator was busy for {} ms; peers' silence and verifier deadlines are extended by it",
                   std::chrono::duration_cast<Millis>(stalled).count());
      for (auto& [id, s] : sessions_) s.last_seen += stalled;
      for (auto& [job_id, job] : jobs_) {
        if (job.verification) job.verification->ExtendDeadlines(std::chrono::duration_cast<Millis>(stalled).count());
      }
    }
    for (auto& [id, s] : sessions_) {
      if (!s.joined) continue;
      const Job& job = jobs_.at(s.job_id);
      const auto quiet = std::chrono::duration_cast<Millis>(now - s.last_seen);
      if (quiet > job.liveness()) {
        silent.emplace_back(id, "silent for " + std::to_string(quiet.count()) + " ms");
      }
    }
    for (auto& [id, why] : silent) Drop(id, why);
    for (auto& [job_id, job] : jobs_) {
      if (!job.verification) continue;
      job.verification->Sweep(NowMs());  // may convict a silent prover: its ban is posted
      PostCommitCheck(job.id);
      if (job.finish_after_verification && !job.verification->busy() && job.phase != Job::Phase::kFinished) {
        job.finish_after_verification = false;
        FinishJob(job);
      }
    }
  }

  // ------------------------------------------------------------------ observers
  void SendStatus(uint64_t id) {
    v1::Envelope e = net::MakeEnvelope("");
    v1::StatusReply* reply = e.mutable_status_reply();
    for (auto& [job_id, job] : jobs_) {
      v1::JobStatus* js = reply->add_jobs();
      js->set_job_id(job.id);
      js->set_name(job.spec.name());
      js->set_mode(runtime::ModeName(job.spec.mode()));
      js->set_committed_rounds(job.committed_rounds);
      js->set_total_rounds(job.spec.rounds());
      js->set_last_train_loss(job.last_train_loss);
      js->set_last_eval_loss(job.last_eval_loss);
      js->set_phase(job.phase == Job::Phase::kRunning ? "running"
                    : job.phase == Job::Phase::kWaiting ? "waiting for peers" : "finished");
      js->set_group_size(job.spec.group_size());
      for (const auto& g : job.groups) {
        v1::GroupStatus* gs = js->add_groups();
        gs->set_index(g->index);
        gs->set_attempt(g->tries - 1);  // retries, not the wire attempt (unique across groups)
        gs->set_state(g->StateName());
        gs->set_mix(g->mix);
        for (uint64_t id : g->members) {
          auto it = sessions_.find(id);
          if (it != sessions_.end()) gs->add_members(it->second.name);
        }
      }
      for (Session* s : JobSessions(job)) {
        v1::PeerStatus* ps = js->add_peers();
        ps->set_name(s->name);
        ps->set_public_key(s->key_hex);
        ps->set_address(s->host + ":" + std::to_string(s->listen_port));
        ps->set_state(StateName(s->state));
        ps->set_uptime_seconds(SecondsSince(s->joined_at));
        ps->set_rounds_contributed(s->rounds_contributed);
        *ps->mutable_hardware() = s->hardware;
        ps->set_bandwidth_bytes_per_second(s->bandwidth);
      }
    }
    Send(sessions_.at(id), e);
  }

  bool OnSubmit(uint64_t id, const v1::Envelope& envelope) {
    Session& s = sessions_.at(id);
    const v1::JobSpec& spec = envelope.submit_job().spec();
    Status valid = runtime::ValidateJobSpec(spec);
    if (!valid.ok()) {
      Reject(id, v1::UNEXPECTED_MESSAGE, valid.message());
      return false;
    }
    Status added = AddJob(spec, s.key_hex, envelope.signature());
    if (!added.ok()) {
      Reject(id, v1::INTERNAL_ERROR, added.message());
      return false;
    }
    const std::string job_id = runtime::JobIdOf(spec);
    spdlog::info("researcher {} submitted job {}", net::ShortKey(s.key), job_id);
    v1::Envelope reply = net::MakeEnvelope(job_id);
    reply.mutable_submit_job_reply()->set_job_id(job_id);
    Send(s, reply);
    return true;
  }

  net::IoThread& io_;
  asio::strand<asio::io_context::executor_type> strand_;
  Options options_;
  net::Identity identity_;
  std::unique_ptr<CoordinatorStore> store_;
  std::unique_ptr<net::Listener> listener_;
  std::unique_ptr<RelayServer> relay_;
  Digest relay_salt_ = Sha256Of(net::KeyToBytes(net::Identity::Generate().public_key()));  // unguessable
  uint64_t relay_nonce_ = 0;
  asio::steady_timer sweep_timer_;
  static constexpr Millis kSweepInterval{200};
  Clock::time_point last_sweep_{};
  std::string first_job_;
  bool shutting_down_ = false;

  // Strand-only state.
  std::map<uint64_t, Session> sessions_;
  std::map<std::string, Job> jobs_;
  uint64_t next_session_id_ = 0;

  // Shared with waiting threads.
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, JobOutcome> outcomes_;
  std::function<void(const RoundSummary&)> callback_;
  std::function<void(uint64_t, double)> late_eval_callback_;
};

Coordinator::Coordinator(std::unique_ptr<net::IoThread> io, std::shared_ptr<Impl> impl)
    : io_(std::move(io)), impl_(std::move(impl)) {}

Result<std::unique_ptr<Coordinator>> Coordinator::Start(Options options) {
  auto io = std::make_unique<net::IoThread>("coordinator-io");
  auto impl = std::make_shared<Impl>(*io, std::move(options));
  TRIB_RETURN_IF_ERROR(impl->Init());
  TRIB_RETURN_IF_ERROR(impl->Listen());
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(io), std::move(impl)));
}

// The IoThread must outlive every handler that touches Impl: close sockets on the strand, stop
// the thread (which destroys pending handlers and their Impl references), then release Impl.
Coordinator::~Coordinator() {
  impl_->Shutdown();
  // Impl holds a strand of the io_context, so it must die while the context (and its strand
  // service) still exists: dropping it after io_.reset() locked a freed mutex and hung the exit
  // now and then. Release our reference on the io thread, between handlers; a handler still
  // holding one releases it there too, or when the context destroys its queue.
  std::promise<void> released;
  asio::post(io_->context(), [impl = std::move(impl_), &released]() mutable {
    impl.reset();
    released.set_value();
  });
  released.get_future().wait();
  io_.reset();
}

uint16_t Coordinator::port() const { return impl_->port(); }
net::PublicKey Coordinator::public_key() const { return impl_->public_key(); }
const std::string& Coordinator::job_id() const { return impl_->job_id(); }
void Coordinator::OnRound(std::function<void(const RoundSummary&)> cb) { impl_->SetCallback(std::move(cb)); }
void Coordinator::OnLateEval(std::function<void(uint64_t, double)> cb) {
  impl_->SetLateEvalCallback(std::move(cb));
}
Result<JobOutcome> Coordinator::Wait(std::optional<Deadline> deadline, const std::string& job_id) {
  return impl_->Wait(deadline, job_id);
}

}  // namespace tributary::launcher
