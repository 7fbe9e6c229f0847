#include "launcher/coordinator.h"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <future>
#include <map>
#include <mutex>

#include "core/digest.h"
#include "net/connection.h"
#include "net/frame.h"
#include "net/io_thread.h"
#include "runtime/job_spec.h"

namespace tributary::launcher {

namespace asio = boost::asio;
using net::Connection;

namespace {

struct Session {
  uint64_t id = 0;
  std::shared_ptr<Connection> connection;
  bool joined = false;
  std::string name;
  std::string host;
  uint32_t listen_port = 0;
  int rank = -1;
  std::optional<v1::RoundReport> report;
  std::unique_ptr<asio::steady_timer> hello_timer;
};

enum class Phase { kWaitingForPeers, kRunning, kFinished };

}  // namespace

class Coordinator::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(net::IoThread& io, Options options)
      : io_(io),
        strand_(asio::make_strand(io.context())),
        options_(std::move(options)),
        job_id_(runtime::JobIdOf(options_.spec)),
        round_timer_(io.context()) {}

  Status Listen() {
    TRIB_ASSIGN_OR_RETURN(listener_, net::Listener::Bind(io_.context(), options_.host, options_.port));
    std::weak_ptr<Impl> weak = shared_from_this();
    listener_->AcceptLoop([weak](std::shared_ptr<Connection> c) {
      if (auto self = weak.lock()) asio::post(self->strand_, [self, c] { self->OnAccept(c); });
    });
    started_ = Clock::now();
    spdlog::info("coordinator for job {} ({} mode, {} peers, {} rounds) listening on {}:{}", job_id_,
                 runtime::ModeName(options_.spec.mode()), options_.spec.num_peers(),
                 options_.spec.rounds(), options_.host, listener_->port());
    return Status::Ok();
  }

