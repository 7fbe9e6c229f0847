// The coordinator against real TCP clients that speak (or abuse) protocol v1: handshake,
// signed requests, rounds with attempts, admission, liveness, sync, restart and status.
#include "launcher/coordinator.h"

#include <gtest/gtest.h>

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "core/digest.h"
#include "launcher/client.h"
#include "launcher/store.h"
#include "net/connection.h"
#include "net/io_thread.h"
#include "net/secure_channel.h"
#include "runtime/job_spec.h"
#include "tests/common/test_corpus.h"

namespace tributary::launcher {
namespace {

using namespace std::chrono_literals;
using net::Connection;

v1::JobSpec SmallJob(uint32_t peers, uint32_t rounds, uint32_t min_peers = 0) {
  v1::JobSpec spec = runtime::DefaultJobSpec();
  spec.set_num_peers(peers);
  spec.set_min_peers(min_peers);
  spec.set_rounds(rounds);
  spec.set_round_timeout_ms(3000);
  spec.set_heartbeat_ms(200);
  spec.set_liveness_timeout_ms(60000);  // these clients send no heartbeats unless a test says so
  return spec;
}

// A protocol-speaking client standing in for a peer process (the real peer is exercised by the
// multi-process tests).
struct Client {
  net::Identity id = net::Identity::Generate();
  std::shared_ptr<Connection> conn;
  std::string job;

  v1::Envelope Signed(v1::Envelope e) const {
    net::SignEnvelope(id, e);
    return e;
  }
  Status Send(v1::Envelope e, bool sign = true) const {
    if (sign) net::SignEnvelope(id, e);
    return conn->Send(e, DeadlineAfter(2s));
  }
  Result<v1::Envelope> Next(Millis timeout = Millis(3000)) const {
    for (;;) {
      auto m = conn->Receive(DeadlineAfter(timeout));
      if (!m.ok() || !m->has_heartbeat()) return m;
    }
  }
  v1::Envelope Report(uint64_t round, uint32_t attempt, uint32_t rank, char digest) const {
    v1::Envelope e = net::MakeEnvelope(job);
    auto* r = e.mutable_round_report();
    r->set_round(round);
    r->set_attempt(attempt);
    r->set_rank(rank);
    r->set_theta_digest(std::string(32, digest));
    r->set_state_digest(std::string(32, digest));
    r->set_train_loss(2.0);
    r->set_tokens(100);
    return e;
  }
};

class CoordinatorTest : public ::testing::Test {
 protected:
  void StartCoordinator(std::optional<v1::JobSpec> spec, const std::string& db = ":memory:") {
    Coordinator::Options options;
    options.spec = spec;
    options.db_path = db;
    options.hello_timeout = 1000ms;
    auto c = Coordinator::Start(options);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    coordinator_ = std::move(c).value();
  }

  std::shared_ptr<Connection> Dial() {
    auto c = Connection::Dial(io_.context(), "127.0.0.1", coordinator_->port(), DeadlineAfter(2s));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return *c;
  }

  // A fresh identity, or `id` (a peer coming back with its key).
  Client Secure(std::optional<net::Identity> id = std::nullopt) {
    Client client;
    if (id) client.id = *id;
    client.conn = Dial();
    client.job = coordinator_->job_id();
    auto key = net::ClientHandshake(*client.conn, client.id, "tributary-coordinator",
                                    coordinator_->public_key(), DeadlineAfter(2s));
    EXPECT_TRUE(key.ok()) << key.status().ToString();
    return client;
  }

  v1::Envelope HelloFor(const Client& c, const std::string& name, uint32_t port = 5555) {
    v1::Envelope hello = net::MakeEnvelope(c.job);
    hello.mutable_hello()->set_role(v1::ROLE_PEER);
    hello.mutable_hello()->set_peer_name(name);
    hello.mutable_hello()->set_listen_port(port);
    hello.mutable_hello()->set_sync_port(port + 100);
    return hello;
  }

  // Joins as a peer; returns the client after the HelloAck.
  Client Join(const std::string& name, uint32_t port = 5555, v1::Envelope* ack_out = nullptr) {
    Client c = Secure();
    EXPECT_TRUE(c.Send(HelloFor(c, name, port)).ok());
    auto ack = c.Next();
    EXPECT_TRUE(ack.ok()) << ack.status().ToString();
    EXPECT_TRUE(ack->has_hello_ack()) << net::PayloadName(*ack) << " " << ack->DebugString();
    if (ack_out) *ack_out = *ack;
    return c;
  }

  void ExpectRejected(const Client& c, v1::ErrorCode code, const std::string& words) {
    auto reply = c.Next();
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    ASSERT_TRUE(reply->has_error()) << net::PayloadName(*reply);
    EXPECT_EQ(reply->error().code(), code) << reply->error().message();
    EXPECT_NE(reply->error().message().find(words), std::string::npos) << reply->error().message();
    auto after = c.conn->Receive(DeadlineAfter(3s));
    EXPECT_EQ(after.status().code(), StatusCode::kUnavailable) << "connection should be closed";
  }

  // Plays one whole round for `clients` (all members), reporting digest `d`.
  // Every (round, loss) OnLateEval announces, in order; read it once the coordinator is gone.
  std::shared_ptr<std::vector<std::pair<uint64_t, double>>> RecordLateEvals() {
    auto late = std::make_shared<std::vector<std::pair<uint64_t, double>>>();
    auto mu = std::make_shared<std::mutex>();
    coordinator_->OnLateEval([late, mu](uint64_t round, double loss) {
      std::lock_guard<std::mutex> lock(*mu);
      late->emplace_back(round, loss);
    });
    return late;
  }

  // The eval loss of every round `db` recorded for `spec`'s job (−1: none).
  static std::vector<double> StoredEvalLosses(const std::string& db, const v1::JobSpec& spec) {
    auto store = CoordinatorStore::Open(db);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    if (!store.ok()) return {};
    auto rounds = (*store)->Rounds(runtime::JobIdOf(spec));
    EXPECT_TRUE(rounds.ok()) << rounds.status().ToString();
    std::vector<double> losses;
    if (rounds.ok()) {
      for (const RoundRecord& r : *rounds) losses.push_back(r.eval_loss);
    }
    return losses;
  }

  void PlayRound(std::vector<Client*> clients, uint64_t round, char d = 'x') {
    for (Client* c : clients) {
      auto start = c->Next();
      ASSERT_TRUE(start.ok() && start->has_round_start()) << start.status().ToString();
      ASSERT_EQ(start->round_start().round(), round);
      ASSERT_TRUE(c->Send(c->Report(round, start->round_start().attempt(),
                                    start->round_start().your_rank(), d)).ok());
    }
    for (Client* c : clients) {
      auto end = c->Next();
      ASSERT_TRUE(end.ok() && end->has_round_end()) << net::PayloadName(*end);
      ASSERT_TRUE(end->round_end().ok()) << end->round_end().error();
    }
  }

