// DirectAllreduce (the latency path): exact against a float64 reference at 2-8 ranks and odd
// sizes, the same bits on every rank, codecs and robust aggregators, and the failure contract:
// a dead, silent or lying peer is named, `data` and codec state survive for an exact retry.
// Cancellation, Interrupt and mismatched options: latency_paths_test.cc.
#include "collectives/direct_allreduce.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
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
using testing::Inputs;
using testing::SameBits;

using Outcome = testing::MeshOutcome;

std::vector<Outcome> RunAll(std::vector<std::unique_ptr<Mesh>>& meshes,
                            const std::vector<std::vector<float>>& inputs, DirectOptions options) {
  return testing::OnEveryMesh(meshes, inputs, [&](Mesh& mesh, std::span<float> data) {
    return DirectAllreduce(mesh, data, options);
  });
}

TEST(DirectAllreduceTest, ExactAgainstFloat64AndTheSameBitsOnEveryRank) {
  for (uint32_t world = 2; world <= 8; ++world) {
    LocalCluster cluster(world);
    auto meshes = FormMeshes(cluster);
    for (size_t n : {size_t{1}, size_t{3}, size_t{7}, size_t{1001}, size_t{4099}}) {
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
          EXPECT_TRUE(SameBits(outs[r].data, outs[0].data)) << "rank " << r << " differs";
        }
        // world - 1 float additions of values below `world`, then maybe one division.
        const double tolerance = world * world * 0x1p-24;
        for (size_t i = 0; i < n; ++i) {
          double ref = 0;
          for (const auto& v : inputs) ref += v[i];
          if (average) ref /= world;
          ASSERT_NEAR(outs[0].data[i], ref, tolerance) << "element " << i;
        }
      }
    }
  }
}

TEST(DirectAllreduceTest, CodecsAndRobustAggregatorsMatchTheReference) {
  const uint32_t world = 5;
  const size_t n = 999;
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster);
  const auto inputs = Inputs(world, n, 3);
  testing::Vectors as_double;
  for (const auto& v : inputs) as_double.emplace_back(v.begin(), v.end());
  struct Case {
    std::string codec;
    robust::AggregatorSpec aggregator;
    double tolerance;
  };
  robust::AggregatorSpec trimmed{.kind = robust::AggregatorKind::kTrimmedMean, .trim = 1};
  for (const Case& c : {Case{"fp16", {}, 1e-3}, Case{"int8", {}, 2e-2},
                        Case{"fp32", trimmed, 1e-6}}) {
    SCOPED_TRACE(c.codec + " " + robust::ToString(c.aggregator));
    std::vector<std::unique_ptr<CodecState>> states;
    for (uint32_t r = 0; r < world; ++r) states.push_back(CodecState::Make(c.codec).value());
    auto outs = OnEveryRank(world, [&](uint32_t r) {
      Outcome out{Status::Ok(), inputs[r], std::nullopt};
      auto result = DirectAllreduce(*meshes[r], out.data,
                                    {.tag = "codec", .deadline = DeadlineAfter(10s),
                                     .codec = c.codec, .aggregator = c.aggregator,
                                     .average = true, .codec_state = states[r].get()});
      if (!result.ok()) out.status = result.status();
      return out;
    });
    const std::vector<double> ref = testing::RefAggregate(c.aggregator, as_double);
    for (uint32_t r = 0; r < world; ++r) {
      ASSERT_TRUE(outs[r].status.ok()) << outs[r].status.ToString();
      EXPECT_TRUE(SameBits(outs[r].data, outs[0].data)) << "rank " << r << " differs";
    }
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(outs[0].data[i], ref[i], c.tolerance) << i;
    if (c.codec == "int8") {
      // Error feedback: what int8 dropped is owed, not lost.
      EXPECT_FALSE(states[0]->contribution_residual().empty());
    }
  }
}

