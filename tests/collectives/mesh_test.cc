#include "collectives/mesh.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include <future>

#include "collectives/butterfly.h"
#include "net/identity.h"
#include "tests/collectives/mesh_cluster.h"

namespace tributary::collectives {
namespace {

using namespace std::chrono_literals;
using testing::Contains;
using testing::FormMeshes;
using testing::LocalCluster;
using testing::OnEveryRank;

v1::Envelope MeshHello(const std::string& job_id, uint32_t rank, uint64_t round,
                       uint32_t attempt = 0) {
  v1::Envelope env = net::MakeEnvelope(job_id);
  env.mutable_hello()->set_role(v1::ROLE_RING_NEIGHBOR);
  env.mutable_hello()->set_rank(rank);
  env.mutable_hello()->set_round(round);
  env.mutable_hello()->set_attempt(attempt);
  return env;
}

class MeshFormTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(MeshFormTest, EveryPairIsConnected) {
  const uint32_t world = GetParam();
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster, {}, {.round = 3});
  for (uint32_t r = 0; r < world; ++r) {
    ASSERT_NE(meshes[r], nullptr);
    EXPECT_EQ(meshes[r]->rank(), r);
    EXPECT_EQ(meshes[r]->world(), world);
    EXPECT_EQ(meshes[r]->round(), 3u);
    for (uint32_t p = 0; p < world; ++p) {
      EXPECT_EQ(meshes[r]->peer(p) == nullptr, p == r) << "rank " << r << " peer " << p;
    }
    EXPECT_EQ(meshes[r]->bytes_sent() > 0, world > 1);
  }
  // Every connection carries what its other end sends: a frame from r reaches p.
  if (world < 2) return;
  auto got = OnEveryRank(world, [&](uint32_t r) -> Status {
    for (uint32_t p = 0; p < world; ++p) {
      if (p == r) continue;
      v1::Envelope env = net::MakeEnvelope("job");
      env.mutable_hello_ack()->set_server_name("from " + std::to_string(r));
      TRIB_RETURN_IF_ERROR(meshes[r]->peer(p)->Send(env, DeadlineAfter(5s)));
    }
    for (uint32_t p = 0; p < world; ++p) {
      if (p == r) continue;
      auto env = meshes[r]->peer(p)->Receive(DeadlineAfter(5s));
      if (!env.ok()) return env.status();
      if (env->hello_ack().server_name() != "from " + std::to_string(p)) {
        return Internal("rank " + std::to_string(r) + " got '" + env->hello_ack().server_name() +
                        "' on the connection to " + std::to_string(p));
      }
    }
    return Status::Ok();
  });
  for (auto& st : got) EXPECT_TRUE(st.ok()) << st.ToString();
}

INSTANTIATE_TEST_SUITE_P(Worlds, MeshFormTest, ::testing::Values(1u, 2u, 3u, 5u, 8u));

TEST(MeshTest, BadHellosAreRejectedWhileTheRightMembersConnect) {
  LocalCluster cluster(3);
  net::IoThread tester("tester");
  auto dial = [&] {
    auto c = net::Connection::Dial(tester.context(), "127.0.0.1", cluster.members()[2].port,
                                   DeadlineAfter(2s));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return *c;
  };
  // Queued on rank 2's listener before anyone forms; rank 2 accepts ranks 0 and 1.
  auto silent = dial();
  auto wrong_job = dial();
  ASSERT_TRUE(wrong_job->Send(MeshHello("other-job", 0, 1), DeadlineAfter(2s)).ok());
  auto wrong_version = dial();
  v1::Envelope old = MeshHello("job", 0, 1);
  old.set_protocol_version(net::kProtocolVersion + 1);
  ASSERT_TRUE(wrong_version->Send(old, DeadlineAfter(2s)).ok());
  auto higher_rank = dial();  // rank 2 only hears from ranks below it
  ASSERT_TRUE(higher_rank->Send(MeshHello("job", 2, 1), DeadlineAfter(2s)).ok());
  auto stale_round = dial();
  ASSERT_TRUE(stale_round->Send(MeshHello("job", 1, 0), DeadlineAfter(2s)).ok());
  // A hello for a round or attempt rank 2 has not started is refused as "ahead" (the dialer
  // greets again; AMemberStillFormingThePreviousAttemptIsGreetedAgain).
  auto ahead_round = dial();
  ASSERT_TRUE(ahead_round->Send(MeshHello("job", 1, 9), DeadlineAfter(2s)).ok());
  auto ahead_attempt = dial();
  ASSERT_TRUE(ahead_attempt->Send(MeshHello("job", 1, 1, 7), DeadlineAfter(2s)).ok());

  auto meshes = FormMeshes(cluster);
  for (auto& m : meshes) ASSERT_NE(m, nullptr);
  struct Expectation {
    std::shared_ptr<net::Connection> conn;
    v1::ErrorCode code;
    std::string words;
  };
  for (auto& [conn, code, words] : std::vector<Expectation>{
           {wrong_job, v1::WRONG_JOB, "wrong job id"},
           {wrong_version, v1::WRONG_PROTOCOL_VERSION, "protocol version"},
           {higher_rank, v1::UNEXPECTED_MESSAGE, "only accepts ranks below"},
           {stale_round, v1::UNEXPECTED_MESSAGE, "expected round 1"},
           {ahead_round, v1::ATTEMPT_AHEAD, "round 9 attempt 0, which this rank has not started"},
           {ahead_attempt, v1::ATTEMPT_AHEAD, "round 1 attempt 7, which this rank has not started"}}) {
    auto reply = conn->Receive(DeadlineAfter(5s));
    ASSERT_TRUE(reply.ok()) << words << ": " << reply.status().ToString();
    ASSERT_TRUE(reply->has_error()) << net::PayloadName(*reply);
    EXPECT_EQ(reply->error().code(), code) << reply->error().message();
    EXPECT_TRUE(Contains(reply->error().message(), words)) << reply->error().message();
    EXPECT_FALSE(conn->Receive(DeadlineAfter(2s)).ok()) << "rejected connections are closed";
  }
  EXPECT_FALSE(silent->Receive(DeadlineAfter(2s)).ok()) << "left-over connections are closed";

  // The mesh works.
  auto sums = OnEveryRank(3, [&](uint32_t r) {
    std::vector<float> v{1.0f + r, 10.0f * (r + 1)};
    auto st = ButterflyAllreduce(*meshes[r], v, {.tag = "t", .deadline = DeadlineAfter(5s)});
    EXPECT_TRUE(st.ok()) << st.status().ToString();
    return v;
  });
  for (const auto& s : sums) EXPECT_EQ(s, (std::vector<float>{6.0f, 60.0f}));
}

TEST(MeshTest, MissingMemberIsADeadlineNamingIt) {
  LocalCluster cluster(3);  // rank 2 never forms (its listener exists, nobody accepts)
  const auto start = Clock::now();
  auto results = OnEveryRank(2, [&](uint32_t r) {
    return Mesh::Form(cluster.io(r), cluster.listener(r), r, cluster.members(), "job", 1,
                      DeadlineAfter(400ms));
  });
  EXPECT_LT(SecondsSince(start), 2.0);
  int deadlines = 0;
  for (auto& result : results) {
    ASSERT_FALSE(result.ok());
    // Each rank either hits its own deadline or hears first that the other one did.
    const StatusCode code = result.status().code();
    EXPECT_TRUE(code == StatusCode::kDeadlineExceeded || code == StatusCode::kAborted)
        << result.status().ToString();
    deadlines += code == StatusCode::kDeadlineExceeded;
    EXPECT_TRUE(Contains(result.status().message(), "rank 2 'peer-2'"))
        << result.status().ToString();
  }
  EXPECT_GE(deadlines, 1);
}

TEST(MeshTest, MismatchedRoundFailsEveryoneWithoutWaitingForTheDeadline) {
  LocalCluster cluster(3);
  const auto start = Clock::now();
  // Rank 1 is a round behind: rank 2 rejects its hello; everyone then learns it at once.
  auto results = OnEveryRank(3, [&](uint32_t r) {
    return Mesh::Form(cluster.io(r), cluster.listener(r), r, cluster.members(), "job",
                      r == 1 ? 6 : 7, DeadlineAfter(5s));
  });
  EXPECT_LT(SecondsSince(start), 3.0) << "no one may wait for the 5 s deadline";
  for (auto& result : results) ASSERT_FALSE(result.ok());
  EXPECT_TRUE(Contains(results[1].status().message(), "round")) << results[1].status().ToString();
}

// Members hear a retry's RoundStart at slightly different times. A member still forming the
// previous attempt when a faster one greets it for the new attempt is behind, not wrong: it
// answers ATTEMPT_AHEAD, the dialer greets it again, and the new attempt forms once the slow
// member catches up. (Before, it rejected the greeting and failed the attempt; when that
// repeated on every retry, a job lost its round: VerifierCollusion under load.)
TEST(MeshTest, AMemberStillFormingThePreviousAttemptIsGreetedAgain) {
  LocalCluster cluster(2);
  std::atomic<bool> retry_heard{false};
  auto results = OnEveryRank(2, [&](uint32_t r) -> Result<std::unique_ptr<Mesh>> {
    if (r == 0) {  // heard the retry at once: forms attempt 1
      return Mesh::Form(cluster.io(0), cluster.listener(0), 0, cluster.members(), "job", 3, 1, nullptr,
                        DeadlineAfter(5s));
    }
    // Rank 1 is still waiting in attempt 0 when rank 0's greeting for attempt 1 arrives.
    FormControl control;
    control.cancelled = [&] { return retry_heard.load(); };
    std::thread late([&] {
      std::this_thread::sleep_for(400ms);
      retry_heard = true;
    });
    auto stale = Mesh::Form(cluster.io(1), cluster.listener(1), 1, cluster.members(), "job", 3, 0, nullptr,
                            DeadlineAfter(5s), &control);
    late.join();
    EXPECT_FALSE(stale.ok());
    EXPECT_TRUE(Contains(stale.status().message(), "superseded")) << stale.status().ToString();
    return Mesh::Form(cluster.io(1), cluster.listener(1), 1, cluster.members(), "job", 3, 1, nullptr,
                      DeadlineAfter(5s));
  });
  for (auto& result : results) EXPECT_TRUE(result.ok()) << result.status().ToString();
}

TEST(MeshTest, InvalidMembershipIsRejected) {
  LocalCluster cluster(2);
  auto members = cluster.members();
  std::swap(members[0], members[1]);
  auto unordered =
      Mesh::Form(cluster.io(0), cluster.listener(0), 0, members, "job", 1, DeadlineAfter(1s));
  ASSERT_FALSE(unordered.ok());
  EXPECT_EQ(unordered.status().code(), StatusCode::kInvalidArgument);
  auto outside = Mesh::Form(cluster.io(0), cluster.listener(0), 2, cluster.members(), "job", 1,
                            DeadlineAfter(1s));
  ASSERT_FALSE(outside.ok());
  EXPECT_EQ(outside.status().code(), StatusCode::kInvalidArgument);
}

TEST(MeshTest, BlamedRankParsesOnlyTheAbortPrefix) {
  EXPECT_EQ(BlamedRank("failed rank 3: boom", 4), 3u);
  EXPECT_EQ(BlamedRank("failed rank 4: boom", 4), std::nullopt) << "outside the world";
  EXPECT_EQ(BlamedRank("failed rank 3 boom", 4), std::nullopt);
  EXPECT_EQ(BlamedRank("rank 2 gave up: failed rank 3: x", 4), std::nullopt);
  EXPECT_EQ(BlamedRank("failed rank x: y", 4), std::nullopt);
}

TEST(MeshTest, ARelayedAbortBlamesWhomItNamesUnlessItNamesTheReader) {
  LocalCluster cluster(3);
  auto meshes = FormMeshes(cluster);
  const Mesh& reader = *meshes[0];
  // Rank 1 says rank 2 failed: rank 2, as reported by 1.
  const PeerFailure third = reader.FailureOfRelayedAbort(1, "failed rank 2: wrong tag");
  EXPECT_EQ(third.rank, 2u);
  EXPECT_EQ(third.reported_by, std::optional<uint32_t>(1));
  // Rank 1 says the reader failed: from where the reader stands that is rank 1's word against
  // its own, so it names rank 1 (the coordinator weighs both reports).
  EXPECT_EQ(reader.FailureOfRelayedAbort(1, "failed rank 0: wrong tag").rank, 1u);
  EXPECT_EQ(reader.FailureOfRelayedAbort(1, "rank 1 gave up: deadline").rank, 1u);
}

TEST(MeshTest, AbortTellsTheBlamedRankWhyInsteadOfOnlyClosing) {
  LocalCluster cluster(2);
  auto meshes = FormMeshes(cluster);
  meshes[1]->Abort(InvalidArgument("wrong tag 'x'"), meshes[1]->FailureOf(0));
  auto env = meshes[0]->peer(1)->Receive(DeadlineAfter(5s));
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  ASSERT_TRUE(env->has_error());
  EXPECT_TRUE(Contains(env->error().message(), "failed rank 0: wrong tag")) << env->error().message();
}

// --- secure meshes ----------------------------------------------------------------------------

struct SecureCluster {
  explicit SecureCluster(uint32_t world) : cluster(world) {
    for (uint32_t r = 0; r < world; ++r) {
      identities.push_back(net::Identity::Generate());
      members.push_back(cluster.members()[r]);
      members.back().public_key = identities.back().public_key();
    }
  }
  Result<std::unique_ptr<Mesh>> Form(uint32_t r, const std::vector<MeshMember>& view,
                                     Millis timeout = Millis{10000}) {
    return Mesh::Form(cluster.io(r), cluster.listener(r), r, view, "job", 1, 0, &identities[r],
                      DeadlineAfter(timeout));
  }
  LocalCluster cluster;
  std::vector<net::Identity> identities;
  std::vector<MeshMember> members;
};

TEST(SecureMeshTest, EncryptedMeshReducesBitIdentically) {
  SecureCluster secure(4);
  auto results = OnEveryRank(4, [&](uint32_t r) { return secure.Form(r, secure.members); });
  std::vector<std::unique_ptr<Mesh>> meshes;
  for (auto& result : results) {
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    meshes.push_back(std::move(result).value());
  }
  for (uint32_t r = 0; r < 4; ++r) {
    for (uint32_t p = 0; p < 4; ++p) {
      if (p != r) EXPECT_TRUE(meshes[r]->peer(p)->encrypted());
    }
  }
  auto outs = OnEveryRank(4, [&](uint32_t r) {
    std::vector<float> v = testing::Uniform(100 + r, 1001);
    auto st = ButterflyAllreduce(*meshes[r], v,
                                 {.tag = "secure", .deadline = DeadlineAfter(10s),
                                  .codec = "int8", .average = true});
    EXPECT_TRUE(st.ok()) << st.status().ToString();
    return v;
  });
  for (uint32_t r = 1; r < 4; ++r) EXPECT_EQ(outs[r], outs[0]) << "rank " << r;
}

// `liar` holds a wrong key for `victim`; the check runs on the dialing side when liar < victim
// and on the accepting side otherwise.
void ExpectWrongKeyRefused(uint32_t liar, uint32_t victim) {
  SecureCluster secure(3);
  std::vector<MeshMember> lied = secure.members;
  lied[victim].public_key = net::Identity::Generate().public_key();
  const auto start = Clock::now();
  auto results = OnEveryRank(3, [&](uint32_t r) {
    return secure.Form(r, r == liar ? lied : secure.members, Millis{5000});
  });
  EXPECT_LT(SecondsSince(start), 3.0)
      << "everyone learns of the refusal at once:\n" << results[0].status().ToString() << "\n"
      << results[1].status().ToString() << "\n" << results[2].status().ToString();
  for (uint32_t r = 0; r < 3; ++r) {
    ASSERT_FALSE(results[r].ok()) << "rank " << r << " formed a mesh with a wrong key in it";
  }
  const std::string& why = results[liar].status().message();
  EXPECT_TRUE(Contains(why, "key")) << results[liar].status().ToString();
  EXPECT_TRUE(Contains(why, "rank " + std::to_string(victim))) << results[liar].status().ToString();
}

TEST(SecureMeshTest, WrongKeyOfAnAcceptorIsRefusedByTheDialer) { ExpectWrongKeyRefused(0, 2); }

TEST(SecureMeshTest, WrongKeyOfADialerIsRefusedByTheAcceptor) { ExpectWrongKeyRefused(2, 0); }

}  // namespace
}  // namespace tributary::collectives