  // a and b play round 0 alone (min_peers 2); `third` joins meanwhile, syncs round 0's state
  // (digest 'x'), and all three are members of round 1, whose RoundStart each has consumed.
  void ThreeMembersInRound1(Client& a, Client& b, Client& third) {
    a = Join("a", 1000);
    b = Join("b", 1001);
    third = Join("third", 1002);
    PlayRound({&a, &b}, 0, 'x');
    auto sync = third.Next();
    ASSERT_TRUE(sync.ok() && sync->has_sync_state()) << net::PayloadName(*sync);
    ASSERT_EQ(sync->sync_state().committed_rounds(), 1u);
    v1::Envelope ready = net::MakeEnvelope(third.job);
    ready.mutable_ready()->set_committed_rounds(1);
    ready.mutable_ready()->set_state_digest(std::string(32, 'x'));
    ASSERT_TRUE(third.Send(ready).ok());
    for (Client* c : {&a, &b, &third}) {
      auto start = c->Next();
      ASSERT_TRUE(start.ok() && start->has_round_start()) << net::PayloadName(*start);
      ASSERT_EQ(start->round_start().round(), 1u);
      ASSERT_EQ(start->round_start().members_size(), 3);
    }
  }

  // One round of a grouped job: reads every client's RoundStart (checking that the members of a
  // group were told the same group), then each group reports digest `base + group index`.
  // Returns the groups as sets of client indices, and their mix flags.
  struct GroupedStart {
    std::map<uint32_t, std::set<size_t>> groups;
    std::map<uint32_t, bool> mix;
    std::map<size_t, v1::RoundStart> starts;
  };
  GroupedStart ReadGroupedStart(std::vector<Client*> clients, uint64_t round) {
    GroupedStart out;
    for (size_t i = 0; i < clients.size(); ++i) {
      auto start = clients[i]->Next();
      EXPECT_TRUE(start.ok() && start->has_round_start()) << (start.ok() ? net::PayloadName(*start) : start.status().ToString());
      if (!start.ok() || !start->has_round_start()) return out;
      const v1::RoundStart& rs = start->round_start();
      EXPECT_EQ(rs.round(), round);
      out.groups[rs.group()].insert(i);
      if (out.mix.count(rs.group())) EXPECT_EQ(out.mix[rs.group()], rs.mix());
      out.mix[rs.group()] = rs.mix();
      out.starts[i] = rs;
    }
    return out;
  }
  void ReportGrouped(std::vector<Client*> clients, const GroupedStart& g, uint64_t round, char base) {
    for (const auto& [i, rs] : g.starts) {
      ASSERT_TRUE(clients[i]->Send(clients[i]->Report(round, rs.attempt(), rs.your_rank(),
                                                      static_cast<char>(base + rs.group()))).ok());
    }
  }
  void ExpectGroupedEnd(std::vector<Client*> clients, const GroupedStart& g, char base) {
    for (const auto& [i, rs] : g.starts) {
      auto end = clients[i]->Next();
      ASSERT_TRUE(end.ok() && end->has_round_end()) << (end.ok() ? net::PayloadName(*end) : end.status().ToString());
      EXPECT_TRUE(end->round_end().ok());
      EXPECT_EQ(end->round_end().state_digest(), std::string(32, static_cast<char>(base + rs.group())));
    }
  }

