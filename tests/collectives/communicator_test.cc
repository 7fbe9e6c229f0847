#include "collectives/communicator.h"

#include <gtest/gtest.h>

#include <cstring>

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

std::vector<std::unique_ptr<Communicator>> Rings(LocalCluster& cluster) {
  std::vector<std::unique_ptr<Communicator>> out;
  for (auto& ring : cluster.FormAll()) out.push_back(std::make_unique<RingCommunicator>(std::move(ring)));
  return out;
}

std::vector<std::unique_ptr<Communicator>> Butterflies(LocalCluster& cluster,
                                                       std::vector<uint32_t> ranks = {},
                                                       uint32_t attempt = 0) {
  std::vector<std::unique_ptr<Communicator>> out;
  for (auto& mesh : FormMeshes(cluster, ranks, {.attempt = attempt})) {
    out.push_back(std::make_unique<ButterflyCommunicator>(std::move(mesh)));
  }
  return out;
}

struct Outcome {
  Status status;
  std::vector<float> data;
};

std::vector<Outcome> Allreduce(std::vector<std::unique_ptr<Communicator>>& comms,
                               const std::vector<std::vector<float>>& inputs,
                               const CollectiveOptions& options) {
  return OnEveryRank(static_cast<uint32_t>(comms.size()), [&](uint32_t r) {
    Outcome out{Status::Ok(), inputs[r]};
    auto result = comms[r]->Allreduce(out.data, options);
    if (!result.ok()) out.status = result.status();
    return out;
  });
}

TEST(CommunicatorTest, RingAndButterflyAnswerTheSameThroughOneInterface) {
  for (uint32_t world : {3u, 5u}) {
    LocalCluster cluster(world);
    std::vector<std::vector<float>> inputs;
    std::vector<double> mean(4097, 0.0);
    for (uint32_t r = 0; r < world; ++r) {
      inputs.push_back(Uniform(DeriveSeed({world, r}), 4097));
      for (size_t i = 0; i < mean.size(); ++i) mean[i] += inputs[r][i] / double(world);
    }
    auto rings = Rings(cluster);
    auto ring_out = Allreduce(rings, inputs, {.tag = "r", .deadline = DeadlineAfter(10s), .average = true});
    rings.clear();
    auto butterflies = Butterflies(cluster);
    auto butterfly_out =
        Allreduce(butterflies, inputs, {.tag = "b", .deadline = DeadlineAfter(10s), .average = true});
    for (uint32_t r = 0; r < world; ++r) {
      ASSERT_TRUE(ring_out[r].status.ok()) << ring_out[r].status.ToString();
      ASSERT_TRUE(butterfly_out[r].status.ok()) << butterfly_out[r].status.ToString();
      EXPECT_TRUE(SameBits(ring_out[r].data, ring_out[0].data));
      EXPECT_TRUE(SameBits(butterfly_out[r].data, butterfly_out[0].data));
    }
    for (size_t i = 0; i < mean.size(); ++i) {
      ASSERT_NEAR(ring_out[0].data[i], mean[i], 1e-6);
      ASSERT_NEAR(butterfly_out[0].data[i], mean[i], 1e-6);
    }
    EXPECT_EQ(butterflies[0]->algorithm(), "butterfly");
    EXPECT_GT(butterflies[0]->last_stats().bytes_sent, 0u);
    EXPECT_FALSE(butterflies[0]->last_stats().failed_peer.has_value());
  }
}

