#include "collectives/mesh.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "collectives/dial.h"
#include "net/secure_channel.h"

namespace tributary::collectives {
namespace {

// Accepting is done in short slices so that hellos on connections accepted earlier are noticed
// while we keep accepting: a silent connection must not block the real members.
constexpr Millis kAcceptSlice{10};
constexpr Millis kRejectSendTimeout{1000};
// One dial attempt is capped so that a formation that gave up never waits long for a thread
// still dialing a black-holed address.
constexpr Millis kCancelPoll{50};
// How long Abort lets its Error frames leave before closing (they are tiny; only a peer that
// stopped reading can hold them up, and that peer is the one we are giving up on).
constexpr Millis kAbortGrace{200};
// How long a formation that gives up waits for its greetings in flight (see CollectGreetings).
constexpr Millis kGreetingGrace{500};
constexpr std::string_view kBlamePrefix = "failed rank ";

std::string DescribeMember(const MeshMember& m, const net::Connection* c) {
  std::string out = "rank " + std::to_string(m.rank) + " '" + m.name + "' at ";
  return out + (c ? c->remote() : m.host + ":" + std::to_string(m.port));
}

std::string HandshakeContext(const std::string& job_id) { return job_id + "/mesh"; }

Status ValidateMembers(uint32_t my_rank, const std::vector<MeshMember>& members) {
  if (members.empty()) return InvalidArgument("mesh needs at least one member");
  if (my_rank >= members.size()) {
    return InvalidArgument("rank " + std::to_string(my_rank) + " is outside a mesh of " +
                           std::to_string(members.size()));
  }
  for (size_t i = 0; i < members.size(); ++i) {
    if (members[i].rank != i) {
      return InvalidArgument("mesh members must be ordered by rank: position " +
                             std::to_string(i) + " holds rank " + std::to_string(members[i].rank));
    }
    // Every member accepts connections from the ranks below it, so none may be behind a NAT.
    if (!members[i].relay_token.empty()) {
      return InvalidArgument("mesh member rank " + std::to_string(i) + " '" + members[i].name +
                             "' is reachable only through a relay, which meshes do not support");
    }
  }
  return Status::Ok();
}

v1::Envelope MeshHello(const std::string& job_id, const MeshMember& me, uint64_t round,
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

// Returns the sender's rank if `env` is a valid mesh hello for an acceptor of rank `me` (which
// hears only from lower ranks).
Result<uint32_t> CheckMeshHello(const v1::Envelope& env, const std::string& job_id, uint32_t me,
                                uint64_t round, uint32_t attempt) {
  TRIB_RETURN_IF_ERROR(net::CheckEnvelope(env, job_id));
  if (!env.has_hello()) return ProtocolError("expected a hello, got " + net::PayloadName(env));
  const v1::Hello& h = env.hello();
  if (h.role() != v1::ROLE_RING_NEIGHBOR) {
    return ProtocolError("hello with role " + v1::Role_Name(h.role()) +
                         " on the collective port (expected ROLE_RING_NEIGHBOR)");
  }
  if (h.rank() >= me) {
    return ProtocolError("mesh hello from rank " + std::to_string(h.rank()) + ", but rank " +
                         std::to_string(me) + " only accepts ranks below it (lower ranks dial)");
  }
  // The dialer's RoundStart came before ours: not an error of its, we are behind (Unavailable,
  // answered with ATTEMPT_AHEAD, and the dialer greets again).
  if (HelloIsAhead(h.round(), h.attempt(), round, attempt)) {
    return Unavailable("mesh hello for round " + std::to_string(h.round()) + " attempt " + std::to_string(h.attempt()) +
                       ", which this rank has not started (it forms round " + std::to_string(round) + " attempt " +
                       std::to_string(attempt) + ")");
  }
  if (h.round() != round) {
    return ProtocolError("mesh hello for round " + std::to_string(h.round()) +
                         ", expected round " + std::to_string(round));
  }
  if (h.attempt() != attempt) {
    return ProtocolError("mesh hello for attempt " + std::to_string(h.attempt()) + " of round " +
                         std::to_string(round) + ", expected attempt " + std::to_string(attempt));
  }
  return h.rank();
}

// What arrives while forming, filled by greeting threads and receive handlers; shared with them
// so it outlives Form.
struct FormInbox {
  struct Hello {  // on a connection we accepted
    std::shared_ptr<net::Connection> conn;
    Result<v1::Envelope> hello;
    std::optional<net::PublicKey> key;  // proven in the handshake, when the mesh is secure
  };
  struct Greeted {  // a rank we dialed: handshake done and our hello sent, or why not
    uint32_t peer;
    std::shared_ptr<net::Connection> conn;
    Status status;
  };
  struct Reply {  // a HelloAck (see Stage) on a connection, or why not
    enum class Stage { kAck, kConnected, kReady };
    uint32_t peer;
    Stage stage;
    Result<v1::Envelope> message;
  };

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Hello> hellos;
  std::deque<Greeted> greeted;
  std::deque<Reply> replies;
  bool cancelled = false;
  std::vector<std::shared_ptr<net::Connection>> dialed;  // so a cancel can close them

  template <typename F>
  void Update(F f) {
    {
      std::lock_guard lock(mu);
      f();
    }
    cv.notify_all();
  }
  bool Pending() const { return !hellos.empty() || !greeted.empty() || !replies.empty(); }
};

// The member may not be listening yet (it forms its mesh at about the same time).
Result<std::shared_ptr<net::Connection>> DialMember(net::IoThread& io, const MeshMember& to,
                                                    Deadline deadline, FormInbox& inbox) {
  return DialWithRetry(io, to.host, to.port, deadline, [&inbox] {
    std::lock_guard lock(inbox.mu);
    return inbox.cancelled;
  }, "mesh formation was given up");
}

// Runs on a thread of its own: (after `delay`) dial `to`, run the client handshake, send our hello.
void Greet(std::shared_ptr<FormInbox> inbox, net::IoThread& io, MeshMember to, v1::Envelope hello,
           const net::Identity* identity, std::string context, Deadline deadline, Millis delay) {
  for (const Deadline start = DeadlineAfter(delay); Clock::now() < start;) {
    {
      std::lock_guard lock(inbox->mu);
      if (inbox->cancelled) break;
    }
    std::this_thread::sleep_for(std::min(delay, kCancelPoll));
  }
  auto dialed = DialMember(io, to, deadline, *inbox);
  if (!dialed.ok()) {
    inbox->Update([&] {
      inbox->greeted.push_back({to.rank, nullptr, dialed.status().WithContext("dialing")});
    });
    return;
  }
  std::shared_ptr<net::Connection> conn = std::move(dialed).value();
  {
    std::lock_guard lock(inbox->mu);
    if (inbox->cancelled) {
      conn->Close();
      return;
    }
    inbox->dialed.push_back(conn);
  }
  Status st = Status::Ok();
  if (identity) {
    auto proven = net::ClientHandshake(
        *conn, *identity, context,
        to.public_key == net::PublicKey{} ? std::nullopt : std::optional(to.public_key), deadline);
    if (!proven.ok()) st = proven.status().WithContext("handshake");
  }
  if (st.ok()) {
    Status sent = conn->Send(hello, deadline);
    if (!sent.ok()) st = sent.WithContext("sending our hello");
  }
  inbox->Update([&] { inbox->greeted.push_back({to.rank, conn, std::move(st)}); });
}

}  // namespace

// One rank's formation: dials the ranks above (one thread each), accepts the ranks below, and
// succeeds once every peer said it is ready. Per connection, after the hello:
//   acceptor -> dialer  HelloAck "ack": the hello was accepted
//   both ways           HelloAck "connected": all of the sender's connections are acked
//   both ways           HelloAck "ready": the sender heard "connected" from all its peers
// Every rank keeps a receive outstanding on every connection until "ready" arrives on it, so an
// Error from a rank that gives up is always heard. That covers every failure but the deadline:
// a rank gives up on its own only before it is fully acked (a rejected hello, a failed
// handshake), so it never says "connected", so no rank ever says "ready"; ranks that give up
// because of it relay its Error on connections whose "ready" is still awaited. Once one rank
// sent "ready", every member is fully connected and nothing but a deadline can fail.
class MeshFormation {
 public:
  using Stage = FormInbox::Reply::Stage;

