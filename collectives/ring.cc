#include "collectives/ring.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "collectives/dial.h"
#include "net/secure_channel.h"

namespace tributary::collectives {
namespace {

using namespace std::chrono_literals;

// Accepting is done in short slices so that hellos on connections accepted earlier are noticed
// while we also keep accepting: a silent connection must not block the real neighbour.
constexpr Millis kAcceptSlice{10};
constexpr Millis kCancelPoll{50};
constexpr const char* kCancelled = "gave up forming the ring: the attempt was superseded";
constexpr Millis kRejectSendTimeout{1000};

std::string Describe(const RingMember& m, const net::Connection* c) {
  std::string out = "rank " + std::to_string(m.rank) + " '" + m.name + "' at ";
  return out + (c ? c->remote() : m.host + ":" + std::to_string(m.port));
}

Status ValidateMembers(uint32_t my_rank, const std::vector<RingMember>& members) {
  if (members.empty()) return InvalidArgument("ring needs at least one member");
  if (my_rank >= members.size()) {
    return InvalidArgument("rank " + std::to_string(my_rank) + " is outside a ring of " +
                           std::to_string(members.size()));
  }
  for (size_t i = 0; i < members.size(); ++i) {
    if (members[i].rank != i) {
      return InvalidArgument("ring members must be ordered by rank: position " + std::to_string(i) +
                             " holds rank " + std::to_string(members[i].rank));
    }
  }
  return Status::Ok();
}

Result<std::shared_ptr<net::Connection>> DialMember(net::IoThread& io, const RingMember& to,
                                                    Deadline deadline,
                                                    const FormControl* control = nullptr) {
  return DialWithRetry(io, to.host, to.port, deadline,
                       control ? control->cancelled : std::function<bool()>(), kCancelled);
}

// Connects to the relay that carries the edge into `member` and presents the edge's token.
Result<std::shared_ptr<net::Connection>> DialRelay(net::IoThread& io, const RingMember& member,
                                                   const std::string& job_id, Deadline deadline) {
  RingMember relay = member;
  relay.host = member.relay_host;
  relay.port = member.relay_port;
  TRIB_ASSIGN_OR_RETURN(auto conn, DialMember(io, relay, deadline));
  v1::Envelope join = net::MakeEnvelope(job_id);
  join.mutable_relay_join()->set_token(member.relay_token);
  TRIB_RETURN_IF_ERROR(conn->Send(join, deadline).WithContext("joining the relay"));
  return conn;
}

Status CheckRingHello(const v1::Envelope& env, const std::string& job_id, uint32_t want_rank,
                      uint64_t round, uint32_t attempt) {
  TRIB_RETURN_IF_ERROR(net::CheckEnvelope(env, job_id));
  if (!env.has_hello()) return ProtocolError("expected a hello, got " + net::PayloadName(env));
  const v1::Hello& h = env.hello();
  if (h.role() != v1::ROLE_RING_NEIGHBOR) {
    return ProtocolError("hello with role " + v1::Role_Name(h.role()) +
                         " on the ring port (expected ROLE_RING_NEIGHBOR)");
  }
  if (h.rank() != want_rank) {
    return ProtocolError("ring hello from rank " + std::to_string(h.rank()) + ", expected rank " +
                         std::to_string(want_rank));
  }
  // Prev heard its RoundStart before we heard ours: we are behind, it is not wrong.
  if (HelloIsAhead(h.round(), h.attempt(), round, attempt)) {
    return Unavailable("ring hello for round " + std::to_string(h.round()) + " attempt " + std::to_string(h.attempt()) +
                       ", which this rank has not started (it forms round " + std::to_string(round) + " attempt " +
                       std::to_string(attempt) + ")");
  }
  if (h.round() != round) {
    return ProtocolError("ring hello for round " + std::to_string(h.round()) + ", expected round " +
                         std::to_string(round));
  }
  if (h.attempt() != attempt) {
    return ProtocolError("ring hello for attempt " + std::to_string(h.attempt()) + " of round " +
                         std::to_string(round) + ", expected attempt " + std::to_string(attempt));
  }
  return Status::Ok();
}

// What arrives while forming: hellos on accepted connections, and next's reply to our hello.
// Filled by receive handlers on the io thread; shared with them so it outlives Form.
struct Inbox {
  struct Hello {
    std::shared_ptr<net::Connection> conn;
    Result<v1::Envelope> hello;
    std::optional<net::PublicKey> key;  // proven in the handshake, when the ring is secure
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Hello> hellos;
  std::optional<Result<v1::Envelope>> next_reply;

