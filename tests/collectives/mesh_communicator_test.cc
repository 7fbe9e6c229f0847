// MeshCommunicator: the path model (path_choice.h), the path each call takes, every path exact
// against a float64 reference on one mesh, and the failure contract on the ring path (the one
// that runs over a view of the mesh's connections).
#include "collectives/mesh_communicator.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <thread>

#include "tests/collectives/mesh_cluster.h"

namespace tributary::collectives {
namespace {

using namespace std::chrono_literals;
using testing::Contains;
using testing::FormMeshes;
using testing::LocalCluster;
using testing::OnEveryRank;
using testing::Uniform;
using testing::SameBits;
using Path = MeshCommunicator::Path;

TEST(PathChoiceTest, ThresholdFollowsTheModel) {
  const LinkEstimate wan{.rtt_seconds = 0.05, .bytes_per_second = 12.5e6};  // 100 Mbit/s, 50 ms
  // Two members: the direct path sends the ring's bytes in half the hops; only summing costs,
  // S* = α·R/2 ≈ 38 MB at 50 ms, so up to the cap.
  EXPECT_EQ(DirectThresholdBytes(2, wan), kMaxDirectBytes);
  // Three (no doubling): S* = 3·α / (2/(3·B) + 3/R) with α = 25.1 ms: ≈ 1.4 MB. 4 KiB goes
  // direct, 16 MiB not.
  const double alpha = 0.0251, b = 12.5e6, r = kReduceBytesPerSecond;
  const size_t three = DirectThresholdBytes(3, wan);
  EXPECT_NEAR(static_cast<double>(three), 3 * alpha / (2 / (3 * b) + 3 / r), 1.0);
  EXPECT_GT(three, size_t{4096});
  EXPECT_LT(three, size_t{16} << 20);
  EXPECT_EQ(DoublingThresholdBytes(3, wan, 64 << 10), 0u);
  // Four: doubling (2α + 2S/B + 4S/R) takes over from direct (α + 3S/B + 4S/R) at
  // α / (1/B) ≈ 314 KB, before the direct path's crossover with the ring (≈ 1.03 MB), and hands
  // over to the ring where it reaches the ring's latency floor, 6 hops of α + 64 KiB/B:
  // (6·(α + g/B) - 2α) / (2/B + 4/R) ≈ 817 KB.
  const size_t g = RingSegmentBytes(wan);
  ASSERT_EQ(g, size_t{64} << 10);
  const size_t four = DirectThresholdBytes(4, wan);
  EXPECT_NEAR(static_cast<double>(four), alpha / (1 / b), 1.0);
  const size_t four_doubling = DoublingThresholdBytes(4, wan, g);
  EXPECT_NEAR(static_cast<double>(four_doubling), (6 * (alpha + g / b) - 2 * alpha) / (2 / b + 4 / r), 1.0);
  EXPECT_NEAR(DoublingSeconds(4, wan, static_cast<double>(four_doubling)), RingLatencySeconds(4, wan, g), 1e-6);
  for (double s : {0.5 * four, 0.99 * four}) {
    EXPECT_LT(DirectSeconds(4, wan, s), DoublingSeconds(4, wan, s)) << s;
  }
  EXPECT_LT(DoublingSeconds(4, wan, 1.01 * four), DirectSeconds(4, wan, 1.01 * four));
  EXPECT_EQ(DoublingSeconds(6, wan, 1e6), std::numeric_limits<double>::infinity());
  EXPECT_EQ(DoublingThresholdBytes(6, wan, g), 0u);
  // A larger segment raises the ring's floor, and with it doubling's range.
  EXPECT_GT(DoublingThresholdBytes(4, wan, 4 * g), four_doubling);
  // More members: the direct path's extra bytes grow faster than the others' extra hops.
  EXPECT_LT(DirectThresholdBytes(8, wan), four);
  EXPECT_GT(DoublingThresholdBytes(8, wan, g), four_doubling);
  // Without doubling the threshold tends to 2α·B as the world grows (the ring's 2(N-1) hops).
  EXPECT_GT(DirectThresholdBytes(31, wan), 2 * alpha * b * 0.99);
  // A measured LAN moves the crossovers to tens of KiB.
  const LinkEstimate lan{.rtt_seconds = 2e-4, .bytes_per_second = 1.25e9};  // 10 Gbit/s
  EXPECT_GT(DirectThresholdBytes(4, lan), size_t{64} << 10);
  EXPECT_LT(DirectThresholdBytes(4, lan), size_t{1} << 20);
  // No measurement (none, or a link without a bandwidth): the loopback crossovers, the model's
  // guesses aside. The direct path up to 32 KiB, or doubling up to 64 KiB where it fits.
  const LinkEstimate no_bandwidth{.rtt_seconds = 0.05};
  EXPECT_FALSE(Measured(std::nullopt));
  EXPECT_FALSE(Measured(no_bandwidth));
  EXPECT_TRUE(Measured(lan));
  // A measurement that happens to equal the LAN default is still a measurement.
  EXPECT_TRUE(Measured(kDefaultLink));
  EXPECT_NEAR(static_cast<double>(DirectThresholdBytes(4, kDefaultLink)), 600e-6 * 125e6, 1.0)
      << "the model's α·B at N = 4, as on any measured link";
  for (uint32_t n : {2u, 3u, 5u, 6u}) {
    EXPECT_EQ(DirectThresholdBytes(n, std::nullopt), kUnmeasuredDirectMaxBytes) << n;
    EXPECT_EQ(DoublingThresholdBytes(n, std::nullopt, RingSegmentBytes(std::nullopt)), 0u) << n;
  }
  for (uint32_t n : {4u, 8u}) {
    EXPECT_EQ(DirectThresholdBytes(n, std::nullopt), 0u) << n;
    EXPECT_EQ(DoublingThresholdBytes(n, std::nullopt, RingSegmentBytes(std::nullopt)),
              kUnmeasuredDoublingMaxBytes) << n;
  }
  EXPECT_EQ(DirectThresholdBytes(3, no_bandwidth), kUnmeasuredDirectMaxBytes);
  EXPECT_EQ(DoublingThresholdBytes(4, no_bandwidth, g), kUnmeasuredDoublingMaxBytes);
  EXPECT_EQ(RingSegmentBytes(std::nullopt), RingSegmentBytes(kDefaultLink));
  // A huge product is capped.
  const LinkEstimate huge{.rtt_seconds = 10, .bytes_per_second = 1e12};
  EXPECT_EQ(DirectThresholdBytes(3, huge), kMaxDirectBytes);
  EXPECT_EQ(DoublingThresholdBytes(4, huge, g), 0u)
      << "the direct path's cap already covers everything doubling would take";
}

TEST(PathChoiceTest, SegmentsAndGroupLink) {
  EXPECT_EQ(RingSegmentBytes(LinkEstimate{.rtt_seconds = 0.1, .bytes_per_second = 12.5e6}), size_t{64} << 10);
  EXPECT_EQ(RingSegmentBytes(LinkEstimate{.rtt_seconds = 0.001, .bytes_per_second = 2e9}), size_t{1} << 20);
  EXPECT_EQ(RingSegmentBytes(LinkEstimate{.rtt_seconds = 0.01, .bytes_per_second = 50e6}), size_t{200000});
  EXPECT_EQ(RingSegmentBytes(LinkEstimate{}), size_t{1} << 20);
  LinkMatrix m(3);
  for (size_t i = 0; i < 3; ++i) {
    for (size_t j = 0; j < 3; ++j) {
      if (i != j) m.at(i, j) = {.rtt_seconds = 0.01 * (i + j), .bytes_per_second = 1e6 * (1 + i)};
    }
  }
  const std::optional<LinkEstimate> g = GroupLink(m);
  ASSERT_TRUE(g.has_value());
  EXPECT_NEAR(g->rtt_seconds, 0.02, 1e-12);  // mean of 1,2,1,3,2,3 × 10 ms
  EXPECT_EQ(g->bytes_per_second, 1e6);       // the slowest
  EXPECT_FALSE(GroupLink(LinkMatrix(2)).has_value()) << "no estimates: not measured";
}

std::vector<std::unique_ptr<MeshCommunicator>> Comms(LocalCluster& cluster,
                                                      MeshCommunicator::Options options) {
  std::vector<std::unique_ptr<MeshCommunicator>> out;
  for (auto& mesh : FormMeshes(cluster)) out.push_back(std::make_unique<MeshCommunicator>(std::move(mesh), options));
  return out;
}

struct Outcome {
  Status status;
  std::vector<float> data;
};

std::vector<Outcome> Allreduce(std::vector<std::unique_ptr<MeshCommunicator>>& comms,
                               const std::vector<std::vector<float>>& inputs,
                               const CollectiveOptions& options) {
  return OnEveryRank(static_cast<uint32_t>(comms.size()), [&](uint32_t r) {
    Outcome out{Status::Ok(), inputs[r]};
    auto result = comms[r]->Allreduce(out.data, options);
    if (!result.ok()) out.status = result.status();
    return out;
  });
}

TEST(MeshCommunicatorTest, PicksThePathBySizeCodecAndBinding) {
  LocalCluster cluster(3);
  auto comms = Comms(cluster, {.direct_max_bytes = 4096});
  MeshCommunicator& c = *comms[0];
  EXPECT_EQ(c.PathFor(4096, {}), Path::kDirect);
  EXPECT_EQ(c.PathFor(4100, {}), Path::kRing);
  EXPECT_EQ(c.PathFor(4100, {.codec = "int8"}), Path::kButterfly);
  EXPECT_EQ(c.PathFor(4096, {.codec = "int8"}), Path::kDirect);
  robust::AggregatorSpec median{.kind = robust::AggregatorKind::kCoordinateMedian};
  EXPECT_EQ(c.PathFor(1 << 20, {.aggregator = median}), Path::kButterfly);
  ContributionBinding binding;
  EXPECT_EQ(c.PathFor(16, {.binding = &binding}), Path::kButterfly);
  // Without an override the threshold is the model's, for this world.
  LocalCluster two(2);
  const LinkEstimate wan{.rtt_seconds = 0.05, .bytes_per_second = 12.5e6};
  auto pair = Comms(two, {.link = wan});
  EXPECT_EQ(pair[0]->direct_max_bytes(), kMaxDirectBytes);
  EXPECT_EQ(pair[0]->doubling_max_bytes(), 0u);
  // Four on that measured link: doubling between the model's two thresholds; unmeasured,
  // doubling up to 64 KiB and the ring above.
  LocalCluster four(4);
  auto wan_quad = Comms(four, {.link = wan});
  EXPECT_EQ(wan_quad[0]->doubling_max_bytes(), DoublingThresholdBytes(4, wan, 64 << 10));
  EXPECT_EQ(wan_quad[0]->PathFor(512 << 10, {}), Path::kDoubling);
  EXPECT_EQ(wan_quad[0]->PathFor(1 << 20, {}), Path::kRing);
  EXPECT_EQ(wan_quad[0]->PathFor(256 << 10, {}), Path::kDirect);
  auto unmeasured = Comms(four, {});
  EXPECT_EQ(unmeasured[0]->PathFor(4096, {}), Path::kDoubling);
  EXPECT_EQ(unmeasured[0]->PathFor(64 << 10, {}), Path::kDoubling);
  EXPECT_EQ(unmeasured[0]->PathFor((64 << 10) + 4, {}), Path::kRing);
  EXPECT_EQ(unmeasured[0]->PathFor(512 << 10, {}), Path::kRing);
  EXPECT_EQ(pair[0]->segment_bytes(), size_t{64} << 10);
  // Overrides: doubling between the two thresholds, plain sums only.
  auto quad = Comms(four, {.direct_max_bytes = 4096, .doubling_max_bytes = 65536});
  EXPECT_EQ(quad[0]->PathFor(4096, {}), Path::kDirect);
  EXPECT_EQ(quad[0]->PathFor(4100, {}), Path::kDoubling);
  EXPECT_EQ(quad[0]->PathFor(65536, {}), Path::kDoubling);
  EXPECT_EQ(quad[0]->PathFor(65540, {}), Path::kRing);
  EXPECT_EQ(quad[0]->PathFor(8192, {.codec = "int8"}), Path::kButterfly);
  EXPECT_EQ(quad[0]->PathFor(8192, {.aggregator = median}), Path::kButterfly);
  // A world that is not a power of two never doubles, whatever the override says.
  EXPECT_EQ(Comms(cluster, {.direct_max_bytes = 4096, .doubling_max_bytes = 65536})[0]->PathFor(8192, {}),
            Path::kRing);
}

// One mesh, every path in turn (small: direct; mid fp32: doubling at world 4, else the ring;
// large fp32: ring over the mesh; large int8: butterfly), each exact against float64 and the
// same bits on every rank.
TEST(MeshCommunicatorTest, EveryPathIsExactOnOneMesh) {
  for (uint32_t world : {2u, 3u, 4u, 8u}) {
    LocalCluster cluster(world);
    auto comms = Comms(cluster, {.direct_max_bytes = 8192, .doubling_max_bytes = 40000, .segment_bytes = 4096});
    const Path mid = world >= 4 ? Path::kDoubling : Path::kRing;
    struct Case {
      size_t n;
      std::string codec;
      Path path;
      double tolerance;
    };
    for (const Case& c : {Case{5, "fp32", Path::kDirect, 1e-6}, Case{2048, "fp32", Path::kDirect, 1e-6},
                          Case{9001, "fp32", mid, 1e-6}, Case{20001, "fp32", Path::kRing, 1e-6},
                          Case{20001, "int8", Path::kButterfly, 2e-2}, Case{7, "fp32", Path::kDirect, 1e-6},
                          Case{9001, "fp32", mid, 1e-6}}) {
      SCOPED_TRACE("world " + std::to_string(world) + ", n " + std::to_string(c.n) + " " + c.codec);
      std::vector<std::vector<float>> inputs;
      for (uint32_t r = 0; r < world; ++r) inputs.push_back(Uniform(c.n * 10 + r, c.n));
      auto outs = Allreduce(comms, inputs,
                            {.tag = "t" + std::to_string(c.n) + c.codec, .deadline = DeadlineAfter(20s),
                             .codec = c.codec, .average = true, .stream = c.codec});
      for (uint32_t r = 0; r < world; ++r) {
        ASSERT_TRUE(outs[r].status.ok()) << outs[r].status.ToString();
        EXPECT_EQ(comms[r]->last_path(), c.path) << PathName(comms[r]->last_path());
        EXPECT_TRUE(SameBits(outs[r].data, outs[0].data)) << "rank " << r;
      }
      for (size_t i = 0; i < c.n; ++i) {
        double ref = 0;
        for (const auto& v : inputs) ref += v[i];
        ASSERT_NEAR(outs[0].data[i], ref / world, c.tolerance) << i;
      }
    }
    EXPECT_FALSE(comms[0]->broken());
  }
}

// The ring path over the mesh: rank 2 of 3 vanishes mid-call; the others fail naming it where
// they see it, keep their buffers, and the survivors' retry on a new mesh equals a fresh pair.
TEST(MeshCommunicatorTest, RingPathFailureIsNamedAndTheRetryIsExact) {
  const uint32_t world = 3, dead = 2;
  const size_t n = 100000;
  LocalCluster cluster(world);
  auto comms = Comms(cluster, {.direct_max_bytes = 1024, .segment_bytes = 16384});
  std::vector<std::vector<float>> inputs;
  for (uint32_t r = 0; r < world; ++r) inputs.push_back(Uniform(40 + r, n));
  const CollectiveOptions options{.tag = "step", .deadline = DeadlineAfter(20s), .average = true};
  const auto start = Clock::now();
  auto outs = OnEveryRank(world, [&](uint32_t r) {
    Outcome out{Status::Ok(), inputs[r]};
    if (r == dead) {
      (void)comms[r]->mesh().peer(1)->Receive(DeadlineAfter(5s));  // rank 1 is its prev
      comms[r].reset();
      return out;
    }
    auto result = comms[r]->Allreduce(out.data, options);
    if (!result.ok()) out.status = result.status();
    return out;
  });
  EXPECT_LT(SecondsSince(start), 5.0);
  for (uint32_t r = 0; r < dead; ++r) {
    ASSERT_FALSE(outs[r].status.ok());
    EXPECT_EQ(comms[r]->last_path(), Path::kRing);
    EXPECT_TRUE(SameBits(outs[r].data, inputs[r])) << "rank " << r << " lost its buffer";
    EXPECT_TRUE(comms[r]->broken());
  }
  // Rank 0 reads from rank 2 (its prev): it sees the death itself.
  ASSERT_TRUE(comms[0]->last_stats().failed_peer.has_value()) << outs[0].status.ToString();
  EXPECT_EQ(comms[0]->last_stats().failed_peer->rank, dead);

  auto meshes = FormMeshes(cluster, {0, 1}, {.attempt = 1});
  for (uint32_t r = 0; r < 2; ++r) comms[r]->ReplaceMesh(std::move(meshes[r]));
  comms.resize(2);
  auto retried = Allreduce(comms, {outs[0].data, outs[1].data}, options);
  LocalCluster alone(2);
  auto fresh = Comms(alone, {.direct_max_bytes = 1024, .segment_bytes = 16384});
  auto want = Allreduce(fresh, {inputs[0], inputs[1]}, options);
  for (uint32_t r = 0; r < 2; ++r) {
    ASSERT_TRUE(retried[r].status.ok()) << retried[r].status.ToString();
    EXPECT_EQ(comms[r]->last_path(), Path::kRing);
    EXPECT_TRUE(SameBits(retried[r].data, want[r].data)) << "rank " << r;
  }
}

// CollectiveOptions::control cancels every path, including those that block inside receives.
TEST(MeshCommunicatorTest, CancellationEndsEveryPath) {
  for (size_t n : {size_t{16}, size_t{50000}}) {
    for (const std::string codec : {"fp32", "int8"}) {
      SCOPED_TRACE(std::to_string(n) + " " + codec);
      LocalCluster cluster(3);
      auto comms = Comms(cluster, {.direct_max_bytes = 1024});
      std::atomic<bool> superseded{false};
      FormControl control{.cancelled = [&] { return superseded.load(); }};
      std::thread flip([&] {
        std::this_thread::sleep_for(150ms);
        superseded = true;
      });
      const auto inputs = Uniform(3, n);
      // Rank 2 never calls; ranks 0 and 1 would wait for the 20 s deadline.
      auto outs = OnEveryRank(2, [&](uint32_t r) {
        Outcome out{Status::Ok(), inputs};
        auto result = comms[r]->Allreduce(out.data, {.tag = "c", .deadline = DeadlineAfter(20s),
                                                     .codec = codec, .control = &control});
        if (!result.ok()) out.status = result.status();
        return out;
      });
      flip.join();
      for (uint32_t r = 0; r < 2; ++r) {
        ASSERT_FALSE(outs[r].status.ok());
        EXPECT_TRUE(outs[r].status.code() == StatusCode::kAborted) << outs[r].status.ToString();
        EXPECT_TRUE(SameBits(outs[r].data, inputs));
        EXPECT_FALSE(comms[r]->last_stats().failed_peer.has_value())
            << comms[r]->last_stats().failed_peer->ToString();
      }
    }
  }
}

}  // namespace
}  // namespace tributary::collectives
