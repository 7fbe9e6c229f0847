#include "launcher/grouping.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <random>
#include <set>

namespace tributary::launcher {
namespace {

std::vector<std::string> Keys(size_t n, const std::string& tag = "peer") {
  std::vector<std::string> keys;
  for (size_t i = 0; i < n; ++i) keys.push_back(tag + "-key-" + std::to_string(i));
  return keys;
}

// Partition as a set of key sets (independent of group and index order).
std::set<std::set<std::string>> AsKeySets(const std::vector<std::vector<size_t>>& groups,
                                          const std::vector<std::string>& keys) {
  std::set<std::set<std::string>> out;
  for (const auto& g : groups) {
    std::set<std::string> s;
    for (size_t i : g) s.insert(keys[i]);
    out.insert(s);
  }
  return out;
}

TEST(Grouping, BalancedSizesAndEveryPeerExactlyOnce) {
  for (size_t n : {3u, 5u, 6u, 7u, 10u, 17u, 64u, 100u, 257u}) {
    for (uint32_t g : {2u, 3u, 4u, 8u, 16u}) {
      if (n <= g) continue;
      const auto keys = Keys(n);
      for (uint64_t round = 0; round < 6; ++round) {
        const auto groups = FormGroups("job", round, g, keys);
        ASSERT_EQ(groups.size(), (n + g - 1) / g) << "n=" << n << " g=" << g;
        size_t smallest = n, largest = 0;
        std::vector<int> seen(n, 0);
        for (const auto& group : groups) {
          smallest = std::min(smallest, group.size());
          largest = std::max(largest, group.size());
          EXPECT_LE(group.size(), g);
          EXPECT_TRUE(std::is_sorted(group.begin(), group.end()));
          for (size_t i : group) seen.at(i)++;
        }
        EXPECT_LE(largest - smallest, 1u) << "n=" << n << " g=" << g << " round " << round;
        EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), static_cast<long>(n));
      }
    }
  }
}

TEST(Grouping, SmallPoolsAndGroupSizeZeroAreOneGroup) {
  const auto keys = Keys(5);
  for (uint32_t g : {0u, 5u, 8u}) {
    const auto groups = FormGroups("job", 3, g, keys);
    ASSERT_EQ(groups.size(), 1u);
    EXPECT_EQ(groups[0], (std::vector<size_t>{0, 1, 2, 3, 4}));
  }
  EXPECT_TRUE(FormGroups("job", 0, 3, {}).front().empty());
}

TEST(Grouping, TheLastRoundIsOneGroupOfEveryone) {
  EXPECT_EQ(GroupSizeOfRound(3, 0, 10), 3u);
  EXPECT_EQ(GroupSizeOfRound(3, 8, 10), 3u);
  EXPECT_EQ(GroupSizeOfRound(3, 9, 10), 0u);
  EXPECT_EQ(GroupSizeOfRound(0, 2, 10), 0u);
  EXPECT_EQ(FormGroups("job", 9, GroupSizeOfRound(3, 9, 10), Keys(6)).size(), 1u);
}

TEST(Grouping, DeterministicAndIndependentOfInputOrder) {
  auto keys = Keys(23);
  std::mt19937 rng(7);
  for (uint64_t round = 0; round < 8; ++round) {
    const auto a = AsKeySets(FormGroups("job-a", round, 4, keys), keys);
    EXPECT_EQ(a, AsKeySets(FormGroups("job-a", round, 4, keys), keys));
    auto shuffled = keys;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    EXPECT_EQ(a, AsKeySets(FormGroups("job-a", round, 4, shuffled), shuffled)) << "round " << round;
  }
  // Another job (another public seed) draws other groups.
  int differ = 0;
  for (uint64_t round = 0; round < 8; ++round) {
    differ += AsKeySets(FormGroups("job-a", round, 4, keys), keys) !=
              AsKeySets(FormGroups("job-b", round, 4, keys), keys);
  }
  EXPECT_GE(differ, 6);
}