  MeshFormation(Mesh& mesh, net::Listener& listener, FormControl* control)
      : control_(control),
        mesh_(mesh),
        listener_(listener),
        connected_to_(mesh.world(), false),
        heard_connected_(mesh.world(), false),
        heard_ready_(mesh.world(), false) {}

  ~MeshFormation() {
    {
      std::lock_guard lock(inbox_->mu);
      inbox_->cancelled = true;
      // On success every dialed connection is in the mesh and every greeting thread has
      // reported; on failure the ones still greeting are cut short.
      if (!succeeded_) {
        for (auto& c : inbox_->dialed) c->Close();
      }
      for (auto& h : inbox_->hellos) h.conn->Close();
    }
    for (auto& t : greeters_) t.join();
    for (auto& c : pending_) c->Close();
    // Dialed connections belong to the mesh's dial_io_, but the inbox can outlive the mesh: the
    // handlers of connections we accepted hold it, on the listener's io thread. A socket closed
    // after its io_context is gone touches freed memory (a peer hung there, in a probe mesh that
    // failed with a handshake still pending), so the inbox lets go of them now, while the mesh
    // and its dial_io_ are alive; the greeters are joined, so no more arrive.
    std::vector<std::shared_ptr<net::Connection>> dialed;
    std::deque<FormInbox::Greeted> greeted;
    {
      std::lock_guard lock(inbox_->mu);
      dialed.swap(inbox_->dialed);
      greeted.swap(inbox_->greeted);
    }
  }

