// Topology: the ring model, OrderRing against brute force over every ring, the coordinator's
// link table, and real probes over loopback meshes (including a peer that misbehaves).
#include "collectives/topology.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "net/frame.h"
#include "proto/tributary.pb.h"
#include "tests/collectives/mesh_cluster.h"

namespace tributary::collectives {
namespace {

using testing::FormMeshes;
using testing::LocalCluster;
using testing::OnEveryRank;

LinkMatrix RandomLinks(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> rtt(0.005, 0.2), bw(1e6, 2e7);
  LinkMatrix m(n);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (i != j) m.at(i, j) = {rtt(rng), bw(rng)};
    }
  }
  return m;
}

TEST(Topology, PredictRingSecondsFollowsTheModel) {
  LinkMatrix m(2);
  m.at(0, 1) = {0.1, 12.5e6};
  m.at(1, 0) = {0.1, 12.5e6};
  // 2 peers: each sends half the tensor twice (reduce-scatter, all-gather) = bytes; RTT once.
  EXPECT_NEAR(PredictRingSeconds(m, {0, 1}, 12.5e6), 1.0 + 0.1, 1e-12);
  LinkMatrix four(4);
  for (size_t i = 0; i < 4; ++i) {
    for (size_t j = 0; j < 4; ++j) four.at(i, j) = {0.05, 10e6};
  }
  four.at(2, 3).bytes_per_second = 5e6;  // the bottleneck
  EXPECT_NEAR(PredictRingSeconds(four, {0, 1, 2, 3}, 40e6), 2 * 0.75 * 40e6 / 5e6 + 0.75 * 4 * 0.05, 1e-9);
  EXPECT_NEAR(PredictRingSeconds(four, {0, 2, 1, 3}, 40e6), 2 * 0.75 * 40e6 / 10e6 + 0.75 * 4 * 0.05, 1e-9);
  four.at(1, 3).bytes_per_second = 0;
  EXPECT_TRUE(std::isinf(PredictRingSeconds(four, {0, 1, 3, 2}, 1)));
}

TEST(Topology, OrderRingIsOptimalAgainstBruteForce) {
  for (size_t n = 3; n <= 7; ++n) {
    for (uint32_t seed = 0; seed < 10; ++seed) {
      LinkMatrix m = RandomLinks(n, seed + 100 * static_cast<uint32_t>(n));
      for (double bytes : {4e3, 16e6, 100e6}) {
        auto best = OrderRing(m, bytes);
        ASSERT_TRUE(best.ok()) << best.status().ToString();
        EXPECT_TRUE(best->exact);
        std::vector<uint32_t> p(n);
        std::iota(p.begin(), p.end(), 0u);
        double brute = std::numeric_limits<double>::infinity();
        do {
          brute = std::min(brute, PredictRingSeconds(m, p, bytes));
        } while (std::next_permutation(p.begin() + 1, p.end()));
        EXPECT_NEAR(best->predicted_seconds, brute, 1e-9 * brute) << "n=" << n << " bytes=" << bytes;
        EXPECT_NEAR(PredictRingSeconds(m, best->order, bytes), best->predicted_seconds, 1e-12);
      }
    }
  }
}

TEST(Topology, OrderRingAvoidsASlowLinkAndHeuristicSizesWork) {
  // Two regions {0, 2} and {1, 3}: fast inside, slow across except one fast cross link each way.
  LinkMatrix m(4);
  for (size_t i = 0; i < 4; ++i) {
    for (size_t j = 0; j < 4; ++j) {
      if (i != j) m.at(i, j) = (i % 2 == j % 2) ? LinkEstimate{0.01, 100e6} : LinkEstimate{0.1, 5e6};
    }
  }
  m.at(2, 1) = {0.1, 50e6};
  m.at(3, 0) = {0.1, 50e6};
  auto best = OrderRing(m, 64e6);
  ASSERT_TRUE(best.ok());
  EXPECT_EQ(best->order, (std::vector<uint32_t>{0, 2, 1, 3}));
  EXPECT_LT(best->predicted_seconds, PredictRingSeconds(m, {0, 1, 2, 3}, 64e6) / 5);
  // 20 members: the heuristic path; it must still beat the identity ring on a random matrix.
  LinkMatrix big = RandomLinks(20, 9);
  std::vector<uint32_t> identity(20);
  std::iota(identity.begin(), identity.end(), 0u);
  auto h = OrderRing(big, 16e6);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(h->exact);
  EXPECT_LE(h->predicted_seconds, PredictRingSeconds(big, identity, 16e6));
  // Missing estimates are an error, not a guess.
  big.at(3, 4).bytes_per_second = 0;
  EXPECT_EQ(OrderRing(big, 1).status().code(), StatusCode::kInvalidArgument);
}