  template <typename F>
  void Update(F f) {
    {
      std::lock_guard lock(mu);
      f();
    }
    cv.notify_all();
  }
};

Status CheckNextReply(const Result<v1::Envelope>& reply, const std::string& job_id) {
  if (!reply.ok()) return reply.status();
  TRIB_RETURN_IF_ERROR(net::CheckEnvelope(*reply, job_id));
  if (reply->has_error()) {
    return FailedPrecondition("our ring hello was rejected (" +
                              v1::ErrorCode_Name(reply->error().code()) +
                              "): " + reply->error().message());
  }
  if (!reply->has_hello_ack()) {
    return ProtocolError("expected hello_ack, got " + net::PayloadName(*reply));
  }
  return Status::Ok();
}

// The handshake of one rank after it greeted next: accept prev (rejecting everything else) and
// answer it with HelloAck, while watching next's reply so a rejection fails Form at once.
class Handshake {
 public:
  // `greeting` completes once next is greeted (secure handshake + our hello). It runs on its own
  // thread: with a secure handshake, greeting next waits for next's answer, and next answers
  // only from its own Handshake::Run, so every rank must accept while it greets.
  // `regreet` dials next again and greets it anew (the ring's next connection replaced), for a
  // next that answered ATTEMPT_AHEAD; it gives up at the deadline it is passed.
  using Regreet = std::function<Result<std::pair<std::shared_ptr<net::Connection>, std::future<Status>>>(Deadline)>;
  Handshake(Ring& ring, net::Listener& listener, net::IoThread& relay_io,
            std::shared_ptr<net::Connection> next, std::future<Status> greeting,
            FormControl* control, Regreet regreet)
      : control_(control),
        ring_(ring),
        listener_(listener),
        relay_io_(relay_io),
        next_(std::move(next)),
        greeting_(std::move(greeting)),
        regreet_(std::move(regreet)) {}

  ~Handshake() {
    for (auto& c : pending_) c->Close();
    if (greeting_.valid() &&
        greeting_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      next_->Close();  // unblocks the greeting thread; the future's destructor joins it
    }
  }

  // Returns prev's connection once prev said hello and next acknowledged ours.
  Result<std::shared_ptr<net::Connection>> Run(Deadline deadline) {
    for (;;) {
      if (control_ && control_->IsCancelled()) return Aborted(kCancelled);
      if (greeting_.valid() && greeting_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
        Status greeted = greeting_.get();
        if (!greeted.ok()) {
          greeted = greeted.WithContext("greeting next " + Describe(ring_.next_member(), next_.get()));
          Blame(ring_.next_member().rank);
          TellWaitingPeers(greeted);
          return greeted;
        }
        next_->AsyncReceive([inbox = inbox_](Result<v1::Envelope> reply) {
          inbox->Update([&] { inbox->next_reply = std::move(reply); });
        });
      }
      if (auto reply = NextReply()) {
        if (NextIsBehind(*reply)) {
          TRIB_RETURN_IF_ERROR(GreetNextAgain(reply->value().error().message(), deadline));
          continue;
        }
        Status acked = CheckNextReply(*reply, ring_.job_id());
        if (!acked.ok()) {
          acked = acked.WithContext("next " + Describe(ring_.next_member(), next_.get()));
          Blame(ring_.next_member().rank);
          TellWaitingPeers(acked);
          return acked;
        }
        next_acked_ = true;
      }
      if (!prev_) TRIB_RETURN_IF_ERROR(TakeValidHello(deadline));
      if (prev_ && next_acked_) return prev_;
      if (Clock::now() >= deadline) {
        Blame(prev_ ? ring_.next_member().rank : ring_.prev_member().rank);
        return DeadlineExceeded(Missing());
      }
      if (ahead_since_ && !next_acked_ && Clock::now() >= *ahead_since_ + kAheadPatience) {
        Status behind = FailedPrecondition("next " + Describe(ring_.next_member(), next_.get()) +
                                           " had not started round " + std::to_string(ring_.round()) + " attempt " +
                                           std::to_string(ring_.attempt()) + " " + std::to_string(kAheadPatience.count()) +
                                           " ms after refusing our hello for it");
        Blame(ring_.next_member().rank);
        TellWaitingPeers(behind);
        return behind;
      }
      if (!prev_) TRIB_RETURN_IF_ERROR(AcceptOne(deadline));
      const bool greeting = greeting_.valid();
      // With a control, never sleep past the next cancellation check.
      const Millis slice = control_ ? kCancelPoll : kAcceptSlice;
      const Deadline wake = ahead_since_ && !next_acked_ ? std::min(deadline, *ahead_since_ + kAheadPatience) : deadline;
      Wait(prev_ && !greeting && !control_ ? wake : std::min(wake, Clock::now() + slice));
    }
  }