  Status Run(Deadline deadline) {
    deadline_ = deadline;
    StartGreetings(deadline);
    for (;;) {
      if (control_ && control_->IsCancelled()) {
        return Fail(Aborted("gave up forming the mesh: the attempt was superseded"), std::nullopt);
      }
      TRIB_RETURN_IF_ERROR(Drain());
      if (!said_connected_ && connected_ == peers()) said_connected_ = Announce();
      if (said_connected_ && !said_ready_ && peers_connected_ == peers()) said_ready_ = Announce();
      if (said_ready_ && peers_ready_ == peers()) {
        succeeded_ = true;
        return Status::Ok();
      }
      if (Clock::now() >= deadline) return Fail(DeadlineExceeded(Missing()), FirstMissing());
      TRIB_RETURN_IF_ERROR(CheckAheadPatience());
      const Deadline wake = std::min(deadline, AheadGiveUp());
      if (accepted_ < mesh_.rank()) {
        TRIB_RETURN_IF_ERROR(AcceptOne(wake));
        Wait(std::min(wake, Clock::now() + kAcceptSlice));
      } else {
        // With a control, never sleep past the next cancellation check.
        Wait(control_ ? std::min(wake, Clock::now() + kCancelPoll) : wake);
      }
    }
  }

 private:
  uint32_t peers() const { return mesh_.world() - 1; }
  const MeshMember& member(uint32_t r) const { return mesh_.member(r); }
  std::string Describe(uint32_t r) const { return DescribeMember(member(r), mesh_.peers_[r].get()); }

  void StartGreetings(Deadline deadline) {
    if (mesh_.world() > mesh_.rank() + 1) {
      mesh_.dial_io_ = std::make_unique<net::IoThread>("mesh-dial-" + std::to_string(mesh_.rank()));
    }
    const v1::Envelope hello =
        MeshHello(mesh_.job_id(), member(mesh_.rank()), mesh_.round(), mesh_.attempt());
    for (uint32_t p = mesh_.rank() + 1; p < mesh_.world(); ++p) {
      greeters_.emplace_back(Greet, inbox_, std::ref(*mesh_.dial_io_), member(p), hello,
                             mesh_.identity(), HandshakeContext(mesh_.job_id()), deadline, Millis{0});
    }
  }