TEST(Grouping, MembershipChangesEveryRoundAndEveryPeerMeetsSomeoneNew) {
  for (auto [n, g] : std::vector<std::pair<size_t, uint32_t>>{{6, 3}, {3, 2}, {7, 3}, {12, 4}, {40, 8}}) {
    for (const std::string job : {"job-1", "job-2", "job-3", "job-4"}) {
      const auto keys = Keys(n, job);
      for (uint64_t round = 0; round < 30; ++round) {
        const auto before = FormGroups(job, round, g, keys);
        const auto after = FormGroups(job, round + 1, g, keys);
        ASSERT_NE(AsKeySets(before, keys), AsKeySets(after, keys))
            << "n=" << n << " g=" << g << " " << job << ": round " << round + 1 << " repeats round " << round;
        if (n < 2 * static_cast<size_t>(g)) continue;  // with 3-in-2 a singleton can stay alone
        // Within an epoch (even -> odd round) the two partitions are orthogonal: every peer
        // in a group of two or more meets someone it did not meet the round before.
        if (round % 2 != 0) continue;
        std::map<size_t, std::set<size_t>> met_before;
        for (const auto& group : before) {
          for (size_t i : group) met_before[i] = {group.begin(), group.end()};
        }
        for (const auto& group : after) {
          if (group.size() < 2) continue;
          for (size_t i : group) {
            bool fresh = false;
            for (size_t j : group) fresh = fresh || !met_before[i].count(j);
            EXPECT_TRUE(fresh) << "peer " << i << " meets only old partners in round " << round + 1;
          }
        }
      }
    }
  }
}

// Rounds until every peer's state depends on every peer's initial state (reach = everyone),
// starting at `first_round`.
int RoundsToFullMixing(size_t n, uint32_t g, uint64_t first_round, const std::string& job) {
  const auto keys = Keys(n, job);
  std::vector<std::vector<bool>> reach(n, std::vector<bool>(n, false));
  for (size_t i = 0; i < n; ++i) reach[i][i] = true;
  for (int rounds = 1; rounds <= 64; ++rounds) {
    for (const auto& group : FormGroups(job, first_round + rounds - 1, g, keys)) {
      std::vector<bool> merged(n, false);
      for (size_t i : group) {
        for (size_t j = 0; j < n; ++j) merged[j] = merged[j] || reach[i][j];
      }
      for (size_t i : group) reach[i] = merged;
    }
    bool full = true;
    for (const auto& r : reach) full = full && std::all_of(r.begin(), r.end(), [](bool b) { return b; });
    if (full) return rounds;
  }
  return 1000;
}

TEST(Grouping, FullMixingWithinAFewRounds) {
  // N ≤ k·block: the epoch's two orthogonal partitions mix everyone in two rounds.
  EXPECT_EQ(RoundsToFullMixing(6, 3, 0, "j"), 2);
  EXPECT_EQ(RoundsToFullMixing(9, 3, 0, "j"), 2);
  EXPECT_EQ(RoundsToFullMixing(100, 10, 0, "j"), 2);
  // Starting on an odd round (dealt, then a fresh epoch's blocks): at most one more.
  EXPECT_LE(RoundsToFullMixing(6, 3, 1, "j"), 3);
  EXPECT_LE(RoundsToFullMixing(100, 10, 5, "j"), 3);
  // Large pools: about log_g(N) rounds plus a couple (random epochs), never many.
  for (const std::string job : {"a", "b", "c"}) {
    EXPECT_LE(RoundsToFullMixing(1000, 16, 0, job), 5) << job;
    EXPECT_LE(RoundsToFullMixing(512, 8, 0, job), 6) << job;
  }
}

// The table in docs/GROUPS.md. Run with
//   grouping_test --gtest_also_run_disabled_tests --gtest_filter='*MixingTable*'
TEST(Grouping, DISABLED_MixingTable) {
  std::printf("| N | group_size | groups | rounds to full mixing (min / max over 10 job ids) |\n");
  std::printf("|---:|---:|---:|---|\n");
  for (auto [n, g] : std::vector<std::pair<size_t, uint32_t>>{
           {6, 3}, {12, 4}, {32, 8}, {100, 10}, {256, 16}, {1000, 16}, {1000, 32}, {4096, 16}}) {
    int lo = 1000, hi = 0;
    for (int j = 0; j < 10; ++j) {
      const int r = RoundsToFullMixing(n, g, 0, "job" + std::to_string(j));
      lo = std::min(lo, r);
      hi = std::max(hi, r);
    }
    std::printf("| %zu | %u | %zu | %d / %d |\n", n, g, (n + g - 1) / g, lo, hi);
  }
}

}  // namespace
}  // namespace tributary::launcher