  // Closes everything on the strand and waits for it (never call on the io thread).
  void Shutdown() {
    std::promise<void> done;
    asio::post(strand_, [this, &done] {
      if (listener_) listener_->Close();
      round_timer_.cancel();
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
  const std::string& job_id() const { return job_id_; }

  void SetCallback(std::function<void(const RoundSummary&)> cb) {
    std::lock_guard<std::mutex> lock(mu_);
    callback_ = std::move(cb);
  }

  Result<JobOutcome> Wait(std::optional<Deadline> deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    auto done = [this] { return outcome_.has_value(); };
    if (deadline) {
      if (!cv_.wait_until(lock, *deadline, done)) return DeadlineExceeded("job still running");
    } else {
      cv_.wait(lock, done);
    }
    return *outcome_;
  }

 private:
  // ---- connection lifecycle (strand) ----
  void OnAccept(std::shared_ptr<Connection> connection) {
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
            self->Reject(id, v1::UNEXPECTED_MESSAGE, "no Hello within the handshake timeout");
          }
        });
      }
    });
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
        Reject(id, net::ErrorCodeFor(message.status()), message.status().message());
      } else {
        Drop(id, message.status().message());
      }
      return;
    }
    Status valid = net::CheckEnvelope(*message, job_id_);
    if (!valid.ok()) {
      Reject(id, net::ErrorCodeFor(valid), valid.message());
      return;
    }
    switch (message->payload_case()) {
      case v1::Envelope::kHello:
        if (s.joined) return Reject(id, v1::UNEXPECTED_MESSAGE, "second Hello on one connection");
        OnHello(id, message->hello());
        break;
      case v1::Envelope::kRoundReport:
        if (!s.joined) return Reject(id, v1::UNEXPECTED_MESSAGE, "RoundReport before Hello");
        OnReport(id, message->round_report());
        break;
      case v1::Envelope::kAbort:
        if (!s.joined) return Reject(id, v1::UNEXPECTED_MESSAGE, "Abort before Hello");
        FailJob("peer " + s.name + " (" + s.connection->remote() + ") failed round " +
                std::to_string(message->abort().round()) + ": " + message->abort().reason());
        return;
      default:
        return Reject(id, v1::UNEXPECTED_MESSAGE,
                      "a peer may not send " + net::PayloadName(*message) + " to the coordinator");
    }
    ReadNext(id);
  }

  // Bad input: say why, close this connection, keep serving everyone else.
  void Reject(uint64_t id, v1::ErrorCode code, const std::string& why) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    auto connection = it->second.connection;
    spdlog::error("rejecting {} ({}): {}", connection->remote(),
                  it->second.name.empty() ? "not joined" : it->second.name, why);
    connection->AsyncSend(net::MakeError(job_id_, code, why),
                          [connection](Status) { connection->Close(); });
    Drop(id, why);
  }

  void Drop(uint64_t id, const std::string& why) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    Session s = std::move(it->second);
    sessions_.erase(it);
    if (s.hello_timer) s.hello_timer->cancel();
    if (!s.joined) return;
    if (phase_ == Phase::kWaitingForPeers) {
      spdlog::warn("peer {} ({}) left before the job started: {}", s.name, s.connection->remote(), why);
      return;
    }
    s.connection->Close();
    if (phase_ == Phase::kRunning) {
      FailJob("peer " + s.name + " (" + s.connection->remote() + ", rank " + std::to_string(s.rank) +
              ") disconnected during round " + std::to_string(round_) + ": " + why);
    }
  }

  // ---- job logic (strand) ----
  void OnHello(uint64_t id, const v1::Hello& hello) {
    Session& s = sessions_[id];
    if (hello.role() != v1::ROLE_PEER) {
      return Reject(id, v1::UNEXPECTED_MESSAGE, "the coordinator only admits role PEER here");
    }
    if (phase_ != Phase::kWaitingForPeers || JoinedCount() >= options_.spec.num_peers()) {
      return Reject(id, v1::JOB_FULL, "job " + job_id_ + " already has its " +
                                          std::to_string(options_.spec.num_peers()) + " peers");
    }
    if (hello.listen_port() == 0 || hello.listen_port() > 65535) {
      return Reject(id, v1::UNEXPECTED_MESSAGE, "Hello without a valid listen port");
    }
    s.joined = true;
    s.hello_timer->cancel();
    s.name = hello.peer_name().empty() ? ("peer-" + std::to_string(id)) : hello.peer_name();
    s.listen_port = hello.listen_port();
    const std::string remote = s.connection->remote();
    s.host = remote.substr(0, remote.rfind(':'));
    v1::Envelope ack = net::MakeEnvelope(job_id_);
    ack.mutable_hello_ack()->set_server_name("tributary-coordinator");
    *ack.mutable_hello_ack()->mutable_spec() = options_.spec;
    s.connection->AsyncSend(ack);
    spdlog::info("peer {} joined from {} ({}/{})", s.name, remote, JoinedCount(),
                 options_.spec.num_peers());
    if (JoinedCount() == options_.spec.num_peers()) {
      phase_ = Phase::kRunning;
      StartRound();
    }
  }

  uint32_t JoinedCount() const {
    uint32_t n = 0;
    for (const auto& [id, s] : sessions_) n += s.joined ? 1 : 0;
    return n;
  }

  std::vector<Session*> Members() {
    std::vector<Session*> out;
    for (auto& [id, s] : sessions_) {
      if (s.joined) out.push_back(&s);
    }
    return out;  // ordered by session id == join order
  }

  void StartRound() {
    auto members = Members();
    v1::RoundStart start;
    start.set_round(round_);
    start.set_evaluate(true);
    for (size_t r = 0; r < members.size(); ++r) {
      members[r]->rank = static_cast<int>(r);
      members[r]->report.reset();
      v1::Member* m = start.add_members();
      m->set_rank(static_cast<uint32_t>(r));
      m->set_peer_name(members[r]->name);
      m->set_host(members[r]->host);
      m->set_port(members[r]->listen_port);
    }
    for (Session* s : members) {
      v1::Envelope e = net::MakeEnvelope(job_id_);
      *e.mutable_round_start() = start;
      e.mutable_round_start()->set_your_rank(static_cast<uint32_t>(s->rank));
      s->connection->AsyncSend(e);
    }
    round_started_ = Clock::now();
    round_timer_.expires_after(Millis(options_.spec.round_timeout_ms()));
    std::weak_ptr<Impl> weak = shared_from_this();
    const uint64_t round = round_;
    round_timer_.async_wait([weak, round](const boost::system::error_code& ec) {
      if (ec) return;
      if (auto self = weak.lock()) {
        asio::post(self->strand_, [self, round] { self->OnRoundTimeout(round); });
      }
    });
  }

  void OnRoundTimeout(uint64_t round) {
    if (phase_ != Phase::kRunning || round != round_) return;
    std::string missing;
    for (Session* s : Members()) {
      if (!s->report) missing += (missing.empty() ? "" : ", ") + s->name;
    }
    FailJob("round " + std::to_string(round) + " exceeded its deadline of " +
            std::to_string(options_.spec.round_timeout_ms()) + " ms; no report from " + missing);
  }

  void OnReport(uint64_t id, const v1::RoundReport& report) {
    Session& s = sessions_[id];
    if (phase_ != Phase::kRunning) return;
    if (report.round() != round_ || report.rank() != static_cast<uint32_t>(s.rank)) {
      return Reject(id, v1::UNEXPECTED_MESSAGE,
                    "report for round " + std::to_string(report.round()) + " rank " +
                        std::to_string(report.rank()) + ", expected round " +
                        std::to_string(round_) + " rank " + std::to_string(s.rank));
    }
    if (s.report) return Reject(id, v1::UNEXPECTED_MESSAGE, "duplicate report");
    if (report.theta_digest().size() != 32) {
      return Reject(id, v1::UNEXPECTED_MESSAGE, "θ digest must be 32 bytes");
    }
    s.report = report;
    auto members = Members();
    for (Session* m : members) {
      if (!m->report) return;
    }
    FinishRound(members);
  }

  void FinishRound(const std::vector<Session*>& members) {
    round_timer_.cancel();
    RoundSummary summary;
    summary.round = round_;
    summary.peers = static_cast<uint32_t>(members.size());
    summary.wall_seconds = SecondsSince(round_started_);
    const std::string& reference = members.front()->report->theta_digest();
    std::string disagreement;
    v1::Envelope end = net::MakeEnvelope(job_id_);
    end.mutable_round_end()->set_round(round_);
    for (Session* m : members) {
      const v1::RoundReport& r = *m->report;
      summary.train_loss += r.train_loss() / members.size();
      summary.tokens += r.tokens();
      summary.bytes_sent += r.bytes_sent();
      summary.compute_seconds += r.compute_seconds() / members.size();
      summary.comm_seconds += r.comm_seconds() / members.size();
      if (r.has_eval()) summary.eval_loss = r.eval_loss();
      end.mutable_round_end()->add_theta_digests(r.theta_digest());
      if (r.theta_digest() != reference) {
        disagreement += " " + m->name + "=" + ToHex(*DigestFromBytes(r.theta_digest())).substr(0, 12);
      }
    }
    summary.theta_digest = ToHex(*DigestFromBytes(reference));
    if (!disagreement.empty()) {
      const std::string error = "θ digests disagree after round " + std::to_string(round_) + ": " +
                                members.front()->name + "=" + summary.theta_digest.substr(0, 12) +
                                disagreement;
      end.mutable_round_end()->set_ok(false);
      end.mutable_round_end()->set_error(error);
      for (Session* m : members) m->connection->AsyncSend(end);
      FailJob(error);
      return;
    }
    end.mutable_round_end()->set_ok(true);
    for (Session* m : members) m->connection->AsyncSend(end);
    rounds_.push_back(summary);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (callback_) callback_(summary);
    }
    ++round_;
    if (round_ < options_.spec.rounds()) {
      StartRound();
      return;
    }
    FinishJob(members);
  }

  void FinishJob(const std::vector<Session*>& members) {
    phase_ = Phase::kFinished;
    spdlog::info("job {} finished: {} rounds in {:.1f} s", job_id_, rounds_.size(),
                 SecondsSince(started_));
    v1::Envelope done = net::MakeEnvelope(job_id_);
    done.mutable_job_done()->set_rounds(round_);
    // Publish the outcome only once every peer's JobDone is on the wire (or failed).
    auto remaining = std::make_shared<size_t>(members.size());
    auto self = shared_from_this();
    for (Session* m : members) {
      m->connection->AsyncSend(done, [self, remaining](Status) {
        asio::post(self->strand_, [self, remaining] {
          if (--*remaining == 0) self->Publish(Status::Ok());
        });
      });
    }
  }

  void FailJob(const std::string& reason) {
    if (phase_ == Phase::kFinished) return;
    phase_ = Phase::kFinished;
    round_timer_.cancel();
    spdlog::error("job {} aborted: {}", job_id_, reason);
    v1::Envelope abort = net::MakeEnvelope(job_id_);
    abort.mutable_abort()->set_round(round_);
    abort.mutable_abort()->set_reason(reason);
    for (Session* m : Members()) m->connection->AsyncSend(abort);
    Publish(Aborted(reason));
  }

  void Publish(Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (outcome_) return;
    JobOutcome out;
    out.status = std::move(status);
    out.rounds = rounds_;
    out.wall_seconds = SecondsSince(started_);
    outcome_ = std::move(out);
    cv_.notify_all();
  }

  net::IoThread& io_;
  asio::strand<asio::io_context::executor_type> strand_;
  Options options_;
  std::string job_id_;
  std::unique_ptr<net::Listener> listener_;
  asio::steady_timer round_timer_;

  // Strand-only state.
  std::map<uint64_t, Session> sessions_;
  uint64_t next_session_id_ = 0;
  Phase phase_ = Phase::kWaitingForPeers;
  uint64_t round_ = 0;
  Clock::time_point started_ = Clock::now();
  Clock::time_point round_started_ = Clock::now();
  std::vector<RoundSummary> rounds_;

  // Shared with waiting threads.
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<JobOutcome> outcome_;
  std::function<void(const RoundSummary&)> callback_;
};