TEST(Topology, LinkTableAgesAndInvalidates) {
  LinkTable t;
  const auto t0 = Clock::now();
  const std::vector<std::string> ids{"a", "b", "c"};
  EXPECT_TRUE(t.Stale(ids, std::chrono::seconds(60), t0));
  for (const auto& f : ids) {
    for (const auto& g : ids) t.Record(f, g, {0.01, f == "a" && g == "b" ? 1e6 : 1e8}, t0);
  }
  t.Record("a", "c", {0.01, -5}, t0);  // nonsense is ignored
  t.Record("a", "c", {NAN, 1e6}, t0);
  EXPECT_EQ(t.size(), 6u);
  EXPECT_FALSE(t.Stale(ids, std::chrono::seconds(60), t0));
  auto m = t.Matrix(ids, std::chrono::seconds(60), t0);
  ASSERT_TRUE(m);
  EXPECT_DOUBLE_EQ(m->at(0, 2).bytes_per_second, 1e8);
  auto order = OrderFromTable(t, ids, 1e8, std::chrono::seconds(60), t0);
  ASSERT_TRUE(order);
  EXPECT_EQ(*order, (std::vector<uint32_t>{0, 2, 1}));  // avoids the slow a -> b
  EXPECT_TRUE(t.Stale(ids, std::chrono::seconds(60), t0 + std::chrono::seconds(61)));
  EXPECT_FALSE(OrderFromTable(t, ids, 1e8, std::chrono::seconds(60), t0 + std::chrono::seconds(61)));
  EXPECT_FALSE(OrderFromTable(t, {"a", "b"}, 1e8, std::chrono::seconds(60), t0));  // 2: nothing to order
  t.Invalidate("b");
  EXPECT_EQ(t.size(), 4u);
  EXPECT_TRUE(t.Stale(ids, std::chrono::seconds(60), t0));
  t.Expire(std::chrono::seconds(1), t0 + std::chrono::seconds(2));
  EXPECT_EQ(t.size(), 0u);
}

ProbeOptions QuickProbe() {
  ProbeOptions o;
  o.seconds = 0.05;
  o.max_bytes = 4 << 20;
  o.segment_bytes = 64 << 10;
  o.deadline = DeadlineAfter(Millis(20000));
  return o;
}

TEST(Topology, ProbeLinksMeasuresEveryOutgoingLink) {
  for (uint32_t world : {2u, 3u, 4u}) {
    LocalCluster cluster(world);
    auto meshes = FormMeshes(cluster);
    auto rows = OnEveryRank(world, [&](uint32_t r) { return ProbeLinks(*meshes[r], QuickProbe()); });
    for (uint32_t r = 0; r < world; ++r) {
      ASSERT_TRUE(rows[r].ok()) << rows[r].status().ToString();
      ASSERT_EQ(rows[r]->size(), world);
      for (uint32_t j = 0; j < world; ++j) {
        const LinkEstimate& e = (*rows[r])[j];
        if (j == r) {
          EXPECT_EQ(e.bytes_per_second, 0);
          continue;
        }
        // A measurement, not a speed claim (speed belongs in benchmarks): a positive rate that
        // the sender streamed at least one segment for.
        EXPECT_GT(e.bytes_per_second, 0) << r << "->" << j;
        EXPECT_TRUE(std::isfinite(e.bytes_per_second));
        EXPECT_GT(e.rtt_seconds, 0);
        EXPECT_LT(e.rtt_seconds, 1.0);
      }
    }
  }
}

TEST(Topology, MeasureLinksFormsItsOwnMeshBesideTheRound) {
  LocalCluster cluster(3);
  auto rows = OnEveryRank(3, [&](uint32_t r) {
    return MeasureLinks(cluster.io(r), cluster.listener(r), r, cluster.members(), "job", 4, 0,
                        nullptr, QuickProbe());
  });
  for (auto& row : rows) ASSERT_TRUE(row.ok()) << row.status().ToString();
  // The listeners still serve the round's own ring afterwards.
  auto rings = cluster.FormAll("job", 4);
  for (auto& ring : rings) EXPECT_NE(ring, nullptr);
}

TEST(Topology, ProbeNamesAPeerThatSendsGarbage) {
  LocalCluster cluster(3);
  auto meshes = FormMeshes(cluster);
  auto results = OnEveryRank(3, [&](uint32_t r) -> Result<std::vector<LinkEstimate>> {
    if (r == 1) {
      // Rank 1 answers the probe with a tensor header for something else, then waits.
      v1::Envelope env = net::MakeEnvelope("job");
      env.mutable_tensor()->set_tag("probe/1/bogus");
      (void)meshes[1]->peer(2)->Send(env, DeadlineAfter(Millis(5000)));
      (void)meshes[1]->peer(0)->Receive(DeadlineAfter(Millis(5000)));  // until the others give up
      meshes[1]->Abort(Aborted("test"));
      return std::vector<LinkEstimate>{};
    }
    return ProbeLinks(*meshes[r], QuickProbe());
  });
  ASSERT_FALSE(results[2].ok());
  EXPECT_NE(results[2].status().message().find("rank 1 'peer-1'"), std::string::npos)
      << results[2].status().ToString();
  EXPECT_NE(results[2].status().message().find("probe/1/bogus"), std::string::npos);
  ASSERT_FALSE(results[0].ok());
}

}  // namespace
}  // namespace tributary::collectives