 private:
  // Next refused our hello because it has not started this attempt yet, and it did so within
  // kAheadPatience of its first such refusal.
  bool NextIsBehind(const Result<v1::Envelope>& reply) {
    if (!regreet_ || !reply.ok() || !reply->has_error() || reply->error().code() != v1::ATTEMPT_AHEAD) return false;
    if (!ahead_since_) ahead_since_ = Clock::now();
    return Clock::now() < *ahead_since_ + kAheadPatience;
  }

  Status GreetNextAgain(const std::string& why, Deadline deadline) {
    spdlog::info("ring rank {}: next {} is not at round {} attempt {} yet ({}); greeting it again", ring_.rank(),
                 Describe(ring_.next_member(), next_.get()), ring_.round(), ring_.attempt(), why);
    if (greeting_.valid()) greeting_.wait();
    next_->Close();
    std::this_thread::sleep_for(kRegreetDelay);
    auto again = regreet_(std::min(deadline, *ahead_since_ + kAheadPatience));
    if (!again.ok()) {
      Status failed = again.status().WithContext("greeting next " + Describe(ring_.next_member(), nullptr) + " again");
      Blame(ring_.next_member().rank);
      TellWaitingPeers(failed);
      return failed;
    }
    next_ = std::move(again->first);
    greeting_ = std::move(again->second);
    return Status::Ok();
  }

  void Blame(uint32_t rank) {
    if (control_) control_->blamed_rank = rank;
  }

  std::optional<Result<v1::Envelope>> NextReply() {
    std::lock_guard lock(inbox_->mu);
    return std::exchange(inbox_->next_reply, std::nullopt);
  }

  void Wait(Deadline until) {
    std::unique_lock lock(inbox_->mu);
    inbox_->cv.wait_until(lock, until, [&] {
      return (!prev_ && !inbox_->hellos.empty()) || inbox_->next_reply.has_value();
    });
  }

  std::string Missing() const {
    if (!prev_) {
      return "no valid ring hello from prev " + Describe(ring_.prev_member(), nullptr) +
             " arrived in time";
    }
    return "next " + Describe(ring_.next_member(), next_.get()) + " did not acknowledge in time";
  }

  Status AcceptOne(Deadline deadline) {
    if (!ring_.self_member().relay_token.empty()) return AcceptViaRelay(deadline);
    auto conn = listener_.Accept(std::min(deadline, Clock::now() + kAcceptSlice));
    if (!conn.ok()) {
      if (conn.status().code() == StatusCode::kDeadlineExceeded) return Status::Ok();
      return conn.status().WithContext("accepting ring connections");
    }
    Incoming(*conn);
    return Status::Ok();
  }