Coordinator::Coordinator(std::unique_ptr<net::IoThread> io, std::shared_ptr<Impl> impl)
    : io_(std::move(io)), impl_(std::move(impl)) {}

Result<std::unique_ptr<Coordinator>> Coordinator::Start(Options options) {
  TRIB_RETURN_IF_ERROR(runtime::ValidateJobSpec(options.spec));
  auto io = std::make_unique<net::IoThread>("coordinator-io");
  auto impl = std::make_shared<Impl>(*io, std::move(options));
  TRIB_RETURN_IF_ERROR(impl->Listen());
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(io), std::move(impl)));
}

// The IoThread must outlive every handler that touches Impl: close sockets on the strand, stop
// the thread (which destroys pending handlers and their Impl references), then release Impl.
Coordinator::~Coordinator() {
  impl_->Shutdown();
  io_.reset();
  impl_.reset();
}

uint16_t Coordinator::port() const { return impl_->port(); }
const std::string& Coordinator::job_id() const { return impl_->job_id(); }
void Coordinator::OnRound(std::function<void(const RoundSummary&)> cb) { impl_->SetCallback(std::move(cb)); }
Result<JobOutcome> Coordinator::Wait(std::optional<Deadline> deadline) { return impl_->Wait(deadline); }

}  // namespace tributary::launcher