  // The earliest moment a member that answered ATTEMPT_AHEAD and is not connected yet is given up.
  Deadline AheadGiveUp() const {
    Deadline out = Deadline::max();
    for (const auto& [peer, since] : ahead_since_) {
      if (!connected_to_[peer]) out = std::min(out, since + kAheadPatience);
    }
    return out;
  }
  Status CheckAheadPatience() {
    for (const auto& [peer, since] : ahead_since_) {
      if (!connected_to_[peer] && Clock::now() >= since + kAheadPatience) {
        return Fail(FailedPrecondition(Describe(peer) + " had not started round " + std::to_string(mesh_.round()) +
                                       " attempt " + std::to_string(mesh_.attempt()) + " " +
                                       std::to_string(kAheadPatience.count()) + " ms after refusing our hello for it"),
                    peer);
      }
    }
    return Status::Ok();
  }

  // `peer` has not started this attempt yet (ATTEMPT_AHEAD): drop the connection it refused and
  // greet it again shortly; that greeting gives up at `deadline` (kAheadPatience after the first
  // refusal), and the formation with it.
  void Regreet(uint32_t peer, const std::string& why, Deadline deadline) {
    spdlog::info("mesh rank {}: {} is not at round {} attempt {} yet ({}); greeting it again", mesh_.rank(),
                 Describe(peer), mesh_.round(), mesh_.attempt(), why);
    mesh_.peers_[peer]->Close();
    mesh_.peers_[peer] = nullptr;
    greeters_.emplace_back(Greet, inbox_, std::ref(*mesh_.dial_io_), member(peer),
                           MeshHello(mesh_.job_id(), member(mesh_.rank()), mesh_.round(), mesh_.attempt()),
                           mesh_.identity(), HandshakeContext(mesh_.job_id()), deadline, kRegreetDelay);
  }

  // Handles everything that arrived; fails on the first event that dooms the formation.
  Status Drain() {
    std::deque<FormInbox::Greeted> greeted;
    std::deque<FormInbox::Hello> hellos;
    std::deque<FormInbox::Reply> replies;
    {
      std::lock_guard lock(inbox_->mu);
      greeted.swap(inbox_->greeted);
      hellos.swap(inbox_->hellos);
      replies.swap(inbox_->replies);
    }
    for (auto& h : hellos) OnHello(h);
    std::optional<std::pair<uint32_t, Status>> failed;
    for (auto& g : greeted) {
      ++greeted_;
      if (g.status.ok()) {
        mesh_.peers_[g.peer] = g.conn;
        Watch(g.peer, Stage::kAck);
      } else if (!failed) {
        if (g.conn) mesh_.peers_[g.peer] = g.conn;  // so the error names the address
        failed.emplace(g.peer, g.status.WithContext("greeting " + Describe(g.peer)));
      }
    }
    if (failed) return Fail(failed->second, failed->first);
    for (auto& r : replies) TRIB_RETURN_IF_ERROR(OnReply(r));
    return Status::Ok();
  }

  // Reads the peer's next HelloAck (or Error, or the connection's end) into the inbox.
  void Watch(uint32_t peer, Stage stage) {
    mesh_.peers_[peer]->AsyncReceive([inbox = inbox_, peer, stage](Result<v1::Envelope> message) {
      inbox->Update([&] { inbox->replies.push_back({peer, stage, std::move(message)}); });
    });
  }

  void Connected(uint32_t peer) {
    connected_to_[peer] = true;
    ++connected_;
    Watch(peer, Stage::kConnected);
  }

