// The coordinator's ring planner: asks for a probe when links are missing (attempt 0, with
// backoff, never for butterfly or relayed groups), then orders members by the reported links;
// bad reports are ignored.
#include "runtime/ring_topology.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

namespace tributary::runtime {
namespace {

std::string Key(char c) { return std::string(32, c); }

// A report from `from` with links to every other key: fast except the slow pairs.
v1::RoundReport Report(char from, const std::vector<char>& all, const std::set<std::pair<char, char>>& slow) {
  v1::RoundReport r;
  r.set_bytes_sent(64 << 20);
  for (char to : all) {
    if (to == from) continue;
    v1::LinkProbe* l = r.add_links();
    l->set_to_public_key(Key(to));
    l->set_rtt_seconds(0.05);
    l->set_bytes_per_second(slow.count({from, to}) ? 1e6 : 1e8);
  }
  return r;
}

TEST(RingTopology, ProbesOnceThenOrdersByTheReportedLinks) {
  RingTopology t;
  const std::vector<char> ids{'a', 'b', 'c', 'd'};
  std::vector<std::string> keys;
  for (char c : ids) keys.push_back(Key(c));
  const auto now = Clock::now();
  auto plan = t.PlanAttempt(keys, /*ring=*/true, /*relayed=*/false, 0, 0, now);
  EXPECT_TRUE(plan.probe);
  EXPECT_EQ(plan.order, (std::vector<uint32_t>{0, 1, 2, 3}));
  // A retry and the next rounds (backoff) do not ask again while links are missing.
  EXPECT_FALSE(t.PlanAttempt(keys, true, false, 0, 1, now).probe);
  EXPECT_FALSE(t.PlanAttempt(keys, true, false, 1, 0, now).probe);
  // Another group of the probing round (a grouped job) probes its own links too.
  EXPECT_TRUE(t.PlanAttempt({Key('e'), Key('f'), Key('g')}, true, false, 0, 0, now).probe);
  // a->b, b->c, c->d and d->a are slow: shard order would use all four.
  const std::set<std::pair<char, char>> slow{{'a', 'b'}, {'b', 'c'}, {'c', 'd'}, {'d', 'a'}};
  for (char c : ids) t.OnReport(Key(c), Report(c, ids, slow), now);
  plan = t.PlanAttempt(keys, true, false, 2, 0, now);
  EXPECT_FALSE(plan.probe);
  EXPECT_EQ(plan.order, (std::vector<uint32_t>{0, 3, 2, 1}));  // a->d->c->b->a: all fast
  // Links age out: after kMaxLinkAge a probe is due again (backoff has passed).
  plan = t.PlanAttempt(keys, true, false, 10, 0, now + RingTopology::kMaxLinkAge + std::chrono::seconds(1));
  EXPECT_TRUE(plan.probe);
  EXPECT_EQ(plan.order, (std::vector<uint32_t>{0, 1, 2, 3}));
}

TEST(RingTopology, NoProbeForButterflyTwoPeersOrRelayedMembers) {
  RingTopology t;
  const std::vector<std::string> three{Key('a'), Key('b'), Key('c')};
  EXPECT_FALSE(t.PlanAttempt(three, /*ring=*/false, false, 0, 0).probe);
  EXPECT_FALSE(t.PlanAttempt(three, true, /*relayed=*/true, 0, 0).probe);
  EXPECT_FALSE(t.PlanAttempt({Key('a'), Key('b')}, true, false, 0, 0).probe);
  v1::JobSpec spec;
  EXPECT_TRUE(JobUsesRing(spec));
  spec.set_codec("int8");
  EXPECT_FALSE(JobUsesRing(spec));
}

TEST(RingTopology, BadReportsAreIgnored) {
  RingTopology t;
  v1::RoundReport r;
  v1::LinkProbe* short_key = r.add_links();
  short_key->set_to_public_key("xyz");
  short_key->set_bytes_per_second(1e8);
  v1::LinkProbe* negative = r.add_links();
  negative->set_to_public_key(Key('b'));
  negative->set_bytes_per_second(-1);
  v1::LinkProbe* nan_rtt = r.add_links();
  nan_rtt->set_to_public_key(Key('c'));
  nan_rtt->set_bytes_per_second(1e8);
  nan_rtt->set_rtt_seconds(std::nan(""));
  t.OnReport(Key('a'), r);
  EXPECT_EQ(t.links().size(), 0u);
  v1::RoundReport flood;
  for (int i = 0; i < 5000; ++i) {
    v1::LinkProbe* l = flood.add_links();
    l->set_to_public_key(Key('b'));
    l->set_bytes_per_second(1e8);
  }
  t.OnReport(Key('a'), flood);
  EXPECT_EQ(t.links().size(), 0u);
}

}  // namespace
}  // namespace tributary::runtime