TEST(CommunicatorTest, RingRefusesCodecsAndRobustAggregatorsAndStaysUsable) {
  LocalCluster cluster(2);
  auto rings = Rings(cluster);
  std::vector<float> v(8, 1.0f);
  auto int8 = rings[0]->Allreduce(v, {.tag = "t", .codec = "int8"});
  ASSERT_FALSE(int8.ok());
  EXPECT_EQ(int8.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(int8.status().message(), "ButterflyCommunicator")) << int8.status().ToString();
  auto median = rings[0]->Allreduce(v, {.tag = "t", .aggregator = {.kind = robust::AggregatorKind::kCoordinateMedian}});
  ASSERT_FALSE(median.ok());
  EXPECT_EQ(median.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(rings[0]->broken());
  auto outs = Allreduce(rings, {std::vector<float>(8, 1.0f), std::vector<float>(8, 2.0f)},
                        {.tag = "ok", .deadline = DeadlineAfter(10s)});
  for (const auto& o : outs) {
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    EXPECT_EQ(o.data, std::vector<float>(8, 3.0f));
  }
}

// Rank 3 of 4 dies mid-collective (its connections close without a word). The others fail fast
// naming it, keep their buffers, re-form without it, and the retry equals what the three
// survivors alone compute, bit for bit, codec state included.
void KilledRankThenExactRetry(const std::string& codec, bool butterfly) {
  SCOPED_TRACE(codec + (butterfly ? " butterfly" : " ring"));
  const uint32_t world = 4, dead = 3;
  const size_t n = 200000;
  LocalCluster cluster(world);
  std::vector<std::vector<float>> inputs, warmup;
  for (uint32_t r = 0; r < world; ++r) {
    inputs.push_back(Uniform(DeriveSeed({7, r}), n));
    warmup.push_back(Uniform(DeriveSeed({8, r}), n));
  }
  auto comms = butterfly ? Butterflies(cluster) : Rings(cluster);
  const CollectiveOptions warm{.tag = "warm", .deadline = DeadlineAfter(20s), .codec = codec,
                               .average = true, .stream = "grads"};
  // A successful call first, so lossy codecs carry residuals into the failing one.
  for (const auto& o : Allreduce(comms, warmup, warm)) ASSERT_TRUE(o.status.ok()) << o.status.ToString();

  const auto start = Clock::now();
  const CollectiveOptions options{.tag = "step", .deadline = DeadlineAfter(20s), .codec = codec,
                                  .average = true, .stream = "grads"};
  auto failed = OnEveryRank(world, [&](uint32_t r) -> Outcome {
    Outcome out{Status::Ok(), inputs[r]};
    if (r == dead) {
      // Wait until the collective is under way, then vanish.
      if (butterfly) {
        auto& mesh = static_cast<ButterflyCommunicator&>(*comms[r]).mesh();
        (void)mesh.peer(0)->Receive(DeadlineAfter(5s));
      } else {
        (void)static_cast<RingCommunicator&>(*comms[r]).ring().prev().Receive(DeadlineAfter(5s));
      }
      comms[r].reset();
      return out;
    }
    auto result = comms[r]->Allreduce(out.data, options);
    if (!result.ok()) out.status = result.status();
    return out;
  });
  EXPECT_LT(SecondsSince(start), 5.0) << "no one may wait for the 20 s deadline";
  std::vector<uint32_t> survivors{0, 1, 2};
  for (uint32_t r : survivors) {
    ASSERT_FALSE(failed[r].status.ok()) << "rank " << r;
    EXPECT_TRUE(SameBits(failed[r].data, inputs[r])) << "rank " << r << " lost its buffer";
    EXPECT_TRUE(comms[r]->broken());
    const auto& blamed = comms[r]->last_stats().failed_peer;
    // In a butterfly everyone sees rank 3 directly. In a ring only rank 0 (which reads from it)
    // surely does: rank 2 writes to it, and a write into a dead peer's socket may still succeed
    // while rank 1's abort (relayed around the ring) reaches rank 2 first.
    if (butterfly || r == 0) {
      ASSERT_TRUE(blamed.has_value()) << failed[r].status.ToString();
      EXPECT_EQ(blamed->rank, dead) << blamed->ToString() << ": " << failed[r].status.ToString();
      EXPECT_TRUE(Contains(failed[r].status.message(), "rank 3 'peer-3'"))
          << failed[r].status.ToString();
    }
  }

  // The state each survivor is left with (residuals rolled back to after the warm-up).
  std::vector<std::unique_ptr<CodecState>> states;
  if (butterfly) {
    for (uint32_t r : survivors) {
      const CodecState* s = static_cast<ButterflyCommunicator&>(*comms[r]).codec_state("grads");
      ASSERT_NE(s, nullptr);
      states.push_back(s->Clone());
    }
  }

  // Retry: survivors re-form (attempt 1) and call again on the same buffers.
  std::vector<std::vector<float>> survivor_inputs;
  for (uint32_t r : survivors) survivor_inputs.push_back(failed[r].data);
  const std::vector<MeshMember> members = testing::Subgroup(cluster.members(), survivors);
  auto reformed = OnEveryRank(3, [&](uint32_t r) -> Status {
    if (butterfly) {
      auto mesh = Mesh::Form(cluster.io(r), cluster.listener(r), r, members, "job", 1, 1, nullptr,
                             DeadlineAfter(10s));
      if (!mesh.ok()) return mesh.status();
      static_cast<ButterflyCommunicator&>(*comms[r]).ReplaceMesh(std::move(mesh).value());
    } else {
      auto ring = Ring::Form(cluster.io(r), cluster.listener(r), r, members, "job", 1, 1, nullptr,
                             DeadlineAfter(10s));
      if (!ring.ok()) return ring.status();
      static_cast<RingCommunicator&>(*comms[r]).ReplaceRing(std::move(ring).value());
    }
    return Status::Ok();
  });
  for (const auto& st : reformed) ASSERT_TRUE(st.ok()) << st.ToString();
  comms.resize(3);
  auto retried = Allreduce(comms, survivor_inputs, options);

  // What the survivors alone would have computed from the same state: a fresh group, with the
  // codec state each survivor had after the warm-up (cloned above: residuals, no warm start).
  LocalCluster alone(3);
  std::vector<std::vector<float>> want(3);
  if (butterfly) {
    auto meshes = FormMeshes(alone);
    auto outs = OnEveryRank(3, [&](uint32_t r) {
      std::vector<float> v = inputs[r];
      auto st = ButterflyAllreduce(*meshes[r], v,
                                   {.tag = "step", .deadline = DeadlineAfter(20s), .codec = codec,
                                    .average = true, .codec_state = states[r].get()});
      EXPECT_TRUE(st.ok()) << st.status().ToString();
      return v;
    });
    want = outs;
  } else {
    auto rings = Rings(alone);
    auto outs = Allreduce(rings, {inputs[0], inputs[1], inputs[2]}, options);
    for (uint32_t r = 0; r < 3; ++r) want[r] = outs[r].data;
  }
  for (uint32_t r = 0; r < 3; ++r) {
    ASSERT_TRUE(retried[r].status.ok()) << retried[r].status.ToString();
    EXPECT_TRUE(SameBits(retried[r].data, want[r])) << "survivor " << r;
  }
  if (codec == "fp32") {
    for (size_t i = 0; i < n; i += 997) {
      const double mean = (double(inputs[0][i]) + inputs[1][i] + inputs[2][i]) / 3;
      ASSERT_NEAR(retried[0].data[i], mean, 1e-6);
    }
  }
}

TEST(ExactRetryTest, ButterflyFp32) { KilledRankThenExactRetry("fp32", true); }
TEST(ExactRetryTest, ButterflyInt8WithErrorFeedback) { KilledRankThenExactRetry("int8", true); }
TEST(ExactRetryTest, ButterflyTopKWithErrorFeedback) { KilledRankThenExactRetry("topk:0.01", true); }
TEST(ExactRetryTest, Ring) { KilledRankThenExactRetry("fp32", false); }

}  // namespace
}  // namespace tributary::collectives
