// DoublingAllreduce (recursive doubling): exact against a float64 reference at power-of-two
// worlds and odd sizes, the same bits on every rank, and the failure contract: a dead, silent or
// lying peer is named by every member (also by those that never exchange with it), `data`
// survives for an exact retry. Cancellation, Interrupt and mismatched options:
// latency_paths_test.cc.
#include "collectives/doubling_allreduce.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cfloat>
#include <limits>
#include <thread>

#include "net/frame.h"
#include "tests/collectives/mesh_cluster.h"

namespace tributary::collectives {
namespace {

using namespace std::chrono_literals;
using testing::Contains;
using testing::FormMeshes;
using testing::Inputs;
using testing::LocalCluster;
using testing::OnEveryRank;
using testing::SameBits;

using Outcome = testing::MeshOutcome;

std::vector<Outcome> RunAll(std::vector<std::unique_ptr<Mesh>>& meshes,
                            const std::vector<std::vector<float>>& inputs, DoublingOptions options) {
  return testing::OnEveryMesh(meshes, inputs, [&](Mesh& mesh, std::span<float> data) {
    return DoublingAllreduce(mesh, data, options);
  });
}

TEST(DoublingAllreduceTest, ExactAgainstFloat64AndTheSameBitsOnEveryRank) {
  for (uint32_t world : {1u, 2u, 4u, 8u}) {
    LocalCluster cluster(world);
    auto meshes = FormMeshes(cluster);
    for (size_t n : {size_t{1}, size_t{3}, size_t{1001}, size_t{4099}, size_t{70001}}) {
      for (bool average : {false, true}) {
        SCOPED_TRACE("world " + std::to_string(world) + ", n " + std::to_string(n) +
                     (average ? ", mean" : ", sum"));
        const auto inputs = Inputs(world, n, n + world);
        auto outs = RunAll(meshes, inputs,
                           {.tag = "t" + std::to_string(n) + (average ? "m" : "s"),
                            .deadline = DeadlineAfter(10s),
                            .average = average});
        for (uint32_t r = 0; r < world; ++r) {
          ASSERT_TRUE(outs[r].status.ok()) << outs[r].status.ToString();
          EXPECT_TRUE(SameBits(outs[r].data, outs[0].data)) << "rank " << r;
        }
        for (size_t i = 0; i < n; ++i) {
          double ref = 0;
          for (const auto& v : inputs) ref += v[i];
          if (average) ref /= world;
          ASSERT_NEAR(outs[0].data[i], ref, 1e-5 * world) << i;
        }
      }
    }
  }
}

// The pairs' order of summation, exactly: ((x0 + x1) + (x2 + x3)) at world 4, which is what
// makes every rank's bits the same.
TEST(DoublingAllreduceTest, SumsPairsOfPartialSums) {
  LocalCluster cluster(4);
  auto meshes = FormMeshes(cluster);
  // 1 + 2^-24 + 2^-24 + ... rounds differently depending on the order of the additions.
  const std::vector<std::vector<float>> inputs{{1.0f}, {0x1p-24f}, {0x1p-24f}, {0x1p-24f}};
  auto outs = RunAll(meshes, inputs, {.tag = "order", .deadline = DeadlineAfter(10s)});
  const float want = (1.0f + 0x1p-24f) + (0x1p-24f + 0x1p-24f);
  for (const auto& o : outs) {
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    EXPECT_EQ(o.data[0], want);
  }
}

// Rank 3 of 4 vanishes after its first exchange. Rank 1 and 2 exchange with it and name it;
// rank 0 never does and names it too (from the abort a partner relays). Everyone keeps `data`,
// and a retry on a new mesh from the kept buffers equals a fresh group's.
TEST(DoublingAllreduceTest, DeadPeerIsNamedByEveryoneAndTheRetryIsExact) {
  const uint32_t world = 4, dead = 3;
  const size_t n = 5003;
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster);
  const auto inputs = Inputs(world, n, 21);
  const auto start = Clock::now();
  auto outs = OnEveryRank(world, [&](uint32_t r) {
    Outcome out{Status::Ok(), inputs[r], std::nullopt};
    if (r == dead) {
      // Takes its step-0 partner's (rank 2's) partial sum, then closes everything.
      (void)meshes[r]->peer(2)->Receive(DeadlineAfter(5s));
      meshes[r].reset();
      return out;
    }
    auto result = DoublingAllreduce(*meshes[r], out.data, {.tag = "step", .deadline = DeadlineAfter(20s)});
    if (!result.ok()) out.status = result.status();
    out.failure = meshes[r]->failure();
    return out;
  });
  EXPECT_LT(SecondsSince(start), 5.0) << "no one may wait for the 20 s deadline";
  for (uint32_t r = 0; r < dead; ++r) {
    ASSERT_FALSE(outs[r].status.ok()) << "rank " << r;
    EXPECT_TRUE(SameBits(outs[r].data, inputs[r])) << "rank " << r << " lost its buffer";
    EXPECT_TRUE(meshes[r]->broken());
    ASSERT_TRUE(outs[r].failure.has_value()) << outs[r].status.ToString();
    EXPECT_EQ(outs[r].failure->rank, dead) << "rank " << r << ": " << outs[r].status.ToString();
  }
  EXPECT_TRUE(outs[0].failure->reported_by.has_value()) << "rank 0 never talks to rank 3";

