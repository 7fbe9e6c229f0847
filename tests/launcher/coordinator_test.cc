// The coordinator against real TCP clients speaking (or abusing) protocol v1.
#include "launcher/coordinator.h"

#include <gtest/gtest.h>

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "net/connection.h"
#include "net/io_thread.h"
#include "runtime/job_spec.h"

namespace tributary::launcher {
namespace {

using namespace std::chrono_literals;
using net::Connection;

v1::JobSpec SmallJob(uint32_t peers, uint32_t rounds) {
  v1::JobSpec spec = runtime::DefaultJobSpec();
  spec.set_num_peers(peers);
  spec.set_rounds(rounds);
  spec.set_round_timeout_ms(3000);
  return spec;
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void StartCoordinator(v1::JobSpec spec) {
    Coordinator::Options options;
    options.spec = spec;
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

  // Joins as a peer and returns the connection after the HelloAck.
  std::shared_ptr<Connection> Join(const std::string& name, uint32_t listen_port = 5555) {
    auto c = Dial();
    v1::Envelope hello = net::MakeEnvelope(coordinator_->job_id());
    hello.mutable_hello()->set_role(v1::ROLE_PEER);
    hello.mutable_hello()->set_peer_name(name);
    hello.mutable_hello()->set_listen_port(listen_port);
    EXPECT_TRUE(c->Send(hello, DeadlineAfter(2s)).ok());
    auto ack = c->Receive(DeadlineAfter(2s));
    EXPECT_TRUE(ack.ok()) << ack.status().ToString();
    EXPECT_TRUE(ack->has_hello_ack()) << net::PayloadName(*ack);
    EXPECT_EQ(runtime::JobIdOf(ack->hello_ack().spec()), coordinator_->job_id());
    return c;
  }

  // Expects an Error frame with `code`, then the connection closed by the coordinator.
  void ExpectRejected(const std::shared_ptr<Connection>& c, v1::ErrorCode code,
                      const std::string& words) {
    auto reply = c->Receive(DeadlineAfter(3s));
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    ASSERT_TRUE(reply->has_error()) << net::PayloadName(*reply);
    EXPECT_EQ(reply->error().code(), code) << reply->error().message();
    EXPECT_NE(reply->error().message().find(words), std::string::npos) << reply->error().message();
    auto after = c->Receive(DeadlineAfter(3s));
    EXPECT_EQ(after.status().code(), StatusCode::kUnavailable) << "connection should be closed";
  }

  v1::Envelope Report(uint64_t round, uint32_t rank, char digest_byte) {
    v1::Envelope e = net::MakeEnvelope(coordinator_->job_id());
    auto* r = e.mutable_round_report();
    r->set_round(round);
    r->set_rank(rank);
    r->set_theta_digest(std::string(32, digest_byte));
    r->set_train_loss(2.0);
    r->set_tokens(100);
    return e;
  }

  net::IoThread io_{"test-clients"};
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorTest, BadInputIsRejectedAndTheCoordinatorKeepsServing) {
  StartCoordinator(SmallJob(2, 1));
  const std::string job = coordinator_->job_id();

  {  // wrong protocol version
    auto c = Dial();
    v1::Envelope e = net::MakeEnvelope(job);
    e.set_protocol_version(99);
    e.mutable_hello()->set_role(v1::ROLE_PEER);
    ASSERT_TRUE(c->Send(e, DeadlineAfter(2s)).ok());
    ExpectRejected(c, v1::WRONG_PROTOCOL_VERSION, "wrong protocol version 99");
  }
  {  // wrong job id
    auto c = Dial();
    v1::Envelope e = net::MakeEnvelope("not-this-job");
    e.mutable_hello()->set_role(v1::ROLE_PEER);
    ASSERT_TRUE(c->Send(e, DeadlineAfter(2s)).ok());
    ExpectRejected(c, v1::WRONG_JOB, "wrong job id");
  }
  {  // unknown message type: an envelope with no payload this build knows
    auto c = Dial();
    ASSERT_TRUE(c->Send(net::MakeEnvelope(job), DeadlineAfter(2s)).ok());
    ExpectRejected(c, v1::UNKNOWN_MESSAGE_TYPE, "unknown message type");
  }
  {  // a message that is valid but not allowed from a peer
    auto c = Dial();
    v1::Envelope e = net::MakeEnvelope(job);
    e.mutable_job_done();
    ASSERT_TRUE(c->Send(e, DeadlineAfter(2s)).ok());
    ExpectRejected(c, v1::UNEXPECTED_MESSAGE, "job_done");
  }
  {  // report before hello
    auto c = Dial();
    ASSERT_TRUE(c->Send(Report(0, 0, 'a'), DeadlineAfter(2s)).ok());
    ExpectRejected(c, v1::UNEXPECTED_MESSAGE, "before Hello");
  }
  boost::asio::io_context raw_io;
  auto raw = [&] {
    boost::asio::ip::tcp::socket s(raw_io);
    s.connect({boost::asio::ip::make_address("127.0.0.1"), coordinator_->port()});
    return s;
  };
  auto read_error_code = [](boost::asio::ip::tcp::socket& s) -> int {
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
  };
  {  // length over the maximum
    auto s = raw();
    const unsigned char header[4] = {0xff, 0xff, 0xff, 0x7f};
    boost::asio::write(s, boost::asio::buffer(header));
    EXPECT_EQ(read_error_code(s), v1::MALFORMED_FRAME);
  }
  {  // random bytes
    auto s = raw();
    const unsigned char junk[] = {8, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff};
    boost::asio::write(s, boost::asio::buffer(junk));
    EXPECT_EQ(read_error_code(s), v1::MALFORMED_FRAME);
  }
  {  // truncated frame: the sender vanishes mid-frame
    auto s = raw();
    const unsigned char partial[] = {50, 0, 0, 0, 1, 2};
    boost::asio::write(s, boost::asio::buffer(partial));
    s.close();
  }
  {  // silent connection: dropped after the hello timeout
    auto s = raw();
    EXPECT_EQ(read_error_code(s), v1::UNEXPECTED_MESSAGE);
  }
  // After all that abuse, two honest peers still join and finish the job.
  auto a = Join("alice");
  auto b = Join("bob");
  for (auto& c : {a, b}) {
    auto start = c->Receive(DeadlineAfter(2s));
    ASSERT_TRUE(start.ok() && start->has_round_start()) << start.status().ToString();
    ASSERT_TRUE(c->Send(Report(0, start->round_start().your_rank(), 'x'), DeadlineAfter(2s)).ok());
  }
  for (auto& c : {a, b}) {
    auto end = c->Receive(DeadlineAfter(2s));
    ASSERT_TRUE(end.ok() && end->has_round_end());
    EXPECT_TRUE(end->round_end().ok());
    auto done = c->Receive(DeadlineAfter(2s));
    ASSERT_TRUE(done.ok());
    EXPECT_TRUE(done->has_job_done());
  }
  auto outcome = coordinator_->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(outcome.ok());
  EXPECT_TRUE(outcome->status.ok()) << outcome->status.ToString();
  ASSERT_EQ(outcome->rounds.size(), 1u);
  EXPECT_EQ(outcome->rounds[0].tokens, 200u);
}

TEST_F(CoordinatorTest, RoundsRunInOrderWithRanksAndMembers) {
  StartCoordinator(SmallJob(3, 2));
  std::vector<std::shared_ptr<Connection>> peers = {Join("p0", 1000), Join("p1", 1001),
                                                   Join("p2", 1002)};
  std::vector<RoundSummary> seen;
  coordinator_->OnRound([&](const RoundSummary& s) { seen.push_back(s); });
  for (uint64_t round = 0; round < 2; ++round) {
    for (size_t i = 0; i < peers.size(); ++i) {
      auto start = peers[i]->Receive(DeadlineAfter(2s));
      ASSERT_TRUE(start.ok() && start->has_round_start());
      EXPECT_EQ(start->round_start().round(), round);
      EXPECT_EQ(start->round_start().your_rank(), i) << "ranks follow join order";
      ASSERT_EQ(start->round_start().members_size(), 3);
      EXPECT_EQ(start->round_start().members(i).port(), 1000 + i);
      EXPECT_EQ(start->round_start().members(i).host(), "127.0.0.1");
      ASSERT_TRUE(peers[i]->Send(Report(round, i, 'q'), DeadlineAfter(2s)).ok());
    }
    for (auto& p : peers) {
      auto end = p->Receive(DeadlineAfter(2s));
      ASSERT_TRUE(end.ok() && end->has_round_end());
      EXPECT_TRUE(end->round_end().ok());
      EXPECT_EQ(end->round_end().theta_digests_size(), 3);
    }
  }
  auto outcome = coordinator_->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(outcome.ok() && outcome->status.ok());
  EXPECT_EQ(seen.size(), 2u);
}

TEST_F(CoordinatorTest, DisagreeingThetaDigestsFailTheJob) {
  StartCoordinator(SmallJob(2, 3));
  auto a = Join("a"), b = Join("b");
  ASSERT_TRUE(a->Receive(DeadlineAfter(2s)).ok());
  ASSERT_TRUE(b->Receive(DeadlineAfter(2s)).ok());
  ASSERT_TRUE(a->Send(Report(0, 0, 'x'), DeadlineAfter(2s)).ok());
  ASSERT_TRUE(b->Send(Report(0, 1, 'y'), DeadlineAfter(2s)).ok());
  auto end = a->Receive(DeadlineAfter(2s));
  ASSERT_TRUE(end.ok() && end->has_round_end());
  EXPECT_FALSE(end->round_end().ok());
  EXPECT_NE(end->round_end().error().find("disagree"), std::string::npos);
  auto outcome = coordinator_->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(outcome.ok());
  EXPECT_EQ(outcome->status.code(), StatusCode::kAborted);
  EXPECT_NE(outcome->status.message().find("disagree"), std::string::npos);
}

TEST_F(CoordinatorTest, PeerDyingMidRoundAbortsOthersWithItsName) {
  StartCoordinator(SmallJob(2, 3));
  auto a = Join("survivor"), b = Join("victim");
  ASSERT_TRUE(a->Receive(DeadlineAfter(2s)).ok());
  ASSERT_TRUE(b->Receive(DeadlineAfter(2s)).ok());
  b->Close();
  auto abort = a->Receive(DeadlineAfter(3s));
  ASSERT_TRUE(abort.ok()) << abort.status().ToString();
  ASSERT_TRUE(abort->has_abort()) << net::PayloadName(*abort);
  EXPECT_NE(abort->abort().reason().find("victim"), std::string::npos) << abort->abort().reason();
  EXPECT_NE(abort->abort().reason().find("disconnected during round 0"), std::string::npos);
  auto outcome = coordinator_->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(outcome.ok());
  EXPECT_FALSE(outcome->status.ok());
}

TEST_F(CoordinatorTest, SilentRoundHitsTheDeadline) {
  v1::JobSpec spec = SmallJob(2, 3);
  spec.set_round_timeout_ms(400);
  StartCoordinator(spec);
  auto a = Join("fast"), b = Join("stuck");
  ASSERT_TRUE(a->Receive(DeadlineAfter(2s)).ok());
  ASSERT_TRUE(b->Receive(DeadlineAfter(2s)).ok());
  ASSERT_TRUE(a->Send(Report(0, 0, 'x'), DeadlineAfter(2s)).ok());
  auto abort = a->Receive(DeadlineAfter(3s));
  ASSERT_TRUE(abort.ok() && abort->has_abort());
  EXPECT_NE(abort->abort().reason().find("exceeded its deadline"), std::string::npos);
  EXPECT_NE(abort->abort().reason().find("stuck"), std::string::npos);
}

TEST_F(CoordinatorTest, FullJobRefusesExtraPeersAndWrongReportsAreRejected) {
  StartCoordinator(SmallJob(1, 2));
  auto only = Join("only");
  auto extra = Dial();
  v1::Envelope hello = net::MakeEnvelope(coordinator_->job_id());
  hello.mutable_hello()->set_role(v1::ROLE_PEER);
  hello.mutable_hello()->set_listen_port(7);
  ASSERT_TRUE(extra->Send(hello, DeadlineAfter(2s)).ok());
  ExpectRejected(extra, v1::JOB_FULL, "already has");

  ASSERT_TRUE(only->Receive(DeadlineAfter(2s)).ok());  // RoundStart 0
  ASSERT_TRUE(only->Send(Report(5, 0, 'x'), DeadlineAfter(2s)).ok());  // wrong round
  ExpectRejected(only, v1::UNEXPECTED_MESSAGE, "expected round 0");
}

}  // namespace
}  // namespace tributary::launcher