  void OnHello(FormInbox::Hello& h) {
    std::erase(pending_, h.conn);
    if (!h.hello.ok()) {
      spdlog::warn("mesh rank {}: connection from {} failed before its hello: {}", mesh_.rank(),
                   h.conn->remote(), h.hello.status().ToString());
      h.conn->Close();
      return;
    }
    auto rank = CheckMeshHello(*h.hello, mesh_.job_id(), mesh_.rank(), mesh_.round(),
                               mesh_.attempt());
    if (!rank.ok()) return RejectHello(*h.conn, rank.status());
    if (mesh_.peers_[*rank]) {
      return Reject(*h.conn, ProtocolError("rank " + std::to_string(*rank) +
                                           " is already connected to this mesh"));
    }
    if (Status key = CheckKey(*rank, h.key); !key.ok()) {
      return Reject(*h.conn, key, v1::AUTH_FAILED);
    }
    ++accepted_;
    mesh_.peers_[*rank] = h.conn;
    v1::Envelope ack = net::MakeEnvelope(mesh_.job_id());
    ack.mutable_hello_ack()->set_server_name(member(mesh_.rank()).name);
    h.conn->AsyncSend(ack);
    Connected(*rank);
  }

  Status CheckKey(uint32_t rank, const std::optional<net::PublicKey>& key) const {
    const net::PublicKey& want = member(rank).public_key;
    if (!mesh_.identity() || want == net::PublicKey{}) return Status::Ok();
    if (!key || *key != want) {
      return ProtocolError("connection proved key " +
                           (key ? net::ShortKey(*key) : std::string("none")) + ", but " +
                           DescribeMember(member(rank), nullptr) + " has key " +
                           net::ShortKey(want));
    }
    return Status::Ok();
  }

  Status OnReply(FormInbox::Reply& c) {
    if (!c.message.ok()) {
      return Fail(c.message.status().WithContext(Describe(c.peer) + " went away while forming"),
                  c.peer);
    }
    const v1::Envelope& env = *c.message;
    if (Status valid = net::CheckEnvelope(env, mesh_.job_id()); !valid.ok()) {
      return Fail(valid.WithContext("from " + Describe(c.peer)), c.peer);
    }
    if (env.has_error()) {
      if (env.error().code() == v1::ATTEMPT_AHEAD && c.stage == Stage::kAck) {
        const Deadline give_up = ahead_since_.try_emplace(c.peer, Clock::now()).first->second + kAheadPatience;
        if (Clock::now() < give_up) {
          Regreet(c.peer, env.error().message(), std::min(deadline_, give_up));
          return Status::Ok();
        }
      }
      if (env.error().code() == v1::ROUND_FAILED) {
        return Fail(Aborted(Describe(c.peer) + " gave up forming the mesh: " +
                            env.error().message()),
                    c.peer);
      }
      return Fail(FailedPrecondition("our mesh hello was rejected by " + Describe(c.peer) + " (" +
                                     v1::ErrorCode_Name(env.error().code()) +
                                     "): " + env.error().message()),
                  c.peer);
    }
    if (!env.has_hello_ack()) {
      return Fail(ProtocolError("expected hello_ack from " + Describe(c.peer) + ", got " +
                                net::PayloadName(env)),
                  c.peer);
    }
    switch (c.stage) {
      case Stage::kAck:
        Connected(c.peer);
        break;
      case Stage::kConnected:
        heard_connected_[c.peer] = true;
        ++peers_connected_;
        Watch(c.peer, Stage::kReady);
        break;
      case Stage::kReady:
        heard_ready_[c.peer] = true;
        ++peers_ready_;
        break;
    }
    return Status::Ok();
  }

  // Sends HelloAck to every peer ("connected" or "ready", by order). Returns true.
  bool Announce() {
    v1::Envelope ack = net::MakeEnvelope(mesh_.job_id());
    ack.mutable_hello_ack()->set_server_name(member(mesh_.rank()).name);
    for (uint32_t p = 0; p < mesh_.world(); ++p) {
      if (p != mesh_.rank()) mesh_.peers_[p]->AsyncSend(ack);
    }
    return true;
  }

