#include "launcher/store.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "tests/common/test_corpus.h"

namespace tributary::launcher {
namespace {

TEST(StoreTest, EvalsBesideTrainingAreTakenOncePerAskedKeyAndAveragedAcrossReopening) {
  const std::string dir = ::tributary::testing::FreshTempDir("store-beside");
  const std::string path = dir + "/coordinator.db";
  RoundRecord r0;
  r0.round = 0;
  r0.theta_digest = std::string(32, 'a');
  r0.state_digest = std::string(32, 'b');
  r0.members = {"k1", "k2", "k3", "k4"};
  r0.beside_evaluators = {"k1", "k3"};  // two groups' rank 0s
  {
    auto store = CoordinatorStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->RecordRound("job-e", r0).ok());
    auto first = (*store)->RecordBesideEval("job-e", 0, "k1", 2.0);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    EXPECT_DOUBLE_EQ(first->mean, 2.0);
    EXPECT_FALSE(first->repeated);
    EXPECT_EQ((*store)->RecordBesideEval("job-e", 0, "k1", 1.0).status().code(), StatusCode::kNotFound)
        << "once per key";
    // The same loss again (resent by a retried round's report): nothing changes.
    auto again = (*store)->RecordBesideEval("job-e", 0, "k1", 2.0);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_TRUE(again->repeated);
    EXPECT_DOUBLE_EQ(again->mean, 2.0);
    EXPECT_EQ((*store)->RecordBesideEval("job-e", 0, "k2", 1.0).status().code(), StatusCode::kNotFound)
        << "k2 was not asked";
    EXPECT_EQ((*store)->RecordBesideEval("job-e", 1, "k1", 1.0).status().code(), StatusCode::kNotFound)
        << "round 1 is not recorded";
    EXPECT_EQ((*store)->RecordBesideEval("job-x", 0, "k1", 1.0).status().code(), StatusCode::kNotFound);
  }
  auto store = CoordinatorStore::Open(path);  // what a restarted coordinator finds
  ASSERT_TRUE(store.ok());
  auto mean = (*store)->RecordBesideEval("job-e", 0, "k3", 3.0);
  ASSERT_TRUE(mean.ok()) << mean.status().ToString();
  EXPECT_DOUBLE_EQ(mean->mean, 2.5);
  // A repeat after the restart is recognised too, and leaves the mean as it is.
  auto repeat = (*store)->RecordBesideEval("job-e", 0, "k1", 2.0);
  ASSERT_TRUE(repeat.ok()) << repeat.status().ToString();
  EXPECT_TRUE(repeat->repeated);
  EXPECT_DOUBLE_EQ(repeat->mean, 2.5);
  auto rounds = (*store)->Rounds("job-e");
  ASSERT_TRUE(rounds.ok() && rounds->size() == 1u);
  EXPECT_DOUBLE_EQ((*rounds)[0].eval_loss, 2.5);
  std::filesystem::remove_all(dir);
}

TEST(StoreTest, RoundsPeersAndJobsSurviveReopening) {
  const std::string dir = ::tributary::testing::FreshTempDir("store");
  const std::string path = dir + "/coordinator.db";
  {
    auto store = CoordinatorStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->PutJob({"job-a", "spec-bytes", "", ""}).ok());
    ASSERT_TRUE((*store)->PutJob({"job-a", "spec-bytes", "", ""}).ok()) << "idempotent";
    ASSERT_TRUE((*store)->UpsertPeer("job-a", {"k1", "alice", 0, 0, "cpu x2"}).ok());
    ASSERT_TRUE((*store)->UpsertPeer("job-a", {"k2", "bob", 1, 0, "cpu x4"}).ok());
    RoundRecord r0;
    r0.round = 0;
    r0.theta_digest = std::string(32, 'a');
    r0.state_digest = std::string(32, 'b');
    r0.members = {"k1", "k2"};
    r0.train_loss = 3.5;
    ASSERT_TRUE((*store)->RecordRound("job-a", r0).ok());
    RoundRecord r1 = r0;
    r1.round = 1;
    r1.members = {"k1"};
    ASSERT_TRUE((*store)->RecordRound("job-a", r1).ok());
    EXPECT_FALSE((*store)->RecordRound("job-a", r1).ok()) << "a round is committed once";
    ASSERT_TRUE((*store)->RecordReport("job-a", 1, 0, "k1", std::string(32, 'a')).ok());
  }
  auto store = CoordinatorStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->Jobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].spec_bytes, "spec-bytes");
  auto last = (*store)->LastRound("job-a");
  ASSERT_TRUE(last.ok() && last->has_value());
  EXPECT_EQ((*last)->round, 1u);
  EXPECT_EQ((*last)->members, std::vector<std::string>{"k1"});
  auto peers = (*store)->Peers("job-a");
  ASSERT_TRUE(peers.ok());
  ASSERT_EQ(peers->size(), 2u);
  EXPECT_EQ((*peers)[0].rounds_contributed, 2u);
  EXPECT_EQ((*peers)[1].rounds_contributed, 1u);
  auto none = (*store)->LastRound("job-b");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE((*store)->MarkJobFinished("job-a", "ok").ok());
  EXPECT_EQ(*(*store)->JobOutcome("job-a"), "ok");
  EXPECT_EQ((*store)->JobOutcome("nope").status().code(), StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

TEST(StoreTest, GroupedRoundKeepsEachPeersStateAtomically) {
  const std::string dir = ::tributary::testing::FreshTempDir("store-groups");
  const std::string path = dir + "/coordinator.db";
  {
    auto store = CoordinatorStore::Open(path);
    ASSERT_TRUE(store.ok());
    RoundRecord r;
    r.round = 4;
    r.theta_digest = std::string(32, 'a');
    r.state_digest = std::string(32, 'b');
    r.members = {"k1", "k2", "k3"};
    r.peers = {{"k1", 0, std::string(32, 'a'), std::string(32, 'b')},
               {"k2", 0, std::string(32, 'a'), std::string(32, 'b')},
               {"k3", 1, std::string(32, 'c'), std::string(32, 'd')}};
    ASSERT_TRUE((*store)->RecordRound("job-g", r).ok());
    // A round whose per-peer rows cannot all be written is not recorded at all.
    RoundRecord bad = r;
    bad.round = 5;
    bad.peers.push_back(bad.peers.front());  // the same peer twice
    EXPECT_FALSE((*store)->RecordRound("job-g", bad).ok());
  }
  auto store = CoordinatorStore::Open(path);
  ASSERT_TRUE(store.ok());
  auto last = (*store)->LastRound("job-g");
  ASSERT_TRUE(last.ok() && last->has_value());
  EXPECT_EQ((*last)->round, 4u);
  auto commits = (*store)->PeerCommits("job-g", 4);
  ASSERT_TRUE(commits.ok());
  ASSERT_EQ(commits->size(), 3u);
  EXPECT_EQ((*commits)[2].key, "k3");
  EXPECT_EQ((*commits)[2].group, 1u);
  EXPECT_EQ((*commits)[2].state_digest, std::string(32, 'd'));
  EXPECT_TRUE((*store)->PeerCommits("job-g", 5)->empty());
  std::filesystem::remove_all(dir);
}

TEST(StoreTest, UnopenablePathIsAClearError) {
  auto store = CoordinatorStore::Open("/nonexistent-dir/x/coordinator.db");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("cannot open coordinator database"), std::string::npos);
}

}  // namespace
}  // namespace tributary::launcher