  // Behind NAT nobody can dial us: we dial the relay, which pairs us with prev.
  Status AcceptViaRelay(Deadline deadline) {
    if (relay_dialed_) return Status::Ok();
    relay_dialed_ = true;
    auto conn = DialRelay(relay_io_, ring_.self_member(), ring_.job_id(), deadline);
    if (!conn.ok()) return conn.status().WithContext("reaching prev through the relay");
    Incoming(*conn);
    return Status::Ok();
  }

  void Incoming(const std::shared_ptr<net::Connection>& accepted) {
    auto conn = Result<std::shared_ptr<net::Connection>>(accepted);
    pending_.push_back(*conn);
    auto read_hello = [inbox = inbox_, conn = *conn](std::optional<net::PublicKey> key) {
      conn->AsyncReceive([inbox, conn, key](Result<v1::Envelope> hello) {
        inbox->Update([&] { inbox->hellos.push_back({conn, std::move(hello), key}); });
      });
    };
    if (const net::Identity* id = ring_.identity()) {
      net::AsyncServerHandshake(*conn, *id, ring_.job_id(),
                                [inbox = inbox_, conn = *conn, read_hello](Result<net::PublicKey> key) {
                                  if (!key.ok()) {
                                    inbox->Update([&] { inbox->hellos.push_back({conn, key.status(), std::nullopt}); });
                                    return;
                                  }
                                  read_hello(*key);
                                });
    } else {
      read_hello(std::nullopt);
    }
  }

  // Sets prev_ (and acknowledges it) if prev's valid hello arrived; rejects every other one seen
  // before it. Connections after it stay pending and are closed with the Handshake.
  Status TakeValidHello(Deadline deadline) {
    std::deque<Inbox::Hello> hellos;
    {
      std::lock_guard lock(inbox_->mu);
      hellos.swap(inbox_->hellos);
    }
    for (auto& item : hellos) {
      std::erase(pending_, item.conn);
      if (!item.hello.ok()) {
        spdlog::warn("ring rank {}: connection from {} failed before its hello: {}", ring_.rank(),
                     item.conn->remote(), item.hello.status().ToString());
        item.conn->Close();
      } else if (Status valid = CheckRingHello(*item.hello, ring_.job_id(),
                                               ring_.prev_member().rank, ring_.round(),
                                               ring_.attempt());
                 !valid.ok()) {
        RejectHello(*item.conn, valid);
      } else if (Status key = CheckPrevKey(item.key); !key.ok()) {
        Reject(*item.conn, key, v1::AUTH_FAILED);
      } else {
        prev_ = item.conn;
        return Acknowledge(deadline);
      }
    }
    return Status::Ok();
  }

  Status CheckPrevKey(const std::optional<net::PublicKey>& key) const {
    const net::PublicKey& want = ring_.prev_member().public_key;
    if (!ring_.identity() || want == net::PublicKey{}) return Status::Ok();
    if (!key || *key != want) {
      return ProtocolError("ring connection proved key " + (key ? net::ShortKey(*key) : std::string("none")) +
                           ", but prev " + Describe(ring_.prev_member(), nullptr) + " has key " +
                           net::ShortKey(want));
    }
    return Status::Ok();
  }

  Status Acknowledge(Deadline deadline) {
    v1::Envelope ack = net::MakeEnvelope(ring_.job_id());
    ack.mutable_hello_ack()->set_server_name(ring_.self_member().name);
    Status sent = prev_->Send(ack, deadline);
    if (!sent.ok()) {
      return sent.WithContext("acknowledging prev " + Describe(ring_.prev_member(), prev_.get()));
    }
    return Status::Ok();
  }

  // We give up; peers that already said hello (prev among them, typically) learn why at once
  // instead of waiting for their deadline. Best effort, bounded by a short grace period.
  void TellWaitingPeers(const Status& why) {
    const Deadline grace = DeadlineAfter(2 * kAcceptSlice);
    while (Clock::now() < grace && AcceptOne(grace).ok()) Wait(grace);
    std::deque<Inbox::Hello> hellos;
    {
      std::lock_guard lock(inbox_->mu);  // not held while sending: handlers need it
      hellos.swap(inbox_->hellos);
    }
    for (auto& item : hellos) {
      if (!item.hello.ok()) continue;
      Status invalid = CheckRingHello(*item.hello, ring_.job_id(), ring_.prev_member().rank,
                                      ring_.round(), ring_.attempt());
      if (!invalid.ok()) {
        RejectHello(*item.conn, invalid);
      } else {
        Reject(*item.conn,
               Aborted("rank " + std::to_string(ring_.rank()) +
                       " gave up forming the ring: " + why.message()),
               v1::ROUND_FAILED);
      }
    }
  }