  net::IoThread io_{"test-clients"};
  std::unique_ptr<Coordinator> coordinator_;
};

int RawErrorCode(boost::asio::ip::tcp::socket& s) {
  unsigned char header[4];
  boost::system::error_code ec;
  boost::asio::read(s, boost::asio::buffer(header), ec);
  if (ec) return -1;
  uint32_t n = header[0] | header[1] << 8 | header[2] << 16 | uint32_t(header[3]) << 24;
  std::string body(n, '\0');
  boost::asio::read(s, boost::asio::buffer(body), ec);
  v1::Envelope e;
  if (ec || !e.ParseFromString(body) || !e.has_error()) return -1;
  return e.error().code();
}

TEST_F(CoordinatorTest, BadInputIsRejectedAndTheCoordinatorKeepsServing) {
  StartCoordinator(SmallJob(2, 1));
  boost::asio::io_context raw_io;
  auto raw = [&] {
    boost::asio::ip::tcp::socket s(raw_io);
    s.connect({boost::asio::ip::make_address("127.0.0.1"), coordinator_->port()});
    return s;
  };
  {  // length over the maximum, before any handshake
    auto s = raw();
    const unsigned char header[4] = {0xff, 0xff, 0xff, 0x7f};
    boost::asio::write(s, boost::asio::buffer(header));
    EXPECT_EQ(RawErrorCode(s), v1::MALFORMED_FRAME);
  }
  {  // random bytes
    auto s = raw();
    const unsigned char junk[] = {8, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff};
    boost::asio::write(s, boost::asio::buffer(junk));
    EXPECT_EQ(RawErrorCode(s), v1::MALFORMED_FRAME);
  }
  {  // truncated frame: the sender vanishes mid-frame
    auto s = raw();
    const unsigned char partial[] = {50, 0, 0, 0, 1, 2};
    boost::asio::write(s, boost::asio::buffer(partial));
    s.close();
  }
  {  // silent connection: dropped after the hello timeout
    auto s = raw();
    EXPECT_EQ(RawErrorCode(s), v1::UNEXPECTED_MESSAGE);
  }
  {  // a valid frame that is not a handshake
    Client c;
    c.conn = Dial();
    c.job = coordinator_->job_id();
    v1::Envelope hello = HelloFor(c, "plain");
    ASSERT_TRUE(c.Send(hello).ok());
    ExpectRejected(c, v1::UNEXPECTED_MESSAGE, "expected a handshake message");
  }
  {  // wrong protocol version (inside the secure channel)
    Client c = Secure();
    v1::Envelope e = HelloFor(c, "old");
    e.set_protocol_version(99);
    ASSERT_TRUE(c.Send(e).ok());
    ExpectRejected(c, v1::WRONG_PROTOCOL_VERSION, "wrong protocol version 99");
  }
  {  // unknown job
    Client c = Secure();
    c.job = "not-this-job";
    ASSERT_TRUE(c.Send(HelloFor(c, "lost")).ok());
    ExpectRejected(c, v1::UNKNOWN_JOB, "unknown job");
  }
  {  // unknown message type: an envelope with no payload this build knows
    Client c = Secure();
    ASSERT_TRUE(c.Send(net::MakeEnvelope(c.job)).ok());
    ExpectRejected(c, v1::UNKNOWN_MESSAGE_TYPE, "unknown message type");
  }
  {  // unsigned Hello
    Client c = Secure();
    ASSERT_TRUE(c.Send(HelloFor(c, "unsigned"), /*sign=*/false).ok());
    ExpectRejected(c, v1::AUTH_FAILED, "not signed");
  }
  {  // forged signature: signed by a key other than the one that did the handshake
    Client c = Secure();
    v1::Envelope e = HelloFor(c, "forger");
    net::SignEnvelope(net::Identity::Generate(), e);
    ASSERT_TRUE(c.Send(e, /*sign=*/false).ok());
    ExpectRejected(c, v1::AUTH_FAILED, "not signed");
  }
  {  // report before hello
    Client c = Secure();
    ASSERT_TRUE(c.Send(c.Report(0, 0, 0, 'a')).ok());
    ExpectRejected(c, v1::UNEXPECTED_MESSAGE, "before Hello");
  }
  {  // a message a peer may never send
    Client c = Secure();
    v1::Envelope e = net::MakeEnvelope(c.job);
    e.mutable_job_done();
    ASSERT_TRUE(c.Send(e).ok());
    ExpectRejected(c, v1::UNEXPECTED_MESSAGE, "before Hello");
  }
  {  // a coordinator impostor is refused by the client's key check
    Client c;
    c.conn = Dial();
    auto key = net::ClientHandshake(*c.conn, c.id, "tributary-coordinator",
                                    net::Identity::Generate().public_key(), DeadlineAfter(2s));
    EXPECT_FALSE(key.ok());
  }
  // After all that abuse, two honest peers still join and finish the job.
  Client a = Join("alice", 1000), b = Join("bob", 1001);
  PlayRound({&a, &b}, 0);
  for (Client* c : {&a, &b}) {
    auto done = c->Next();
    ASSERT_TRUE(done.ok());
    EXPECT_TRUE(done->has_job_done()) << net::PayloadName(*done);
  }
  auto outcome = coordinator_->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(outcome.ok());
  EXPECT_TRUE(outcome->status.ok()) << outcome->status.ToString();
  ASSERT_EQ(outcome->rounds.size(), 1u);
  EXPECT_EQ(outcome->rounds[0].tokens, 200u);
}

TEST_F(CoordinatorTest, RoundsRunInOrderWithRanksKeysAndShards) {
  StartCoordinator(SmallJob(3, 2));
  std::vector<Client> peers;
  std::vector<uint32_t> shards;
  for (int i = 0; i < 3; ++i) {
    v1::Envelope ack;
    peers.push_back(Join("p" + std::to_string(i), 1000 + i, &ack));
    shards.push_back(ack.hello_ack().shard());
  }
  EXPECT_EQ(shards, (std::vector<uint32_t>{0, 1, 2}));
  std::vector<RoundSummary> seen;
  coordinator_->OnRound([&](const RoundSummary& s) { seen.push_back(s); });
  for (uint64_t round = 0; round < 2; ++round) {
    for (size_t i = 0; i < peers.size(); ++i) {
      auto start = peers[i].Next();
      ASSERT_TRUE(start.ok() && start->has_round_start());
      const auto& rs = start->round_start();
      EXPECT_TRUE(net::VerifyEnvelope(coordinator_->public_key(), *start)) << "announcements are signed";
      v1::Envelope forged = *start;
      forged.mutable_round_start()->set_your_rank(7);
      EXPECT_FALSE(net::VerifyEnvelope(coordinator_->public_key(), forged));
      EXPECT_EQ(rs.round(), round);
      EXPECT_EQ(rs.attempt(), 0u);
      EXPECT_EQ(rs.your_rank(), i) << "ranks follow shards";
      ASSERT_EQ(rs.members_size(), 3);
      EXPECT_EQ(rs.members(i).port(), 1000 + i);
      EXPECT_EQ(rs.members(i).public_key(), net::KeyToBytes(peers[i].id.public_key()));
      ASSERT_TRUE(peers[i].Send(peers[i].Report(round, 0, i, 'q')).ok());
    }
    for (auto& p : peers) {
      auto end = p.Next();
      ASSERT_TRUE(end.ok() && end->has_round_end());
      EXPECT_TRUE(end->round_end().ok());
      EXPECT_EQ(end->round_end().state_digest(), std::string(32, 'q'));
    }
  }
  auto outcome = coordinator_->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(outcome.ok() && outcome->status.ok());
  EXPECT_EQ(seen.size(), 2u);
}

TEST_F(CoordinatorTest, MemberDyingMidRoundIsRetriedWithTheSurvivors) {
  StartCoordinator(SmallJob(3, 3, /*min_peers=*/2));
  Client a, b, victim;
  ThreeMembersInRound1(a, b, victim);
  ASSERT_TRUE(a.Send(a.Report(1, 0, 0, 'y')).ok());
  victim.conn->Close();  // dies mid-round
  for (Client* c : {&a, &b}) {
    auto retry = c->Next();
    ASSERT_TRUE(retry.ok() && retry->has_round_start()) << retry.status().ToString();
    EXPECT_EQ(retry->round_start().round(), 1u);
    EXPECT_EQ(retry->round_start().attempt(), 1u);
    EXPECT_EQ(retry->round_start().members_size(), 2);
  }
  // The dead attempt's report counts for nothing; the retry's reports commit the round.
  ASSERT_TRUE(a.Send(a.Report(1, 1, 0, 'z')).ok());
  ASSERT_TRUE(b.Send(b.Report(1, 1, 1, 'z')).ok());
  for (Client* c : {&a, &b}) {
    auto end = c->Next();
    ASSERT_TRUE(end.ok() && end->has_round_end());
    EXPECT_TRUE(end->round_end().ok());
    EXPECT_EQ(end->round_end().attempt(), 1u);
  }
  PlayRound({&a, &b}, 2);
  auto outcome = coordinator_->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(outcome.ok());
  EXPECT_TRUE(outcome->status.ok()) << outcome->status.ToString();
  EXPECT_EQ(outcome->rounds[1].attempts, 2u);
  EXPECT_EQ(outcome->rounds[1].peers, 2u);
}

// A peer waiting for a round (the job needs three) hears the coordinator on every heartbeat, so it
// never mistakes the quiet for a dead link and reconnects.
TEST_F(CoordinatorTest, HeartbeatsOfAWaitingPeerAreAnswered) {
  StartCoordinator(SmallJob(3, 2));
  Client lone = Join("lone", 1000);
  for (int i = 0; i < 3; ++i) {
    v1::Envelope beat = net::MakeEnvelope(lone.job);
    beat.mutable_heartbeat()->set_committed_rounds(0);
    ASSERT_TRUE(lone.Send(beat, /*sign=*/false).ok());
    auto answer = lone.conn->Receive(DeadlineAfter(3s));
    ASSERT_TRUE(answer.ok()) << answer.status().ToString();
    ASSERT_TRUE(answer->has_heartbeat()) << net::PayloadName(*answer);
    EXPECT_EQ(answer->job_id(), lone.job);
    EXPECT_EQ(answer->heartbeat().committed_rounds(), 0u);
  }
}

TEST_F(CoordinatorTest, SilentPeerIsDeclaredDeadByLiveness) {
  v1::JobSpec spec = SmallJob(3, 2, 2);
  spec.set_liveness_timeout_ms(800);
  StartCoordinator(spec);
  // Everyone heartbeats until round 1 starts; then `mute` holds its socket open and goes quiet.
  std::vector<Client*> beating;
  std::mutex mu;
  std::atomic<bool> running{true};
  std::thread heart([&] {
    while (running) {
      {
        std::lock_guard<std::mutex> lock(mu);
        for (Client* c : beating) {
          v1::Envelope beat = net::MakeEnvelope(c->job);
          beat.mutable_heartbeat();
          c->conn->AsyncSend(beat);
        }
      }
      std::this_thread::sleep_for(100ms);
    }
  });
  Client a = Join("a", 1000);
  Client b = Join("b", 1001);
  Client mute = Join("mute", 1002);
  {
    std::lock_guard<std::mutex> lock(mu);
    beating = {&a, &b, &mute};
  }
  PlayRound({&a, &b}, 0, 'x');
  auto sync = mute.Next();
  ASSERT_TRUE(sync.ok() && sync->has_sync_state());
  v1::Envelope ready = net::MakeEnvelope(mute.job);
  ready.mutable_ready()->set_committed_rounds(1);
  ready.mutable_ready()->set_state_digest(std::string(32, 'x'));
  ASSERT_TRUE(mute.Send(ready).ok());
  for (Client* c : {&a, &b, &mute}) ASSERT_TRUE(c->Next().ok());  // round 1, three members
  {
    std::lock_guard<std::mutex> lock(mu);
    beating = {&a, &b};
  }
  auto retry = a.Next(Millis(5000));
  running = false;
  heart.join();
  ASSERT_TRUE(retry.ok() && retry->has_round_start()) << retry.status().ToString();
  EXPECT_EQ(retry->round_start().attempt(), 1u);
  EXPECT_EQ(retry->round_start().members_size(), 2);
}

// Sends a RoundFailed for round 1 attempt 0 that blames `suspect` (a rank of that attempt).
void FailBlaming(const Client& c, uint32_t suspect) {
  v1::Envelope e = net::MakeEnvelope(c.job);
  e.mutable_round_failed()->set_round(1);
  e.mutable_round_failed()->set_attempt(0);
  e.mutable_round_failed()->set_reason("greeting next rank: peer closed the connection");
  e.mutable_round_failed()->add_suspect_ranks(suspect);
  ASSERT_TRUE(c.Send(e).ok());
}

// Two members cannot reach the third, which is alive: it sits out the rest of the round and the
// other two retry without it.
TEST_F(CoordinatorTest, AMemberTheOthersCannotReachSitsOutTheRound) {
  StartCoordinator(SmallJob(3, 3, /*min_peers=*/2));
  Client a, b, unreachable;
  ThreeMembersInRound1(a, b, unreachable);  // ranks 0, 1, 2
  FailBlaming(a, 2);
  FailBlaming(b, 2);
  for (Client* c : {&a, &b}) {
    auto retry = c->Next();
    ASSERT_TRUE(retry.ok() && retry->has_round_start()) << retry.status().ToString();
    EXPECT_EQ(retry->round_start().attempt(), 1u);
    EXPECT_EQ(retry->round_start().members_size(), 2);
  }
}

// Blame spread over every member (each blamed once: a transient, not a partition) leaves nobody
// out: leaving all the blamed out would stall the round below min_peers with its peers ready.
// Seen in Churn.ChurnWithTwelvePeersJoiningAndLeaving as a 71 s stall.
TEST_F(CoordinatorTest, BlameSpreadOverTheGroupRetriesWithEveryone) {
  StartCoordinator(SmallJob(3, 3, /*min_peers=*/2));
  Client a, b, c;
  ThreeMembersInRound1(a, b, c);
  FailBlaming(a, 1);
  FailBlaming(b, 2);
  FailBlaming(c, 0);
  for (Client* client : {&a, &b, &c}) {
    auto retry = client->Next();
    ASSERT_TRUE(retry.ok() && retry->has_round_start()) << retry.status().ToString();
    EXPECT_EQ(retry->round_start().attempt(), 1u);
    EXPECT_EQ(retry->round_start().members_size(), 3);
  }
}

TEST_F(CoordinatorTest, StragglerPastTheDeadlineIsDroppedAndTheRoundRetried) {
  v1::JobSpec spec = SmallJob(3, 3, 2);
  spec.set_round_timeout_ms(1500);
  StartCoordinator(spec);
  Client a, b, slow;
  ThreeMembersInRound1(a, b, slow);
  ASSERT_TRUE(a.Send(a.Report(1, 0, 0, 'x')).ok());
  ASSERT_TRUE(b.Send(b.Report(1, 0, 1, 'x')).ok());
  ExpectRejected(slow, v1::ROUND_FAILED, "missed the deadline");
  auto retry = a.Next();
  ASSERT_TRUE(retry.ok() && retry->has_round_start());
  EXPECT_EQ(retry->round_start().attempt(), 1u);
}

TEST_F(CoordinatorTest, MajorityDigestCommitsAndTheDissenterIsEjected) {
  StartCoordinator(SmallJob(3, 3, 2));
  Client a, b, liar;
  ThreeMembersInRound1(a, b, liar);
  ASSERT_TRUE(a.Send(a.Report(1, 0, 0, 'h')).ok());
  ASSERT_TRUE(b.Send(b.Report(1, 0, 1, 'h')).ok());
  ASSERT_TRUE(liar.Send(liar.Report(1, 0, 2, 'L')).ok());
  ExpectRejected(liar, v1::ROUND_FAILED, "disagrees with the majority");
  for (Client* c : {&a, &b}) {
    auto end = c->Next();
    ASSERT_TRUE(end.ok() && end->has_round_end());
    EXPECT_TRUE(end->round_end().ok());
    EXPECT_EQ(end->round_end().state_digest(), std::string(32, 'h'));
  }
}

TEST_F(CoordinatorTest, DisagreementWithoutMajorityFailsTheJob) {
  StartCoordinator(SmallJob(2, 3));
  Client a = Join("a"), b = Join("b");
  ASSERT_TRUE(a.Next().ok());
  ASSERT_TRUE(b.Next().ok());
  ASSERT_TRUE(a.Send(a.Report(0, 0, 0, 'x')).ok());
  ASSERT_TRUE(b.Send(b.Report(0, 0, 1, 'y')).ok());
  auto end = a.Next();
  ASSERT_TRUE(end.ok() && end->has_round_end());
  EXPECT_FALSE(end->round_end().ok());
  EXPECT_NE(end->round_end().error().find("no majority"), std::string::npos);
  auto outcome = coordinator_->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(outcome.ok());
  EXPECT_EQ(outcome->status.code(), StatusCode::kAborted);
}

TEST_F(CoordinatorTest, FullJobAndWrongReportsAreRefused) {
  StartCoordinator(SmallJob(1, 2));
  Client only = Join("only");
  Client extra = Secure();
  ASSERT_TRUE(extra.Send(HelloFor(extra, "extra", 7)).ok());
  ExpectRejected(extra, v1::JOB_FULL, "already has");
  ASSERT_TRUE(only.Next().ok());                                // RoundStart 0
  ASSERT_TRUE(only.Send(only.Report(0, 0, 3, 'x')).ok());     // wrong rank
  ExpectRejected(only, v1::UNEXPECTED_MESSAGE, "rank");
}

TEST_F(CoordinatorTest, AllowlistAndInviteAdmission) {
  Client listed;
  v1::JobSpec spec = SmallJob(3, 1);
  spec.set_admission(v1::ADMISSION_ALLOWLIST);
  spec.add_allowed_keys(net::KeyToHex(listed.id.public_key()));
  StartCoordinator(spec);
  {
    Client stranger = Secure();
    ASSERT_TRUE(stranger.Send(HelloFor(stranger, "stranger")).ok());
    ExpectRejected(stranger, v1::ADMISSION_REFUSED, "allowlist");
  }
  Client admitted = Secure();
  admitted.id = listed.id;  // same key, new connection: redo the handshake with it
  admitted.conn = Dial();
  ASSERT_TRUE(net::ClientHandshake(*admitted.conn, admitted.id, "tributary-coordinator", std::nullopt,
                                   DeadlineAfter(2s)).ok());
  ASSERT_TRUE(admitted.Send(HelloFor(admitted, "listed")).ok());
  auto ack = admitted.Next();
  ASSERT_TRUE(ack.ok());
  EXPECT_TRUE(ack->has_hello_ack());

  coordinator_.reset();
  v1::JobSpec invite = SmallJob(3, 1);
  invite.set_admission(v1::ADMISSION_INVITE);
  invite.add_invite_tokens(ToHex(Sha256Of(std::string_view("open-sesame"))));
  StartCoordinator(invite);
  Client wrong = Secure();
  v1::Envelope hello = HelloFor(wrong, "guess");
  hello.mutable_hello()->set_invite_token("guess");
  ASSERT_TRUE(wrong.Send(hello).ok());
  ExpectRejected(wrong, v1::ADMISSION_REFUSED, "invalid invite token");
  Client right = Secure();
  hello = HelloFor(right, "guest");
  hello.mutable_hello()->set_invite_token("open-sesame");
  ASSERT_TRUE(right.Send(hello).ok());
  auto ack2 = right.Next();
  ASSERT_TRUE(ack2.ok());
  EXPECT_TRUE(ack2->has_hello_ack());
}

TEST_F(CoordinatorTest, LateJoinerIsToldWhereToSyncAndJoinsAfterReady) {
  StartCoordinator(SmallJob(4, 3, 2));
  Client a = Join("a", 1000), b = Join("b", 1001);
  PlayRound({&a, &b}, 0, 's');
  ASSERT_TRUE(a.Next().ok());  // round 1 is under way with a and b
  ASSERT_TRUE(b.Next().ok());
  v1::Envelope ack;
  Client late = Join("late", 1002, &ack);
  EXPECT_EQ(ack.hello_ack().committed_rounds(), 1u);
  EXPECT_EQ(ack.hello_ack().state_digest(), std::string(32, 's'));
  auto sync = late.Next();
  ASSERT_TRUE(sync.ok() && sync->has_sync_state()) << net::PayloadName(*sync);
  EXPECT_EQ(sync->sync_state().committed_rounds(), 1u);
  ASSERT_EQ(sync->sync_state().sources_size(), 2);
  EXPECT_EQ(sync->sync_state().sources(0).public_key(), net::KeyToBytes(a.id.public_key()));
  // A Ready for a state the job never committed is refused.
  {
    Client liar = Join("liar", 1003);
    ASSERT_TRUE(liar.Next().ok());  // its SyncState
    v1::Envelope bogus = net::MakeEnvelope(liar.job);
    bogus.mutable_ready()->set_committed_rounds(7);
    bogus.mutable_ready()->set_state_digest(std::string(32, '?'));
    ASSERT_TRUE(liar.Send(bogus).ok());
    ExpectRejected(liar, v1::UNEXPECTED_MESSAGE, "never committed");
  }
  // Round 1 finishes without the joiner; it is then told to sync round 2's state instead.
  ASSERT_TRUE(a.Send(a.Report(1, 0, 0, 't')).ok());
  ASSERT_TRUE(b.Send(b.Report(1, 0, 1, 't')).ok());
  for (Client* c : {&a, &b}) ASSERT_TRUE(c->Next().ok());  // RoundEnd 1
  auto resync = late.Next();
  ASSERT_TRUE(resync.ok() && resync->has_sync_state());
  EXPECT_EQ(resync->sync_state().committed_rounds(), 2u);
  v1::Envelope ready = net::MakeEnvelope(late.job);
  ready.mutable_ready()->set_committed_rounds(2);
  ready.mutable_ready()->set_state_digest(std::string(32, 't'));
  ASSERT_TRUE(late.Send(ready).ok());
  auto start = late.Next();
  ASSERT_TRUE(start.ok() && start->has_round_start()) << net::PayloadName(*start);
  EXPECT_EQ(start->round_start().round(), 2u);
  EXPECT_EQ(start->round_start().members_size(), 3);
}

// eval_beside_training: a round's eval loss comes with a later report of that round's rank 0.
// It is taken once, only from that rank 0, only for a committed round that was evaluated beside
// training, only when finite, and not from a report stuffed with more losses than rounds;
// everything else is ignored without harming the report.
TEST_F(CoordinatorTest, EvalsBesideTrainingAreTakenOnceFromTheRoundsRankZero) {
  const std::string dir = ::tributary::testing::FreshTempDir("coord-eval-beside");
  const std::string db = dir + "/coordinator.db";
  v1::JobSpec spec = SmallJob(2, 4);
  spec.set_eval_beside_training(true);  // rounds 0-2 beside training; the last (3) inline
  StartCoordinator(spec, db);
  auto late = RecordLateEvals();
  Client a = Join("a", 1000), b = Join("b", 1001);  // ranks follow shards: a is rank 0
  PlayRound({&a, &b}, 0, 'r');
  auto with_evals = [](v1::Envelope e, std::vector<std::pair<uint64_t, double>> evals) {
    for (auto [round, loss] : evals) {
      v1::EarlierEval* x = e.mutable_round_report()->add_earlier_evals();
      x->set_round(round);
      x->set_loss(loss);
    }
    return e;
  };
  // Both members report round `round` (a as rank 0), with these losses attached.
  auto play = [&](uint64_t round, char d, std::vector<std::pair<uint64_t, double>> from_a,
                  std::vector<std::pair<uint64_t, double>> from_b) {
    for (Client* c : {&a, &b}) ASSERT_TRUE(c->Next().ok());  // RoundStart
    ASSERT_TRUE(b.Send(with_evals(b.Report(round, 0, 1, d), from_b)).ok());
    ASSERT_TRUE(a.Send(with_evals(a.Report(round, 0, 0, d), from_a)).ok());
    for (Client* c : {&a, &b}) {
      auto end = c->Next();
      ASSERT_TRUE(end.ok() && end->has_round_end() && end->round_end().ok()) << "the reports still count";
    }
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // b was not round 0's rank 0; round 1 is not committed yet; NaN is not a loss; round 0's loss
  // is taken once.
  play(1, 's', {{1, 1.75}, {0, nan}, {0, 2.25}, {0, 9.0}}, {{0, 1.5}});
  // More losses than the job has rounds: the report's losses are ignored whole.
  play(2, 't', std::vector<std::pair<uint64_t, double>>(5, {1, 5.0}), {});
  // Round 0's loss again, as a peer resends what a lost or failed report carried: taken once.
  play(3, 'u', {{0, 2.25}, {1, 1.5}, {2, 1.25}}, {});
  auto outcome = coordinator_->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(outcome.ok() && outcome->status.ok());
  coordinator_.reset();
  // Only the accepted losses are announced, once each, as they arrive.
  const std::vector<std::pair<uint64_t, double>> want = {{0, 2.25}, {1, 1.5}, {2, 1.25}};
  EXPECT_EQ(*late, want);
  const std::vector<double> stored = StoredEvalLosses(db, spec);
  ASSERT_EQ(stored.size(), 4u);
  EXPECT_DOUBLE_EQ(stored[0], 2.25);
  EXPECT_DOUBLE_EQ(stored[1], 1.5);
  EXPECT_DOUBLE_EQ(stored[2], 1.25);
}

// Who was asked to evaluate a round beside training is stored with the round, by key: a loss
// that arrives after a coordinator restart, over a new connection, still counts, once, and only
// from the round's rank 0.
TEST_F(CoordinatorTest, AnEvalBesideTrainingStillCountsAfterACoordinatorRestart) {
  const std::string dir = ::tributary::testing::FreshTempDir("coord-eval-restart");
  const std::string db = dir + "/coordinator.db";
  v1::JobSpec spec = SmallJob(2, 3);
  spec.set_eval_beside_training(true);  // rounds 0-1 beside training; the last (2) inline
  StartCoordinator(spec, db);
  Client a = Join("a", 1000), b = Join("b", 1001);  // ranks follow shards: a is rank 0
  PlayRound({&a, &b}, 0, 'r');
  coordinator_.reset();  // crash-equivalent: round 0 is committed, its loss not in yet
  StartCoordinator(std::nullopt, db);
  auto late = RecordLateEvals();
  std::vector<Client> back;
  for (const Client* before : {&a, &b}) {
    Client c = Secure(before->id);  // same key, new connection
    v1::Envelope hello = HelloFor(c, before == &a ? "a" : "b", before == &a ? 1000 : 1001);
    hello.mutable_hello()->set_committed_rounds(1);
    hello.mutable_hello()->set_state_digest(std::string(32, 'r'));
    ASSERT_TRUE(c.Send(hello).ok());
    auto ack = c.Next();
    ASSERT_TRUE(ack.ok() && ack->has_hello_ack());
    back.push_back(c);
  }
  auto report = [](v1::Envelope e, double loss_of_round_0) {
    v1::EarlierEval* x = e.mutable_round_report()->add_earlier_evals();
    x->set_round(0);
    x->set_loss(loss_of_round_0);
    return e;
  };
  for (Client& c : back) ASSERT_TRUE(c.Next().ok());  // RoundStart of round 1
  // b was not round 0's rank 0; a's loss counts; a second one from a does not.
  ASSERT_TRUE(back[1].Send(report(back[1].Report(1, 0, 1, 's'), 7.0)).ok());
  ASSERT_TRUE(back[0].Send(report(back[0].Report(1, 0, 0, 's'), 2.5)).ok());
  for (Client& c : back) ASSERT_TRUE(c.Next().ok());  // RoundEnd
  for (Client& c : back) ASSERT_TRUE(c.Next().ok());  // RoundStart of round 2
  ASSERT_TRUE(back[1].Send(back[1].Report(2, 0, 1, 't')).ok());
  ASSERT_TRUE(back[0].Send(report(back[0].Report(2, 0, 0, 't'), 3.0)).ok());
  auto outcome = coordinator_->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(outcome.ok() && outcome->status.ok());
  coordinator_.reset();
  const std::vector<std::pair<uint64_t, double>> want = {{0, 2.5}};
  EXPECT_EQ(*late, want);
  const std::vector<double> stored = StoredEvalLosses(db, spec);
  ASSERT_EQ(stored.size(), 3u);
  EXPECT_DOUBLE_EQ(stored[0], 2.5);
  std::filesystem::remove_all(dir);
}

TEST_F(CoordinatorTest, RestartedCoordinatorResumesFromItsDatabase) {
  const std::string dir = ::tributary::testing::FreshTempDir("coord-db");
  const std::string db = dir + "/coordinator.db";
  const v1::JobSpec spec = SmallJob(2, 3);
  StartCoordinator(spec, db);
  Client a = Join("a", 1000), b = Join("b", 1001);
  PlayRound({&a, &b}, 0, 'r');
  coordinator_.reset();  // crash-equivalent: nothing else is written after the commit
  StartCoordinator(std::nullopt, db);
  EXPECT_EQ(coordinator_->job_id(), runtime::JobIdOf(spec));
  // Peers reconnect with the state they hold and go straight on with round 1.
  std::vector<Client> back;
  for (int i = 0; i < 2; ++i) {
    Client c = Secure();
    v1::Envelope hello = HelloFor(c, i ? "b" : "a", 1000 + i);
    hello.mutable_hello()->set_committed_rounds(1);
    hello.mutable_hello()->set_state_digest(std::string(32, 'r'));
    ASSERT_TRUE(c.Send(hello).ok());
    auto ack = c.Next();
    ASSERT_TRUE(ack.ok() && ack->has_hello_ack());
    EXPECT_EQ(ack->hello_ack().committed_rounds(), 1u);
    back.push_back(c);
  }
  PlayRound({&back[0], &back[1]}, 1);
  std::filesystem::remove_all(dir);
}

// A coordinator can die after recording a round and before its members hear of it. They come
// back holding that round as reported, not committed; the one whose reported state is the
// committed one commits it and is current at once, the other (a state never committed) syncs.
// Before Hello.reported_state_digest, both came back behind the job with no one to sync from.
TEST_F(CoordinatorTest, AReportedRoundTheCoordinatorCommittedBeforeDyingIsAdoptedOnReconnect) {
  const std::string dir = ::tributary::testing::FreshTempDir("coord-reported");
  const std::string db = dir + "/coordinator.db";
  const v1::JobSpec spec = SmallJob(2, 4);
  StartCoordinator(spec, db);
  Client a = Join("a", 1000), b = Join("b", 1001);
  PlayRound({&a, &b}, 0, 'x');
  PlayRound({&a, &b}, 1, 'y');  // recorded; the RoundEnds read here stand for ones never delivered
  coordinator_.reset();
  StartCoordinator(std::nullopt, db);

  auto rejoin = [&](const Client& old, const std::string& name, uint32_t port, char reported) {
    Client c = Secure(old.id);
    v1::Envelope hello = HelloFor(c, name, port);
    hello.mutable_hello()->set_committed_rounds(1);
    hello.mutable_hello()->set_state_digest(std::string(32, 'x'));
    hello.mutable_hello()->set_reported_state_digest(std::string(32, reported));
    EXPECT_TRUE(c.Send(hello).ok());
    auto ack = c.Next();
    EXPECT_TRUE(ack.ok() && ack->has_hello_ack()) << (ack.ok() ? net::PayloadName(*ack) : ack.status().ToString());
    if (ack.ok()) EXPECT_EQ(ack->hello_ack().committed_rounds(), 2u);
    return std::make_pair(c, ack.ok() && ack->hello_ack().reported_round_committed());
  };
  auto [a2, a_adopted] = rejoin(a, "a", 1000, 'y');
  auto [b2, b_adopted] = rejoin(b, "b", 1001, 'z');
  EXPECT_TRUE(a_adopted) << "a reported the state round 1 committed";
  EXPECT_FALSE(b_adopted) << "no round committed state z";

  // b is behind and syncs from a, the one peer known to hold round 1's state.
  auto sync = b2.Next();
  ASSERT_TRUE(sync.ok() && sync->has_sync_state()) << (sync.ok() ? net::PayloadName(*sync) : sync.status().ToString());
  EXPECT_EQ(sync->sync_state().committed_rounds(), 2u);
  EXPECT_EQ(sync->sync_state().state_digest(), std::string(32, 'y'));
  ASSERT_EQ(sync->sync_state().sources_size(), 1);
  EXPECT_EQ(sync->sync_state().sources(0).peer_name(), "a");
  v1::Envelope ready = net::MakeEnvelope(b2.job);
  ready.mutable_ready()->set_committed_rounds(2);
  ready.mutable_ready()->set_state_digest(std::string(32, 'y'));
  ASSERT_TRUE(b2.Send(ready).ok());
  PlayRound({&a2, &b2}, 2, 'w');
  std::filesystem::remove_all(dir);
}

v1::JobSpec GroupedJob(uint32_t peers, uint32_t rounds, uint32_t group_size, uint32_t min_peers = 0) {
  v1::JobSpec spec = SmallJob(peers, rounds, min_peers);
  spec.set_mode(v1::MODE_DILOCO);
  spec.set_group_size(group_size);
  return spec;
}

TEST_F(CoordinatorTest, GroupsAreRemixedEachRoundAndAFailureStaysInItsGroup) {
  StartCoordinator(GroupedJob(6, 4, 3));
  std::vector<Client> peers;
  for (int i = 0; i < 6; ++i) peers.push_back(Join("p" + std::to_string(i), 1000 + i));
  std::vector<Client*> all;
  for (auto& p : peers) all.push_back(&p);

  // Round 0: two groups of three; everyone starts from θ_0, so nobody mixes.
  GroupedStart r0 = ReadGroupedStart(all, 0);
  ASSERT_EQ(r0.groups.size(), 2u);
  for (const auto& [index, members] : r0.groups) {
    EXPECT_EQ(members.size(), 3u);
    EXPECT_FALSE(r0.mix[index]);
    for (size_t i : members) {
      EXPECT_EQ(r0.starts[i].groups(), 2u);
      EXPECT_EQ(r0.starts[i].members_size(), 3);
    }
  }
  ReportGrouped(all, r0, 0, 'a');  // group 0 commits state 'a', group 1 state 'b'
  ExpectGroupedEnd(all, r0, 'a');

  // Round 1: other groups, and a group whose members hold different states mixes them.
  GroupedStart r1 = ReadGroupedStart(all, 1);
  ASSERT_EQ(r1.groups.size(), 2u);
  std::set<std::set<size_t>> before, after;
  for (const auto& [i, m] : r0.groups) before.insert(m);
  for (const auto& [i, m] : r1.groups) after.insert(m);
  EXPECT_NE(before, after) << "membership must change between rounds";
  std::map<size_t, uint32_t> group0;
  for (const auto& [index, members] : r0.groups) {
    for (size_t i : members) group0[i] = index;
  }
  for (const auto& [index, members] : r1.groups) {
    std::set<uint32_t> origins;
    for (size_t i : members) origins.insert(group0[i]);
    EXPECT_EQ(r1.mix[index], origins.size() > 1) << "group " << index;
  }
  ReportGrouped(all, r1, 1, 'c');
  ExpectGroupedEnd(all, r1, 'c');

  // Round 2: the status shows the groups.
  GroupedStart r2 = ReadGroupedStart(all, 2);
  ASSERT_EQ(r2.groups.size(), 2u);
  CoordinatorAddress address{"127.0.0.1", coordinator_->port(), coordinator_->public_key()};
  auto status = QueryStatus(address, net::Identity::Generate());
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  ASSERT_EQ(status->jobs(0).groups_size(), 2);
  EXPECT_EQ(status->jobs(0).group_size(), 3u);
  EXPECT_EQ(status->jobs(0).groups(0).members_size(), 3);
  EXPECT_NE(FormatStatus(*status).find("groups of up to 3"), std::string::npos) << FormatStatus(*status);

  // A member of group 0 dies: only group 0 retries (without it); group 1 is not disturbed.
  const size_t victim = *r2.groups[0].begin();
  peers[victim].conn->Close();
  std::vector<size_t> survivors;
  for (size_t i : r2.groups[0]) {
    if (i != victim) survivors.push_back(i);
  }
  for (size_t i : r2.groups[1]) {
    ASSERT_TRUE(all[i]->Send(all[i]->Report(2, r2.starts[i].attempt(), r2.starts[i].your_rank(), 'f')).ok());
  }
  for (size_t i : survivors) {
    auto retry = all[i]->Next();
    ASSERT_TRUE(retry.ok() && retry->has_round_start()) << net::PayloadName(*retry);
    EXPECT_EQ(retry->round_start().round(), 2u);
    EXPECT_EQ(retry->round_start().group(), 0u);
    EXPECT_EQ(retry->round_start().members_size(), 2);
    EXPECT_NE(retry->round_start().attempt(), r2.starts[i].attempt());
    r2.starts[i] = retry->round_start();
  }
  for (size_t i : survivors) {
    ASSERT_TRUE(all[i]->Send(all[i]->Report(2, r2.starts[i].attempt(), r2.starts[i].your_rank(), 'e')).ok());
  }
  for (size_t i : survivors) {
    auto end = all[i]->Next();
    ASSERT_TRUE(end.ok() && end->has_round_end());
    EXPECT_EQ(end->round_end().state_digest(), std::string(32, 'e'));
  }
  for (size_t i : r2.groups[1]) {  // group 1 was never retried: its next message is the commit
    auto end = all[i]->Next();
    ASSERT_TRUE(end.ok() && end->has_round_end()) << net::PayloadName(*end);
    EXPECT_EQ(end->round_end().state_digest(), std::string(32, 'f'));
  }
}

TEST_F(CoordinatorTest, GroupedJobResumesAfterRestartWithEachPeersState) {
  const std::string dir = ::tributary::testing::FreshTempDir("coord-groups-db");
  const std::string db = dir + "/coordinator.db";
  const v1::JobSpec spec = GroupedJob(7, 4, 3, 6);
  StartCoordinator(spec, db);
  std::vector<Client> peers;
  for (int i = 0; i < 6; ++i) peers.push_back(Join("p" + std::to_string(i), 1000 + i));
  std::vector<Client*> all;
  for (auto& p : peers) all.push_back(&p);
  GroupedStart r0 = ReadGroupedStart(all, 0);
  ASSERT_EQ(r0.groups.size(), 2u);
  ReportGrouped(all, r0, 0, 'a');
  ExpectGroupedEnd(all, r0, 'a');
  coordinator_.reset();  // crash-equivalent: nothing else is written after the commit
  StartCoordinator(std::nullopt, db);
  // Every peer comes back with its key and its own group's state and is current: nobody is told
  // to sync. (With fresh keys the round-1 partition is a fresh draw that repeats round 0's one
  // time in ten, and then no group needs to mix.)
  std::vector<Client> back;
  for (size_t i = 0; i < 6; ++i) {
    Client c = Secure(peers[i].id);
    v1::Envelope hello = HelloFor(c, "p" + std::to_string(i), 1000 + static_cast<uint32_t>(i));
    hello.mutable_hello()->set_committed_rounds(1);
    hello.mutable_hello()->set_state_digest(std::string(32, static_cast<char>('a' + r0.starts[i].group())));
    ASSERT_TRUE(c.Send(hello).ok());
    auto ack = c.Next();
    ASSERT_TRUE(ack.ok() && ack->has_hello_ack()) << (ack.ok() ? net::PayloadName(*ack) : ack.status().ToString());
    EXPECT_EQ(ack->hello_ack().committed_rounds(), 1u);
    back.push_back(c);
  }
  std::vector<Client*> again;
  for (auto& c : back) again.push_back(&c);
  GroupedStart r1 = ReadGroupedStart(again, 1);
  ASSERT_EQ(r1.groups.size(), 2u);
  bool any_mix = false;
  for (const auto& [index, mix] : r1.mix) any_mix = any_mix || mix;
  EXPECT_TRUE(any_mix) << "the restarted coordinator must know the groups' states differ";
  // A newcomer syncs one committed state, from peers that hold exactly that state.
  Client late = Join("late", 1010);
  auto sync = late.Next();
  ASSERT_TRUE(sync.ok() && sync->has_sync_state()) << net::PayloadName(*sync);
  const char held = sync->sync_state().state_digest()[0];
  ASSERT_TRUE(held == 'a' || held == 'b') << sync->sync_state().state_digest();
  ASSERT_GT(sync->sync_state().sources_size(), 0);
  for (const auto& source : sync->sync_state().sources()) {
    bool holds = false;
    for (size_t i = 0; i < 6; ++i) {
      if (net::KeyToBytes(back[i].id.public_key()) == source.public_key()) {
        holds = static_cast<char>('a' + r0.starts[i].group()) == held;
      }
    }
    EXPECT_TRUE(holds) << "source " << source.peer_name() << " does not hold the announced state";
  }
  std::filesystem::remove_all(dir);
}

TEST_F(CoordinatorTest, StatusAndSubmittedJobs) {
  StartCoordinator(std::nullopt);
  v1::JobSpec spec = SmallJob(2, 1);
  spec.set_name("submitted");
  CoordinatorAddress address{"127.0.0.1", coordinator_->port(), coordinator_->public_key()};
  auto job_id = SubmitJob(address, net::Identity::Generate(), spec);
  ASSERT_TRUE(job_id.ok()) << job_id.status().ToString();
  EXPECT_EQ(*job_id, runtime::JobIdOf(spec));
  Client c = Secure();
  c.job = *job_id;
  ASSERT_TRUE(c.Send(HelloFor(c, "worker")).ok());
  auto ack = c.Next();
  ASSERT_TRUE(ack.ok() && ack->has_hello_ack());
  auto status = QueryStatus(address, net::Identity::Generate());
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  ASSERT_EQ(status->jobs_size(), 1);
  EXPECT_EQ(status->jobs(0).name(), "submitted");
  ASSERT_EQ(status->jobs(0).peers_size(), 1);
  EXPECT_EQ(status->jobs(0).peers(0).name(), "worker");
  const std::string text = FormatStatus(*status);
  EXPECT_NE(text.find("worker"), std::string::npos);
  EXPECT_NE(text.find("waiting for peers"), std::string::npos);
  v1::JobSpec bad = spec;
  bad.set_rounds(0);
  EXPECT_FALSE(SubmitJob(address, net::Identity::Generate(), bad).ok());
}

}  // namespace
}  // namespace tributary::launcher
