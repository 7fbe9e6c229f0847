// Acceptance gap-filler (issue 6): every ring algorithm against a float64 reference at 2-8
// peers with odd sizes. The butterfly's codec × aggregator matrix at 2-8 peers is in
// butterfly_test.cc (ButterflyMatrixTest); the ring family runs fp32 sum/mean only (codecs and
// robust aggregators need every contribution at one owner, see communicator.h), and
// allreduce_test.cc covers RingAllreduce at 2-5 peers. Here: RingAllreduce, ParallelRing with
// 1 and 3 streams and the latency path, at every world size 2-8.
#include <gtest/gtest.h>

#include <cstring>

#include "collectives/parallel_ring.h"
#include "tests/collectives/mesh_cluster.h"

namespace tributary::collectives {
namespace {

using testing::LocalCluster;
using testing::OnEveryRank;
using testing::Uniform;

class RingMatrixTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(RingMatrixTest, EveryRingAlgorithmMatchesTheFloat64Reference) {
  const uint32_t world = GetParam();
  LocalCluster cluster(world);
  uint32_t attempt = 0;
  for (uint32_t streams : {1u, 3u}) {
    auto formed = OnEveryRank(world, [&](uint32_t r) {
      return ParallelRing::Form(cluster.io(r), cluster.listener(r), r, cluster.members(), "job", 1,
                                attempt, nullptr, DeadlineAfter(Millis(20000)), streams);
    });
    ++attempt;
    std::vector<std::unique_ptr<ParallelRing>> rings;
    for (auto& f : formed) {
      ASSERT_TRUE(f.ok()) << f.status().ToString();
      rings.push_back(std::move(f).value());
    }
    uint64_t index = 0;
    // latency_bytes: 0 = always reduce-scatter + all-gather; SIZE_MAX = always the latency path.
    for (size_t latency_bytes : {size_t{0}, SIZE_MAX}) {
      for (size_t n : {size_t{1}, size_t{3}, size_t{17}, size_t{1001}, size_t{30011}}) {
        for (bool average : {false, true}) {
          SCOPED_TRACE("world " + std::to_string(world) + " streams " + std::to_string(streams) +
                       " latency_bytes " + std::to_string(latency_bytes) + " n " + std::to_string(n) +
                       (average ? " mean" : " sum"));
          std::vector<std::vector<float>> data;
          std::vector<double> ref(n, 0);
          for (uint32_t r = 0; r < world; ++r) {
            data.push_back(Uniform(DeriveSeed({world, streams, n, r, index}), n));
            for (size_t i = 0; i < n; ++i) ref[i] += data[r][i];
          }
          auto results = OnEveryRank(world, [&](uint32_t r) {
            return ParallelRingAllreduce(*rings[r], data[r],
                                         {.tag = "m" + std::to_string(index),
                                          .deadline = DeadlineAfter(Millis(20000)),
                                          .segment_bytes = 4096,
                                          .average = average},
                                         latency_bytes);
          });
          ++index;
          for (uint32_t r = 0; r < world; ++r) {
            ASSERT_TRUE(results[r].ok()) << results[r].status().ToString();
            ASSERT_EQ(std::memcmp(data[r].data(), data[0].data(), n * sizeof(float)), 0) << "rank " << r;
          }
          for (size_t i = 0; i < n; ++i) {
            const double want = average ? ref[i] / world : ref[i];
            ASSERT_NEAR(data[0][i], want, 1e-6 * world) << "element " << i;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, RingMatrixTest, ::testing::Range(2u, 9u));

}  // namespace
}  // namespace tributary::collectives