  // A hello CheckRingHello refused; one for an attempt we have not started is no error.
  void RejectHello(net::Connection& conn, const Status& why) {
    if (why.code() != StatusCode::kUnavailable) return Reject(conn, why);
    spdlog::info("ring rank {}: {} is ahead of us: {}", ring_.rank(), conn.remote(), why.message());
    (void)conn.Send(net::MakeError(ring_.job_id(), v1::ATTEMPT_AHEAD, why.message()), DeadlineAfter(kRejectSendTimeout));
    conn.Close();
  }

  void Reject(net::Connection& conn, const Status& why,
              std::optional<v1::ErrorCode> code = std::nullopt) {
    spdlog::error("ring rank {}: rejected ring connection from {}: {}", ring_.rank(), conn.remote(),
                  why.ToString());
    Status sent = conn.Send(
        net::MakeError(ring_.job_id(), code.value_or(net::ErrorCodeFor(why)), why.message()),
        DeadlineAfter(kRejectSendTimeout));
    if (!sent.ok()) spdlog::warn("ring rank {}: {}", ring_.rank(), sent.ToString());
    conn.Close();
  }

  FormControl* control_;  // may be null
  Ring& ring_;
  net::Listener& listener_;
  net::IoThread& relay_io_;
  bool relay_dialed_ = false;
  std::shared_ptr<net::Connection> next_;
  std::future<Status> greeting_;
  std::shared_ptr<Inbox> inbox_ = std::make_shared<Inbox>();
  std::vector<std::shared_ptr<net::Connection>> pending_;
  std::shared_ptr<net::Connection> prev_;
  bool next_acked_ = false;
  Regreet regreet_;
  std::optional<Clock::time_point> ahead_since_;  // next's first ATTEMPT_AHEAD
};

v1::Envelope RingHello(const std::string& job_id, const RingMember& me, uint64_t round,
                       uint32_t attempt) {
  v1::Envelope env = net::MakeEnvelope(job_id);
  v1::Hello* h = env.mutable_hello();
  h->set_role(v1::ROLE_RING_NEIGHBOR);
  h->set_peer_name(me.name);
  h->set_rank(me.rank);
  h->set_round(round);
  h->set_attempt(attempt);
  return env;
}

}  // namespace

Ring::Ring(uint32_t rank, std::vector<RingMember> members, std::string job_id, uint64_t round,
           uint32_t attempt, const net::Identity* identity)
    : rank_(rank),
      members_(std::move(members)),
      job_id_(std::move(job_id)),
      round_(round),
      attempt_(attempt),
      identity_(identity) {}

Ring::~Ring() {
  if (next_) next_->Close();
  if (prev_) prev_->Close();
}

Result<std::unique_ptr<Ring>> Ring::Form(net::IoThread& io, net::Listener& listener,
                                         uint32_t my_rank, const std::vector<RingMember>& members,
                                         const std::string& job_id, uint64_t round,
                                         uint32_t attempt, const net::Identity* identity,
                                         Deadline deadline, FormControl* control) {
  if (io.InThisThread()) return FailedPrecondition("Ring::Form must not run on the io thread");
  TRIB_RETURN_IF_ERROR(ValidateMembers(my_rank, members));
  std::unique_ptr<Ring> ring(new Ring(my_rank, members, job_id, round, attempt, identity));
  if (ring->world() == 1) return ring;

  const RingMember& me = members[my_rank];
  const std::string ctx = "forming ring (rank " + std::to_string(my_rank) + " of " +
                          std::to_string(ring->world()) + ", round " + std::to_string(round) + ")";
  // Greeting next never waits on next's own progress (the kernel queues our connection and
  // hello), so every rank reaches the handshake and formation cannot deadlock.
  ring->send_io_ = std::make_unique<net::IoThread>("ring-send-" + std::to_string(my_rank));
  auto next = ring->next_member().relay_token.empty()
                  ? DialMember(*ring->send_io_, ring->next_member(), deadline, control)
                  : DialRelay(*ring->send_io_, ring->next_member(), job_id, deadline);
  if (!next.ok()) {
    if (control && next.status().code() != StatusCode::kAborted) {
      control->blamed_rank = ring->next_member().rank;
    }
    return next.status().WithContext(ctx + ": dialing next " +
                                     Describe(ring->next_member(), nullptr));
  }
  ring->next_ = std::move(next).value();
  // On its own thread: the secure handshake with next, then our hello.
  auto greet = [&ring, &me, identity, &job_id, round, attempt](std::shared_ptr<net::Connection> conn, Deadline until) {
    return std::async(std::launch::async, [&ring, &me, identity, &job_id, round, attempt, conn, until]() -> Status {
      if (identity) {
        const net::PublicKey& want = ring->next_member().public_key;
        auto proven = net::ClientHandshake(
            *conn, *identity, job_id, want == net::PublicKey{} ? std::nullopt : std::optional<net::PublicKey>(want),
            until);
        if (!proven.ok()) return proven.status().WithContext("handshake");
      }
      return conn->Send(RingHello(job_id, me, round, attempt), until);
    });
  };
  Handshake::Regreet regreet =
      [&ring, &greet, &job_id, control](Deadline until)
      -> Result<std::pair<std::shared_ptr<net::Connection>, std::future<Status>>> {
    auto again = ring->next_member().relay_token.empty()
                     ? DialMember(*ring->send_io_, ring->next_member(), until, control)
                     : DialRelay(*ring->send_io_, ring->next_member(), job_id, until);
    if (!again.ok()) return again.status();
    ring->next_ = *again;
    return std::make_pair(*again, greet(*again, until));
  };

  Handshake handshake(*ring, listener, io, ring->next_, greet(ring->next_, deadline), control, regreet);
  auto prev = handshake.Run(deadline);
  if (!prev.ok()) return prev.status().WithContext(ctx);
  ring->prev_ = std::move(prev).value();
  return ring;
}

std::unique_ptr<Ring> Ring::Over(uint32_t my_rank, std::vector<RingMember> members,
                                 std::string job_id, uint64_t round, uint32_t attempt,
                                 const net::Identity* identity,
                                 std::shared_ptr<net::Connection> next,
                                 std::shared_ptr<net::Connection> prev) {
  std::unique_ptr<Ring> ring(new Ring(my_rank, std::move(members), std::move(job_id), round,
                                      attempt, identity));
  ring->next_ = std::move(next);
  ring->prev_ = std::move(prev);
  return ring;
}

std::string Ring::DescribeNext() const { return Describe(next_member(), next_.get()); }
std::string Ring::DescribePrev() const { return Describe(prev_member(), prev_.get()); }

// A ring over one connection (Over, world 2) counts it once.
uint64_t Ring::bytes_sent() const {
  return (next_ ? next_->bytes_sent() : 0) + (prev_ && prev_ != next_ ? prev_->bytes_sent() : 0);
}

uint64_t Ring::bytes_received() const {
  return (next_ ? next_->bytes_received() : 0) +
         (prev_ && prev_ != next_ ? prev_->bytes_received() : 0);
}

void Ring::Interrupt() {
  if (next_) next_->Close();
  if (prev_) prev_->Close();
}

void Ring::Abort() {
  broken_ = true;
  for (auto* conn : {next_.get(), prev_.get()}) {
    if (conn == nullptr) continue;
    conn->Close();
    // An already-passed deadline makes Flush wait only for the queued writes to fail, which the
    // close guarantees; after that no write can still read the caller's tensor.
    (void)conn->Flush(Clock::now());
  }
}

}  // namespace tributary::collectives