// Rank 3 of 4 dies while the others are in the call: they fail fast naming it, keep their
// buffers, and a retry among the survivors equals a fresh group of the three, bit for bit.
TEST(DirectAllreduceTest, DeadPeerIsNamedAndTheRetryIsExact) {
  const uint32_t world = 4, dead = 3;
  const size_t n = 1023;
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster);
  const auto inputs = Inputs(world, n, 11);
  const auto start = Clock::now();
  auto outs = OnEveryRank(world, [&](uint32_t r) {
    Outcome out{Status::Ok(), inputs[r], std::nullopt};
    if (r == dead) {
      // Wait until rank 0's contribution arrives (the call is under way), then vanish.
      (void)meshes[r]->peer(0)->Receive(DeadlineAfter(5s));
      meshes[r].reset();
      return out;
    }
    auto result = DirectAllreduce(*meshes[r], out.data, {.tag = "step", .deadline = DeadlineAfter(20s)});
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
    EXPECT_EQ(outs[r].failure->rank, dead) << outs[r].failure->ToString();
    EXPECT_TRUE(Contains(outs[r].status.message(), "rank 3 'peer-3'")) << outs[r].status.ToString();
  }

  auto survivors = FormMeshes(cluster, {0, 1, 2}, {.attempt = 1});
  std::vector<std::vector<float>> kept{outs[0].data, outs[1].data, outs[2].data};
  auto retried = RunAll(survivors, kept, {.tag = "step", .deadline = DeadlineAfter(10s), .average = true});
  LocalCluster alone(3);
  auto fresh_meshes = FormMeshes(alone);
  auto fresh = RunAll(fresh_meshes, {inputs[0], inputs[1], inputs[2]},
                      {.tag = "step", .deadline = DeadlineAfter(10s), .average = true});
  for (uint32_t r = 0; r < 3; ++r) {
    ASSERT_TRUE(retried[r].status.ok()) << retried[r].status.ToString();
    ASSERT_TRUE(fresh[r].status.ok()) << fresh[r].status.ToString();
    EXPECT_TRUE(SameBits(retried[r].data, fresh[r].data)) << "rank " << r;
  }
}

TEST(DirectAllreduceTest, SilentPeerIsADeadlineNamingIt) {
  LocalCluster cluster(3);
  auto meshes = FormMeshes(cluster);
  const auto inputs = Inputs(3, 17, 5);
  auto outs = OnEveryRank(2, [&](uint32_t r) {  // rank 2 never calls
    Outcome out{Status::Ok(), inputs[r], std::nullopt};
    auto result = DirectAllreduce(*meshes[r], out.data, {.tag = "t", .deadline = DeadlineAfter(300ms)});
    if (!result.ok()) out.status = result.status();
    out.failure = meshes[r]->failure();
    return out;
  });
  for (uint32_t r = 0; r < 2; ++r) {
    // Rank 0 may hear rank 1's abort (which names rank 2) before its own deadline.
    ASSERT_FALSE(outs[r].status.ok());
    ASSERT_TRUE(outs[r].failure.has_value()) << outs[r].status.ToString();
    EXPECT_EQ(outs[r].failure->rank, 2u) << outs[r].status.ToString();
    EXPECT_TRUE(SameBits(outs[r].data, inputs[r]));
  }
}

// A NaN on the wire is refused on receipt and its sender is named; the sender itself fails on its
// own input without blaming anyone.
TEST(DirectAllreduceTest, NonFiniteInputIsRefusedAndItsSenderNamed) {
  for (bool codec : {false, true}) {
    SCOPED_TRACE(codec ? "fp16" : "fp32");
    LocalCluster cluster(3);
    auto meshes = FormMeshes(cluster);
    auto inputs = Inputs(3, 65, 9);
    inputs[1][40] = std::numeric_limits<float>::quiet_NaN();
    if (codec) {
      // The fp16 codec refuses to encode a NaN, so an honest rank 1 cannot send one: forge the
      // wire instead, a payload that decodes to +Inf (fp16 0x7c00) for element 40.
      inputs[1][40] = 0;
    }
    auto outs = OnEveryRank(3, [&](uint32_t r) {
      Outcome out{Status::Ok(), inputs[r], std::nullopt};
      if (codec && r == 1) {
        // Rank 1 speaks the protocol by hand: header, then an fp16 payload with one +Inf.
        auto state = CodecState::Make("fp16").value();
        (void)state->Bind(3, 1, out.data.size());
        auto enc = state->EncodeWhole(out.data).value();
        const size_t at = enc.payload.size() - 2 * (out.data.size() - 40);
        enc.payload[at] = 0x00;
        enc.payload[at + 1] = static_cast<char>(0x7c);
        v1::Envelope env = net::MakeEnvelope("job");
        v1::TensorHeader* h = env.mutable_tensor();
        h->set_tag(DirectWireTag("nan", "fp16", {}, true));
        h->set_dtype(v1::DTYPE_F32);
        h->set_numel(out.data.size());
        h->set_offset(1);
        h->set_nbytes(enc.payload.size());
        for (uint32_t p : {0u, 2u}) {
          (void)meshes[1]->peer(p)->QueueSend(env, std::as_bytes(std::span(enc.payload)));
          (void)meshes[1]->peer(p)->Flush(DeadlineAfter(5s));
        }
        out.status = Aborted("forged");
        return out;
      }
      auto result = DirectAllreduce(*meshes[r], out.data,
                                    {.tag = "nan", .deadline = DeadlineAfter(10s),
                                     .codec = codec ? "fp16" : "fp32", .average = true});
      if (!result.ok()) out.status = result.status();
      out.failure = meshes[r]->failure();
      return out;
    });
    for (uint32_t r : {0u, 2u}) {
      ASSERT_FALSE(outs[r].status.ok()) << "rank " << r;
      ASSERT_TRUE(outs[r].failure.has_value()) << outs[r].status.ToString();
      EXPECT_EQ(outs[r].failure->rank, 1u) << outs[r].status.ToString();
      EXPECT_TRUE(SameBits(outs[r].data, inputs[r]));
    }
    if (!codec) {
      EXPECT_EQ(outs[1].status.code(), StatusCode::kInvalidArgument) << outs[1].status.ToString();
      EXPECT_TRUE(Contains(outs[1].status.message(), "own input")) << outs[1].status.ToString();
      EXPECT_FALSE(outs[1].failure.has_value());
    }
  }
}