  // Three survivors cannot double (their MeshCommunicator takes another path); a pair of them
  // retries from the buffers it kept and gets what a fresh pair gets from the original inputs.
  auto pair = FormMeshes(cluster, {0, 1}, {.attempt = 1});
  auto retried = RunAll(pair, {outs[0].data, outs[1].data},
                        {.tag = "step", .deadline = DeadlineAfter(10s), .average = true});
  LocalCluster alone(2);
  auto fresh_meshes = FormMeshes(alone);
  auto fresh = RunAll(fresh_meshes, {inputs[0], inputs[1]},
                      {.tag = "step", .deadline = DeadlineAfter(10s), .average = true});
  for (uint32_t r = 0; r < 2; ++r) {
    ASSERT_TRUE(retried[r].status.ok()) << retried[r].status.ToString();
    ASSERT_TRUE(fresh[r].status.ok()) << fresh[r].status.ToString();
    EXPECT_TRUE(SameBits(retried[r].data, fresh[r].data)) << "rank " << r;
  }
  auto survivors = FormMeshes(cluster, {0, 1, 2}, {.attempt = 2});
  std::vector<float> d(4, 1.0f);
  auto odd = DoublingAllreduce(*survivors[0], d, {.tag = "odd"});
  EXPECT_EQ(odd.status().code(), StatusCode::kInvalidArgument) << odd.status().ToString();
  EXPECT_TRUE(Contains(odd.status().message(), "power-of-two")) << odd.status().ToString();
  EXPECT_FALSE(survivors[0]->broken()) << "an argument error sends nothing";
}

// Rank 3 never calls. Its partners time out waiting for it; the members further along, who
// wait on one of those partners instead, hear its name from them before their own deadline.
TEST(DoublingAllreduceTest, SilentPeerIsADeadlineNamingIt) {
  for (uint32_t world : {4u, 8u}) {
    SCOPED_TRACE("world " + std::to_string(world));
    LocalCluster cluster(world);
    auto meshes = FormMeshes(cluster);
    const auto inputs = Inputs(world, 17, 5);
    auto outs = OnEveryRank(world, [&](uint32_t r) {
      Outcome out{Status::Ok(), inputs[r], std::nullopt};
      if (r == 3) return out;
      auto result = DoublingAllreduce(*meshes[r], out.data, {.tag = "t", .deadline = DeadlineAfter(300ms)});
      if (!result.ok()) out.status = result.status();
      out.failure = meshes[r]->failure();
      return out;
    });
    for (uint32_t r = 0; r < world; ++r) {
      if (r == 3) continue;
      ASSERT_FALSE(outs[r].status.ok());
      ASSERT_TRUE(outs[r].failure.has_value()) << outs[r].status.ToString();
      EXPECT_EQ(outs[r].failure->rank, 3u) << "rank " << r << ": " << outs[r].status.ToString();
      EXPECT_TRUE(SameBits(outs[r].data, inputs[r]));
    }
  }
}

// Rank 3 speaks the protocol by hand and sends a NaN to both its partners (rank 2 in step 0,
// rank 1 in step 1). They refuse it on receipt and name rank 3; rank 0, which never hears from
// rank 3, names it too, reported by the partner that saw it. A NaN in our own input fails
// before anything is sent and blames nobody.
TEST(DoublingAllreduceTest, NonFiniteValuesAreRefusedAndTheirSenderNamed) {
  LocalCluster cluster(4);
  auto meshes = FormMeshes(cluster);
  const size_t n = 65;
  const auto inputs = Inputs(4, n, 9);
  auto outs = OnEveryRank(4, [&](uint32_t r) {
    Outcome out{Status::Ok(), inputs[r], std::nullopt};
    if (r == 3) {
      std::vector<float> forged = inputs[3];
      forged[40] = std::numeric_limits<float>::quiet_NaN();
      v1::Envelope env = net::MakeEnvelope("job");
      v1::TensorHeader* h = env.mutable_tensor();
      h->set_tag(DoublingWireTag("nan", true));
      h->set_dtype(v1::DTYPE_F32);
      h->set_numel(n);
      h->set_offset(3);
      h->set_nbytes(n * sizeof(float));
      for (uint32_t p : {2u, 1u}) {
        (void)meshes[3]->peer(p)->QueueSend(env, std::as_bytes(std::span(forged)));
        (void)meshes[3]->peer(p)->Flush(DeadlineAfter(5s));
      }
      out.status = Aborted("forged");
      return out;
    }
    auto result = DoublingAllreduce(*meshes[r], out.data,
                                    {.tag = "nan", .deadline = DeadlineAfter(10s), .average = true});
    if (!result.ok()) out.status = result.status();
    out.failure = meshes[r]->failure();
    return out;
  });
  for (uint32_t r : {0u, 1u, 2u}) {
    ASSERT_FALSE(outs[r].status.ok()) << "rank " << r;
    ASSERT_TRUE(outs[r].failure.has_value()) << outs[r].status.ToString();
    EXPECT_EQ(outs[r].failure->rank, 3u) << "rank " << r << ": " << outs[r].status.ToString();
    EXPECT_TRUE(SameBits(outs[r].data, inputs[r]));
  }
  EXPECT_TRUE(Contains(outs[2].status.message(), "NaN at element 40")) << outs[2].status.ToString();

  LocalCluster two(2);
  auto pair = FormMeshes(two);
  std::vector<float> own(8, 1.0f);
  own[5] = std::numeric_limits<float>::infinity();
  auto refused = DoublingAllreduce(*pair[0], own, {.tag = "own", .deadline = DeadlineAfter(10s)});
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << refused.status().ToString();
  EXPECT_TRUE(Contains(refused.status().message(), "own input element 5")) << refused.status().ToString();
  EXPECT_FALSE(pair[0]->failure().has_value());
}

// A partial sum that overflows: the pair that formed it says so (InvalidArgument, nobody
// blamed); the other pair fails too; nobody's `data` changes. Once in step 0 (x0 + x1), once in
// the last step, where the sum would otherwise be written straight into `data`.
TEST(DoublingAllreduceTest, OverflowingSumIsAnErrorAndKeepsData) {
  for (bool last_step : {false, true}) {
    SCOPED_TRACE(last_step ? "last step" : "first step");
    LocalCluster cluster(4);
    auto meshes = FormMeshes(cluster);
    auto inputs = Inputs(4, 2000, 14);
    inputs[0][1500] = 2e38f;
    inputs[last_step ? 2 : 1][1500] = 2e38f;
    auto outs = RunAll(meshes, inputs, {.tag = "o", .deadline = DeadlineAfter(10s)});
    for (uint32_t r = 0; r < 4; ++r) {
      ASSERT_FALSE(outs[r].status.ok()) << "rank " << r;
      EXPECT_TRUE(SameBits(outs[r].data, inputs[r])) << "rank " << r;
    }
    for (uint32_t r : last_step ? std::vector<uint32_t>{0, 1, 2, 3} : std::vector<uint32_t>{0, 1}) {
      EXPECT_EQ(outs[r].status.code(), StatusCode::kInvalidArgument) << outs[r].status.ToString();
      EXPECT_TRUE(Contains(outs[r].status.message(), "element 1500 overflows")) << outs[r].status.ToString();
      EXPECT_FALSE(outs[r].failure.has_value()) << outs[r].failure->ToString();
    }
  }
}

}  // namespace
}  // namespace tributary::collectives