  Status AcceptOne(Deadline deadline) {
    auto conn = listener_.Accept(std::min(deadline, Clock::now() + kAcceptSlice));
    if (!conn.ok()) {
      if (conn.status().code() == StatusCode::kDeadlineExceeded) return Status::Ok();
      return conn.status().WithContext("accepting mesh connections");
    }
    pending_.push_back(*conn);
    auto read_hello = [inbox = inbox_, conn = *conn](std::optional<net::PublicKey> key) {
      conn->AsyncReceive([inbox, conn, key](Result<v1::Envelope> hello) {
        inbox->Update([&] { inbox->hellos.push_back({conn, std::move(hello), key}); });
      });
    };
    if (const net::Identity* id = mesh_.identity()) {
      net::AsyncServerHandshake(
          *conn, *id, HandshakeContext(mesh_.job_id()),
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
    return Status::Ok();
  }

  void Wait(Deadline until) {
    std::unique_lock lock(inbox_->mu);
    inbox_->cv.wait_until(lock, until, [&] { return inbox_->Pending(); });
  }

  std::optional<uint32_t> FirstMissing() const {
    for (uint32_t p = 0; p < mesh_.world(); ++p) {
      if (p != mesh_.rank() && !connected_to_[p]) return p;
    }
    for (uint32_t p = 0; p < mesh_.world(); ++p) {
      if (p != mesh_.rank() && !heard_ready_[p]) return p;
    }
    return std::nullopt;
  }

  std::string Missing() const {
    std::string out;
    auto add = [&](const std::string& s) { out += (out.empty() ? "" : "; ") + s; };
    for (uint32_t p = 0; p < mesh_.world(); ++p) {
      if (p == mesh_.rank()) continue;
      if (!mesh_.peers_[p]) {
        add(p < mesh_.rank() ? "no valid mesh hello from " + Describe(p) + " arrived in time"
                             : Describe(p) + " did not take our connection in time");
      } else if (!connected_to_[p]) {
        add(Describe(p) + " did not acknowledge our hello in time");
      } else if (!heard_connected_[p]) {
        add(Describe(p) + " did not get all its connections in time");
      } else if (!heard_ready_[p]) {
        add(Describe(p) + " did not hear from all its peers in time");
      }
    }
    return "mesh not formed: " + out;
  }

  // A rank we dialed cannot tell our connection closing mid-greeting from a stranger's, so
  // before giving up we let greetings in flight finish (briefly): those ranks then hold our
  // hello, and the Error that Abort sends them makes them give up at once too.
  void CollectGreetings() {
    const Deadline grace = DeadlineAfter(kGreetingGrace);
    const size_t dialing = greeters_.size();
    for (;;) {
      std::deque<FormInbox::Greeted> greeted;
      {
        std::unique_lock lock(inbox_->mu);
        if (greeted_ + inbox_->greeted.size() < dialing) {
          inbox_->cv.wait_until(lock, grace, [&] {
            return greeted_ + inbox_->greeted.size() >= dialing;
          });
        }
        greeted.swap(inbox_->greeted);
      }
      for (auto& g : greeted) {
        ++greeted_;
        if (g.status.ok() && !mesh_.peers_[g.peer]) mesh_.peers_[g.peer] = g.conn;
      }
      if (greeted_ >= dialing || Clock::now() >= grace) return;
    }
  }

  // We give up: every peer connected to us, and every one whose hello is waiting, learns why at
  // once (and gives up too, naming us), instead of waiting for its deadline.
  Status Fail(const Status& why, std::optional<uint32_t> blamed) {
    if (control_ && blamed) control_->blamed_rank = blamed;
    CollectGreetings();
    const Deadline grace = DeadlineAfter(2 * kAcceptSlice);
    while (accepted_ < mesh_.rank() && Clock::now() < grace && AcceptOne(grace).ok()) Wait(grace);
    std::deque<FormInbox::Hello> hellos;
    {
      std::lock_guard lock(inbox_->mu);  // not held while sending: handlers need it
      hellos.swap(inbox_->hellos);
    }
    const std::string gave_up = "rank " + std::to_string(mesh_.rank()) +
                                " gave up forming the mesh: " + why.message();
    for (auto& h : hellos) {
      std::erase(pending_, h.conn);
      if (!h.hello.ok()) {
        h.conn->Close();
        continue;
      }
      auto rank = CheckMeshHello(*h.hello, mesh_.job_id(), mesh_.rank(), mesh_.round(),
                                 mesh_.attempt());
      if (!rank.ok()) {
        RejectHello(*h.conn, rank.status());
      } else {
        Reject(*h.conn, Aborted(gave_up), v1::ROUND_FAILED);
      }
    }
    std::optional<PeerFailure> failure;
    if (blamed) failure = mesh_.FailureOf(*blamed);
    mesh_.Abort(Aborted(why.message()), failure);
    return why;
  }

  // A hello CheckMeshHello refused; one for an attempt we have not started is no error.
  void RejectHello(net::Connection& conn, const Status& why) {
    if (why.code() != StatusCode::kUnavailable) return Reject(conn, why);
    spdlog::info("mesh rank {}: {} is ahead of us: {}", mesh_.rank(), conn.remote(), why.message());
    (void)conn.Send(net::MakeError(mesh_.job_id(), v1::ATTEMPT_AHEAD, why.message()), DeadlineAfter(kRejectSendTimeout));
    conn.Close();
  }

  void Reject(net::Connection& conn, const Status& why,
              std::optional<v1::ErrorCode> code = std::nullopt) {
    spdlog::error("mesh rank {}: rejected connection from {}: {}", mesh_.rank(), conn.remote(),
                  why.ToString());
    Status sent = conn.Send(
        net::MakeError(mesh_.job_id(), code.value_or(net::ErrorCodeFor(why)), why.message()),
        DeadlineAfter(kRejectSendTimeout));
    if (!sent.ok()) spdlog::warn("mesh rank {}: {}", mesh_.rank(), sent.ToString());
    conn.Close();
  }

  FormControl* control_;  // may be null
  Deadline deadline_{};   // of Run
  std::map<uint32_t, Deadline> ahead_since_;  // by rank: when it first answered ATTEMPT_AHEAD
  Mesh& mesh_;
  net::Listener& listener_;
  std::shared_ptr<FormInbox> inbox_ = std::make_shared<FormInbox>();
  std::vector<std::thread> greeters_;
  std::vector<std::shared_ptr<net::Connection>> pending_;  // accepted, no hello handled yet
  std::vector<bool> connected_to_;  // by rank: hello accepted (ours by it, or its by us)
  std::vector<bool> heard_connected_;  // by rank: its "connected" arrived
  std::vector<bool> heard_ready_;      // by rank: its "ready" arrived
  size_t greeted_ = 0;  // greetings that reported (successfully or not)
  uint32_t connected_ = 0;
  uint32_t accepted_ = 0;
  uint32_t peers_connected_ = 0;
  uint32_t peers_ready_ = 0;
  bool said_connected_ = false;
  bool said_ready_ = false;
  bool succeeded_ = false;
};

Mesh::Mesh(uint32_t rank, std::vector<MeshMember> members, std::string job_id, uint64_t round,
           uint32_t attempt, const net::Identity* identity)
    : rank_(rank),
      members_(std::move(members)),
      job_id_(std::move(job_id)),
      round_(round),
      attempt_(attempt),
      identity_(identity),
      peers_(members_.size()) {}

Mesh::~Mesh() { CloseAll(); }

Result<std::unique_ptr<Mesh>> Mesh::Form(net::IoThread& io, net::Listener& listener,
                                         uint32_t my_rank, const std::vector<MeshMember>& members,
                                         const std::string& job_id, uint64_t round,
                                         uint32_t attempt, const net::Identity* identity,
                                         Deadline deadline, FormControl* control) {
  if (io.InThisThread()) return FailedPrecondition("Mesh::Form must not run on the io thread");
  TRIB_RETURN_IF_ERROR(ValidateMembers(my_rank, members));
  std::unique_ptr<Mesh> mesh(new Mesh(my_rank, members, job_id, round, attempt, identity));
  if (mesh->world() == 1) return mesh;
  Status formed;
  {
    MeshFormation formation(*mesh, listener, control);  // gone (threads joined) before `mesh` may be
    formed = formation.Run(deadline);
  }
  if (!formed.ok()) {
    return formed.WithContext("forming mesh (rank " + std::to_string(my_rank) + " of " +
                              std::to_string(mesh->world()) + ", round " + std::to_string(round) +
                              ", attempt " + std::to_string(attempt) + ")");
  }
  return mesh;
}

std::string Mesh::Describe(uint32_t rank) const {
  return DescribeMember(members_[rank], peers_[rank].get());
}

PeerFailure Mesh::FailureOf(uint32_t rank, std::optional<uint32_t> reported_by) const {
  return PeerFailure{rank, members_[rank].name, reported_by};
}

PeerFailure Mesh::FailureOfRelayedAbort(uint32_t from, const std::string& relayed) const {
  const std::optional<uint32_t> blamed = BlamedRank(relayed, world());
  return blamed && *blamed != from && *blamed != rank_ ? FailureOf(*blamed, from) : FailureOf(from);
}

MeshCall::MeshCall(const Mesh& mesh, std::string_view algorithm, const std::string& tag)
    : mesh_(mesh),
      context_(std::string(algorithm) + " all-reduce '" + tag + "' (rank " +
               std::to_string(mesh.rank()) + " of " + std::to_string(mesh.world()) + ")") {}

Status MeshCall::CheckUsable() const {
  if (!mesh_.broken()) return Status::Ok();
  return FailedPrecondition(context_ + ": the mesh broke in an earlier collective; form a new one");
}

void MeshCall::Start() {
  start_ = Clock::now();
  sent_ = mesh_.bytes_sent();
  received_ = mesh_.bytes_received();
}

CollectiveStats MeshCall::Stats() const {
  CollectiveStats stats;
  stats.bytes_sent = mesh_.bytes_sent() - sent_;
  stats.bytes_received = mesh_.bytes_received() - received_;
  stats.seconds = SecondsSince(start_);
  return stats;
}

uint64_t Mesh::bytes_sent() const {
  uint64_t total = 0;
  for (const auto& p : peers_) total += p ? p->bytes_sent() : 0;
  return total;
}

uint64_t Mesh::bytes_received() const {
  uint64_t total = 0;
  for (const auto& p : peers_) total += p ? p->bytes_received() : 0;
  return total;
}

void Mesh::Abort(const Status& why, std::optional<PeerFailure> failure) {
  if (broken_) return;
  broken_ = true;
  failure_ = failure;
  const std::string text =
      failure ? std::string(kBlamePrefix) + std::to_string(failure->rank) + ": " + why.message()
              : "rank " + std::to_string(rank_) + " gave up: " + why.message();
  const v1::Envelope error = net::MakeError(job_id_, v1::ROUND_FAILED, text);
  // The others first, the blamed rank only once our word has left for them: a blamed rank that
  // answers with an accusation of its own must not overtake ours at the others.
  const Deadline grace = DeadlineAfter(kAbortGrace);
  const auto is_blamed = [&](uint32_t p) { return failure && failure->rank == p; };
  for (const bool blamed_turn : {false, true}) {
    for (uint32_t p = 0; p < world(); ++p) {
      if (peers_[p] && is_blamed(p) == blamed_turn) peers_[p]->AsyncSend(error);
    }
    for (uint32_t p = 0; p < world(); ++p) {
      if (peers_[p] && is_blamed(p) == blamed_turn) (void)peers_[p]->Flush(grace);
    }
  }
  CloseAll();
}

void Mesh::Interrupt() {
  for (const auto& p : peers_) {
    if (p) p->Close();
  }
}

void Mesh::CloseAll() {
  for (auto& p : peers_) {
    if (!p) continue;
    p->Close();
    // An already-passed deadline makes Flush wait only for the queued writes to fail, which the
    // close guarantees; after that no write can still read caller memory.
    (void)p->Flush(Clock::now());
  }
}

std::optional<uint32_t> BlamedRank(const std::string& message, uint32_t world) {
  if (!message.starts_with(kBlamePrefix)) return std::nullopt;
  const char* begin = message.data() + kBlamePrefix.size();
  const char* end = message.data() + message.size();
  uint32_t rank = 0;
  auto [next, ec] = std::from_chars(begin, end, rank);
  if (ec != std::errc() || next == end || *next != ':' || rank >= world) return std::nullopt;
  return rank;
}

}  // namespace tributary::collectives
