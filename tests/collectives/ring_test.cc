#include "collectives/ring.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "collectives/allreduce.h"
#include "tests/collectives/cluster.h"

namespace tributary::collectives {
namespace {

using namespace std::chrono_literals;
using testing::LocalCluster;
using testing::OnEveryRank;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

v1::Envelope RingHello(const std::string& job_id, uint32_t rank, uint64_t round) {
  v1::Envelope env = net::MakeEnvelope(job_id);
  env.mutable_hello()->set_role(v1::ROLE_RING_NEIGHBOR);
  env.mutable_hello()->set_rank(rank);
  env.mutable_hello()->set_round(round);
  return env;
}

class RingFormTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(RingFormTest, EveryRankGetsItsNeighbours) {
  const uint32_t world = GetParam();
  LocalCluster cluster(world);
  auto rings = cluster.FormAll("job", 3);
  for (uint32_t r = 0; r < world; ++r) {
    ASSERT_NE(rings[r], nullptr);
    EXPECT_EQ(rings[r]->rank(), r);
    EXPECT_EQ(rings[r]->world(), world);
    EXPECT_EQ(rings[r]->round(), 3u);
    EXPECT_EQ(rings[r]->next_member().rank, (r + 1) % world);
    EXPECT_EQ(rings[r]->prev_member().rank, (r + world - 1) % world);
    if (world > 1) {
      EXPECT_GT(rings[r]->bytes_sent(), 0u) << "hello and ack were counted";
      EXPECT_GT(rings[r]->bytes_received(), 0u);
    } else {
      EXPECT_EQ(rings[r]->bytes_sent(), 0u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, RingFormTest, ::testing::Values(1u, 2u, 3u, 5u));

TEST(RingTest, BadHellosAreRejectedWhileTheRightNeighbourConnects) {
  LocalCluster cluster(2);
  net::IoThread tester("tester");
  auto dial = [&] {
    auto c = net::Connection::Dial(tester.context(), "127.0.0.1", cluster.members()[0].port,
                                   DeadlineAfter(2s));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return *c;
  };
  // Queued on rank 0's listener before its real prev (rank 1) even starts forming.
  auto silent = dial();  // first in line: must not block the others
  auto wrong_job = dial();
  ASSERT_TRUE(wrong_job->Send(RingHello("other-job", 1, 1), DeadlineAfter(2s)).ok());
  auto wrong_version = dial();
  v1::Envelope old = RingHello("job", 1, 1);
  old.set_protocol_version(net::kProtocolVersion + 1);
  ASSERT_TRUE(wrong_version->Send(old, DeadlineAfter(2s)).ok());
  auto wrong_rank = dial();
  ASSERT_TRUE(wrong_rank->Send(RingHello("job", 0, 1), DeadlineAfter(2s)).ok());

  auto rank0 = std::async(std::launch::async, [&] { return cluster.Form(0, "job", 1); });
  struct Expectation {
    std::shared_ptr<net::Connection> conn;
    v1::ErrorCode code;
    std::string words;
  };
  for (auto& [conn, code, words] :
       std::vector<Expectation>{{wrong_job, v1::WRONG_JOB, "wrong job id"},
                                {wrong_version, v1::WRONG_PROTOCOL_VERSION, "protocol version"},
                                {wrong_rank, v1::UNEXPECTED_MESSAGE, "expected rank 1"}}) {
    auto reply = conn->Receive(DeadlineAfter(5s));
    ASSERT_TRUE(reply.ok()) << reply.status().ToString();
    ASSERT_TRUE(reply->has_error()) << net::PayloadName(*reply);
    EXPECT_EQ(reply->error().code(), code) << reply->error().message();
    EXPECT_TRUE(Contains(reply->error().message(), words)) << reply->error().message();
    EXPECT_FALSE(conn->Receive(DeadlineAfter(2s)).ok()) << "rejected connections are closed";
  }

  auto rank1 = cluster.Form(1, "job", 1);
  ASSERT_TRUE(rank1.ok()) << rank1.status().ToString();
  auto ring0 = rank0.get();
  ASSERT_TRUE(ring0.ok()) << ring0.status().ToString();
  EXPECT_FALSE(silent->Receive(DeadlineAfter(2s)).ok()) << "left-over connections are closed";

  std::vector<std::unique_ptr<Ring>> rings;
  rings.push_back(std::move(ring0).value());
  rings.push_back(std::move(rank1).value());
  auto sums = OnEveryRank(2, [&](uint32_t r) {
    std::vector<float> v{1.0f + r, 10.0f * (r + 1)};
    auto st = RingAllreduce(*rings[r], v, {.tag = "t", .deadline = DeadlineAfter(5s)});
    EXPECT_TRUE(st.ok()) << st.status().ToString();
    return v;
  });
  EXPECT_EQ(sums[0], (std::vector<float>{3.0f, 30.0f}));
  EXPECT_EQ(sums[1], sums[0]);
}

TEST(RingTest, MismatchedRoundIsRejectedWithoutWaitingForTheDeadline) {
  LocalCluster cluster(2);
  const auto start = Clock::now();
  auto results = OnEveryRank(2, [&](uint32_t r) { return cluster.Form(r, "job", 7 + r, 3s); });
  int rejected = 0;
  for (auto& result : results) {
    ASSERT_FALSE(result.ok());
    if (result.status().code() != StatusCode::kFailedPrecondition) continue;
    ++rejected;
    EXPECT_TRUE(Contains(result.status().message(), "round")) << result.status().ToString();
    EXPECT_TRUE(Contains(result.status().message(), "rank ")) << result.status().ToString();
  }
  // Each side rejects the other's hello; a side that gave up first may leave the other waiting
  // (its connection never accepted), but at least one learns the reason at once.
  EXPECT_GE(rejected, 1);
  EXPECT_LT(SecondsSince(start), 3.5);
}

// Members hear a retry's RoundStart at slightly different times. Rank 1 is still forming
// attempt 0 when rank 0 greets it for attempt 1: it answers ATTEMPT_AHEAD instead of rejecting
// the hello, and rank 0 greets it again until rank 1 has moved on (its RoundStart arrives at
// 400 ms). Rank 2 starts late, so that rank 1's stale greeting waits in its backlog instead of
// failing rank 1's old attempt early. (Before, rank 1 rejected the hello and attempt 1 failed.)
TEST(RingTest, AMemberStillFormingThePreviousAttemptIsGreetedAgain) {
  LocalCluster cluster(3);
  std::atomic<bool> retry_heard{false};
  auto results = OnEveryRank(3, [&](uint32_t r) -> Result<std::unique_ptr<Ring>> {
    auto form = [&](uint32_t attempt, FormControl* control) {
      return Ring::Form(cluster.io(r), cluster.listener(r), r, cluster.members(), "job", 3, attempt, nullptr,
                        DeadlineAfter(5s), control);
    };
    if (r == 0) return form(1, nullptr);
    if (r == 2) {
      std::this_thread::sleep_for(600ms);
      return form(1, nullptr);
    }
    FormControl control;
    control.cancelled = [&] { return retry_heard.load(); };
    std::thread late([&] {
      std::this_thread::sleep_for(400ms);
      retry_heard = true;
    });
    auto stale = form(0, &control);
    late.join();
    EXPECT_FALSE(stale.ok());
    EXPECT_EQ(stale.status().code(), StatusCode::kAborted) << stale.status().ToString();
    return form(1, nullptr);
  });
  for (auto& result : results) EXPECT_TRUE(result.ok()) << result.status().ToString();
}

TEST(RingTest, MissingNeighbourMakesFormTimeOut) {
  LocalCluster cluster(3);  // rank 2 never forms
  auto results = OnEveryRank(2, [&](uint32_t r) { return cluster.Form(r, "job", 1, 300ms); });
  for (auto& result : results) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), StatusCode::kDeadlineExceeded) << result.status().ToString();
    EXPECT_TRUE(Contains(result.status().message(), "rank 2")) << result.status().ToString();
  }
}

TEST(RingTest, MissingNeighbourIsBlamedByBothOfItsNeighbours) {
  LocalCluster cluster(3);  // rank 2 never forms: rank 1 waits on it as next, rank 0 as prev
  std::vector<FormControl> controls(2);
  auto results = OnEveryRank(2, [&](uint32_t r) {
    return Ring::Form(cluster.io(r), cluster.listener(r), r, cluster.members(), "job", 1, 0, nullptr,
                      DeadlineAfter(300ms), &controls[r]);
  });
  for (uint32_t r = 0; r < 2; ++r) {
    ASSERT_FALSE(results[r].ok());
    ASSERT_TRUE(controls[r].blamed_rank.has_value()) << results[r].status().ToString();
    EXPECT_EQ(*controls[r].blamed_rank, 2u) << "rank " << r << ": " << results[r].status().ToString();
  }
}

TEST(RingTest, CancelledFormationGivesUpLongBeforeItsDeadline) {
  LocalCluster cluster(3);  // rank 2 never forms
  std::atomic<bool> superseded{false};
  FormControl control;
  control.cancelled = [&] { return superseded.load(); };
  const auto start = Clock::now();
  auto waiter = std::async(std::launch::async, [&] {
    return Ring::Form(cluster.io(0), cluster.listener(0), 0, cluster.members(), "job", 1, 0, nullptr,
                      DeadlineAfter(30s), &control);
  });
  std::this_thread::sleep_for(200ms);
  superseded = true;
  ASSERT_EQ(waiter.wait_for(5s), std::future_status::ready) << "Form ignored the cancellation";
  auto result = waiter.get();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kAborted) << result.status().ToString();
  EXPECT_LT(SecondsSince(start), 5.0);
  EXPECT_FALSE(control.blamed_rank.has_value()) << "a cancellation blames nobody";
}

TEST(RingTest, InterruptFailsACollectiveBlockedOnASilentNeighbour) {
  LocalCluster cluster(2);
  auto rings = cluster.FormAll("job", 1);
  ASSERT_TRUE(rings[0] && rings[1]);
  std::vector<float> data(1 << 16, 1.0f);
  AllreduceOptions options;
  options.deadline = DeadlineAfter(30s);
  auto blocked = std::async(std::launch::async, [&] {
    // Rank 1 never joins the all-reduce: rank 0 would wait for the deadline.
    return RingAllreduce(*rings[0], data, options);
  });
  std::this_thread::sleep_for(200ms);
  rings[0]->Interrupt();
  ASSERT_EQ(blocked.wait_for(5s), std::future_status::ready) << "Interrupt did not unblock";
  EXPECT_FALSE(blocked.get().ok());
  rings[0]->Abort();
}

TEST(RingTest, InvalidMembershipIsRejected) {
  LocalCluster cluster(2);
  auto members = cluster.members();
  std::swap(members[0], members[1]);
  auto unordered =
      Ring::Form(cluster.io(0), cluster.listener(0), 0, members, "job", 1, DeadlineAfter(1s));
  ASSERT_FALSE(unordered.ok());
  EXPECT_EQ(unordered.status().code(), StatusCode::kInvalidArgument);
  auto outside = Ring::Form(cluster.io(0), cluster.listener(0), 2, cluster.members(), "job", 1,
                            DeadlineAfter(1s));
  ASSERT_FALSE(outside.ok());
  EXPECT_EQ(outside.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tributary::collectives