// Finite inputs whose sum overflows: InvalidArgument on every rank, nobody blamed, `data` kept
// (the sums are staged when the inputs' magnitudes allow an overflow).
TEST(DirectAllreduceTest, OverflowingSumIsAnErrorAndKeepsData) {
  LocalCluster cluster(3);
  auto meshes = FormMeshes(cluster);
  auto inputs = Inputs(3, 2000, 14);
  for (auto& v : inputs) v[1500] = 2e38f;
  auto outs = RunAll(meshes, inputs, {.tag = "o", .deadline = DeadlineAfter(10s)});
  for (uint32_t r = 0; r < 3; ++r) {
    ASSERT_FALSE(outs[r].status.ok());
    EXPECT_EQ(outs[r].status.code(), StatusCode::kInvalidArgument) << outs[r].status.ToString();
    EXPECT_TRUE(Contains(outs[r].status.message(), "element 1500")) << outs[r].status.ToString();
    EXPECT_TRUE(SameBits(outs[r].data, inputs[r])) << "rank " << r;
    EXPECT_FALSE(outs[r].failure.has_value());
  }
}

// A lossy codec's residual is rolled back when the call fails, so the retry starts from the
// same state.
TEST(DirectAllreduceTest, CodecStateIsRolledBackOnFailure) {
  LocalCluster cluster(2);
  auto meshes = FormMeshes(cluster);
  const auto inputs = Inputs(2, 300, 12);
  std::vector<std::unique_ptr<CodecState>> states;
  for (int r = 0; r < 2; ++r) states.push_back(CodecState::Make("int8").value());
  auto warm = OnEveryRank(2, [&](uint32_t r) {
    std::vector<float> d = inputs[r];
    return DirectAllreduce(*meshes[r], d, {.tag = "w", .deadline = DeadlineAfter(10s), .codec = "int8",
                                           .codec_state = states[r].get()})
        .status();
  });
  for (const auto& st : warm) ASSERT_TRUE(st.ok()) << st.ToString();
  const std::vector<float> residual(states[0]->contribution_residual().begin(),
                                    states[0]->contribution_residual().end());
  ASSERT_FALSE(residual.empty());
  std::vector<float> d = inputs[0];
  auto failed = DirectAllreduce(*meshes[0], d, {.tag = "f", .deadline = DeadlineAfter(200ms),
                                                .codec = "int8", .codec_state = states[0].get()});
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kDeadlineExceeded) << failed.status().ToString();
  const std::vector<float> after(states[0]->contribution_residual().begin(),
                                 states[0]->contribution_residual().end());
  EXPECT_TRUE(SameBits(after, residual));
}

TEST(DirectAllreduceTest, ArgumentErrorsBreakNothing) {
  LocalCluster cluster(2);
  auto meshes = FormMeshes(cluster);
  std::vector<float> d(4, 1.0f);
  auto bad = DirectAllreduce(*meshes[0], d, {.tag = "a", .codec = "nonsense"});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  robust::AggregatorSpec too_much{.kind = robust::AggregatorKind::kTrimmedMean, .trim = 5};
  auto unfit = DirectAllreduce(*meshes[0], d, {.tag = "a", .aggregator = too_much});
  EXPECT_FALSE(unfit.ok());
  EXPECT_FALSE(meshes[0]->broken());
  auto outs = RunAll(meshes, {std::vector<float>(4, 1.0f), std::vector<float>(4, 2.0f)},
                     {.tag = "ok", .deadline = DeadlineAfter(10s)});
  for (const auto& o : outs) {
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    EXPECT_EQ(o.data, std::vector<float>(4, 3.0f));
  }
}

}  // namespace
}  // namespace tributary::collectives
