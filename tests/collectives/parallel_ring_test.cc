// Parallel streams per ring edge: exact against a float64 reference (2-5 ranks, 1-4 streams,
// odd sizes), bit-identical on every rank, exact retry when a member dies.
#include "collectives/parallel_ring.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/collectives/mesh_cluster.h"

namespace tributary::collectives {
namespace {

using testing::LocalCluster;
using testing::OnEveryRank;
using testing::Uniform;

std::vector<std::unique_ptr<ParallelRing>> FormAll(LocalCluster& cluster, uint32_t streams,
                                                   uint32_t attempt = 0) {
  auto results = OnEveryRank(cluster.world(), [&](uint32_t r) {
    return ParallelRing::Form(cluster.io(r), cluster.listener(r), r, cluster.members(), "job", 1,
                              attempt, nullptr, DeadlineAfter(Millis(10000)), streams);
  });
  std::vector<std::unique_ptr<ParallelRing>> out;
  for (auto& r : results) {
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    out.push_back(r.ok() ? std::move(r).value() : nullptr);
  }
  return out;
}

TEST(ParallelRing, ExactAgainstFloat64ReferenceAndIdenticalOnEveryRank) {
  for (uint32_t world : {2u, 3u, 5u}) {
    LocalCluster cluster(world);
    for (uint32_t streams : {1u, 2u, 4u}) {
      auto rings = FormAll(cluster, streams, streams);  // a distinct attempt per formation
      ASSERT_EQ(rings[0]->streams(), streams);
      for (size_t n : {size_t{1}, size_t{3}, size_t{7}, size_t{1001}, size_t{65537}}) {
        std::vector<std::vector<float>> data;
        for (uint32_t r = 0; r < world; ++r) data.push_back(Uniform(1000 * r + n, n));
        std::vector<double> ref(n, 0);
        for (const auto& d : data) {
          for (size_t i = 0; i < n; ++i) ref[i] += d[i];
        }
        auto results = OnEveryRank(world, [&](uint32_t r) {
          return ParallelRingAllreduce(*rings[r], data[r],
                                       {.tag = "t" + std::to_string(n), .segment_bytes = 4096,
                                        .average = true});
        });
        for (uint32_t r = 0; r < world; ++r) {
          ASSERT_TRUE(results[r].ok()) << results[r].status().ToString();
          EXPECT_EQ(std::memcmp(data[r].data(), data[0].data(), n * sizeof(float)), 0)
              << "rank " << r << " differs (world " << world << ", streams " << streams << ")";
        }
        for (size_t i = 0; i < n; ++i) {
          ASSERT_NEAR(data[0][i], ref[i] / world, 1e-6) << i;
        }
      }
    }
  }
}

TEST(ParallelRing, CommunicatorRetriesExactlyWhenAMemberDies) {
  LocalCluster cluster(3);
  auto rings = FormAll(cluster, 3);
  const size_t n = 10007;
  std::vector<std::vector<float>> data;
  for (uint32_t r = 0; r < 3; ++r) data.push_back(Uniform(77 + r, n));
  const auto original = data;
  std::vector<std::unique_ptr<ParallelRingCommunicator>> comms;
  for (auto& r : rings) comms.push_back(std::make_unique<ParallelRingCommunicator>(std::move(r), 4096));
  comms[2]->rings().Abort();  // rank 2 is gone
  auto results = OnEveryRank(2, [&](uint32_t r) {
    CollectiveOptions o;
    o.tag = "x";
    o.deadline = DeadlineAfter(Millis(10000));
    return comms[r]->Allreduce(data[r], o);
  });
  for (uint32_t r = 0; r < 2; ++r) {
    ASSERT_FALSE(results[r].ok());
    EXPECT_EQ(data[r], original[r]) << "rank " << r << ": source buffer not preserved";
    EXPECT_TRUE(comms[r]->broken());
  }
  // Rank 0 waits on its prev, rank 2: it blames 2. Rank 1 blames whichever neighbour's failure
  // reached it first (2 directly, or 0's abort), as a ring can only see its neighbours.
  ASSERT_TRUE(comms[0]->last_stats().failed_peer.has_value()) << results[0].status().ToString();
  EXPECT_EQ(comms[0]->last_stats().failed_peer->rank, 2u);
  ASSERT_TRUE(comms[1]->last_stats().failed_peer.has_value()) << results[1].status().ToString();
  EXPECT_NE(comms[1]->last_stats().failed_peer->rank, 1u);
  // Retry with the survivors: exactly their mean.
  std::vector<RingMember> survivors = testing::Subgroup(cluster.members(), {0, 1});
  auto again = OnEveryRank(2, [&](uint32_t r) {
    return ParallelRing::Form(cluster.io(r), cluster.listener(r), r, survivors, "job", 1, 1,
                              nullptr, DeadlineAfter(Millis(10000)), 2);
  });
  for (uint32_t r = 0; r < 2; ++r) {
    ASSERT_TRUE(again[r].ok()) << again[r].status().ToString();
    comms[r]->ReplaceRings(std::move(again[r]).value());
  }
  auto retried = OnEveryRank(2, [&](uint32_t r) {
    CollectiveOptions o;
    o.tag = "x2";
    o.average = true;
    return comms[r]->Allreduce(data[r], o);
  });
  for (uint32_t r = 0; r < 2; ++r) ASSERT_TRUE(retried[r].ok()) << retried[r].status().ToString();
  for (size_t i = 0; i < n; ++i) {
    ASSERT_NEAR(data[0][i], (double(original[0][i]) + original[1][i]) / 2, 1e-6);
    ASSERT_EQ(data[0][i], data[1][i]);
  }
}

TEST(ParallelRing, LatencyPathMatchesTheRingPathAndRejectsNonFiniteInput) {
  LocalCluster cluster(4);
  auto rings = FormAll(cluster, 1);
  const size_t n = 999;  // 4 KB: the latency path by default
  std::vector<std::vector<float>> small, big;
  for (uint32_t r = 0; r < 4; ++r) small.push_back(Uniform(5 + r, n));
  big = small;
  auto a = OnEveryRank(4, [&](uint32_t r) {
    return ParallelRingAllreduce(*rings[r], small[r], {.tag = "small", .average = true});
  });
  auto b = OnEveryRank(4, [&](uint32_t r) {
    return ParallelRingAllreduce(*rings[r], big[r], {.tag = "big", .segment_bytes = 1024, .average = true},
                                 /*latency_bytes=*/0);
  });
  for (uint32_t r = 0; r < 4; ++r) {
    ASSERT_TRUE(a[r].ok()) << a[r].status().ToString();
    ASSERT_TRUE(b[r].ok()) << b[r].status().ToString();
    EXPECT_EQ(small[r], small[0]);
    // The latency path sends (N-1) whole tensors; the ring path 2(N-1)/N of one.
    EXPECT_GT(a[r]->bytes_sent, 3 * n * sizeof(float));
    EXPECT_LT(b[r]->bytes_sent, 2 * n * sizeof(float));
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(small[r][i], big[r][i], 1e-6);
  }
  // Rank 1 contributes a NaN: its next (rank 2) rejects it, naming rank 1, and everyone fails.
  for (uint32_t r = 0; r < 4; ++r) small[r] = Uniform(9 + r, n);
  small[1][7] = NAN;
  auto c = OnEveryRank(4, [&](uint32_t r) {
    return ParallelRingAllreduce(*rings[r], small[r], {.tag = "nan", .deadline = DeadlineAfter(Millis(10000))});
  });
  for (uint32_t r = 0; r < 4; ++r) EXPECT_FALSE(c[r].ok()) << r;
  EXPECT_NE(c[2].status().message().find("'peer-1'"), std::string::npos) << c[2].status().ToString();
  EXPECT_NE(c[2].status().message().find("not finite"), std::string::npos) << c[2].status().ToString();
}

TEST(ParallelRing, RejectsBadStreamCountsAndCodecs) {
  LocalCluster cluster(2);
  auto zero = ParallelRing::Form(cluster.io(0), cluster.listener(0), 0, cluster.members(), "job",
                                 1, 0, nullptr, DeadlineAfter(Millis(100)), 0);
  EXPECT_EQ(zero.status().code(), StatusCode::kInvalidArgument);
  auto many = ParallelRing::Form(cluster.io(0), cluster.listener(0), 0, cluster.members(), "job",
                                 1, 0, nullptr, DeadlineAfter(Millis(100)), ParallelRing::kMaxStreams + 1);
  EXPECT_EQ(many.status().code(), StatusCode::kInvalidArgument);
  auto rings = FormAll(cluster, 2);
  ParallelRingCommunicator comm(std::move(rings[0]));
  std::vector<float> v(10, 1);
  CollectiveOptions o;
  o.codec = "int8";
  EXPECT_EQ(comm.Allreduce(v, o).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(comm.broken());
}

}  // namespace
}  // namespace tributary::collectives
