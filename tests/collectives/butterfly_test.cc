#include "collectives/butterfly.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <future>
#include <limits>
#include <map>
#include <sstream>

#include "collectives/allreduce.h"
#include "collectives/codec_state.h"
#include "collectives/codec/wire_format.h"
#include "tests/collectives/mesh_cluster.h"

namespace tributary::collectives {
namespace {

using namespace std::chrono_literals;
using testing::Contains;
using testing::FormMeshes;
using testing::LocalCluster;
using testing::OnEveryRank;
using testing::ShardBegin;
using testing::Uniform;
using testing::Inputs;
using testing::SameBits;

robust::AggregatorSpec Spec(const std::string& text) {
  auto spec = robust::ParseAggregator(text);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  return spec.ok() ? *spec : robust::AggregatorSpec{};
}

struct Outcome {
  Status status;
  CollectiveStats stats;
  std::vector<float> data;
  ShardRecord record;
};

// Runs one butterfly on every rank of `meshes` with inputs[r]; states[r] when given.
std::vector<Outcome> RunButterfly(std::vector<std::unique_ptr<Mesh>>& meshes,
                         const std::vector<std::vector<float>>& inputs, ButterflyOptions options,
                         std::vector<std::unique_ptr<CodecState>>* states = nullptr) {
  return OnEveryRank(static_cast<uint32_t>(meshes.size()), [&](uint32_t r) {
    Outcome out{Status::Ok(), {}, inputs[r], {}};
    ButterflyOptions mine = options;
    mine.record = &out.record;
    if (states) mine.codec_state = (*states)[r].get();
    auto result = ButterflyAllreduce(*meshes[r], out.data, mine);
    if (result.ok()) {
      out.stats = *result;
    } else {
      out.status = result.status();
    }
    return out;
  });
}

// --- every codec × aggregator × world × size against float64 references ----------------------

struct CodecCase {
  std::string spec;
  // Dense codecs: the largest error per element of one encode-decode of values in [-1, 1]; a
  // butterfly applies two (contribution and aggregate), and every aggregator here is 1-Lipschitz
  // per coordinate (CenteredClip nearly so), so the result is within 2·step of the reference
  // over the raw inputs. Sparse / low-rank codecs (0) drop most of a single call's content by
  // design; they are checked against the reference over what the owner decoded, and their error
  // feedback is checked over many calls (ErrorFeedbackTest).
  double per_encode = 0;
};

const std::vector<CodecCase>& Codecs() {
  static const std::vector<CodecCase> codecs{
      {"fp32", 1e-7},        {"fp16", 0x1p-11}, {"bf16", 0x1p-8},          {"int8", 0.5 / 127},
      {"int4", 0.5 / 7},     {"topk:0.1", 0},   {"powersgd:2", 0},        {"dct-topk:0.25", 0}};
  return codecs;
}

std::vector<std::string> Aggregators(uint32_t world) {
  std::vector<std::string> out{"mean", "median", "centered_clip:2"};
  if (world >= 3) out.push_back("trimmed_mean:" + std::to_string((world - 1) / 2));
  return out;
}

// Checks one call's outcomes: bit-identical everywhere, each owner's aggregate reproducible from
// its contributions (spot check) and equal to the float64 reference over what it decoded, and
// for dense codecs the result against the reference over the raw inputs.
void CheckCall(const std::vector<Outcome>& outs, const std::vector<std::vector<float>>& inputs,
               const CodecCase& codec_case, const robust::AggregatorSpec& spec, bool average) {
  const uint32_t world = static_cast<uint32_t>(outs.size());
  const size_t n = inputs[0].size();
  for (uint32_t r = 0; r < world; ++r) {
    ASSERT_TRUE(outs[r].status.ok()) << "rank " << r << ": " << outs[r].status.ToString();
    ASSERT_TRUE(SameBits(outs[r].data, outs[0].data)) << "rank " << r << " differs from rank 0";
  }
  auto decoder = codec::MakeCodec(codec_case.spec);
  ASSERT_TRUE(decoder.ok());
  const double scale = average ? 1.0 : world;
  for (uint32_t s = 0; s < world; ++s) {
    const ShardRecord& rec = outs[s].record;
    const size_t begin = ShardBegin(n, world, s), size = ShardBegin(n, world, s + 1) - begin;
    ASSERT_EQ(rec.shard, s);
    ASSERT_EQ(rec.begin, begin);
    ASSERT_EQ(rec.size, size);
    if (size == 0) continue;
    ASSERT_EQ(rec.contributions.size(), world);
    // Spot check: anyone holding the contributions recomputes the owner's aggregate exactly.
    auto again = ReduceShard(**decoder, rec.contributions, size, spec, average);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    ASSERT_TRUE(SameBits(*again, rec.aggregate)) << "shard " << s << " is not reproducible";
    // Every rank holds exactly the decoded aggregate payload.
    auto shipped = (*decoder)->Decode(rec.aggregate_payload, size);
    ASSERT_TRUE(shipped.ok());
    ASSERT_TRUE(SameBits(*shipped, std::span(outs[0].data).subspan(begin, size)));
    // The aggregate is right for what the owner decoded.
    testing::Vectors decoded;
    for (const std::string& payload : rec.contributions) {
      auto values = (*decoder)->Decode(payload, size);
      ASSERT_TRUE(values.ok());
      decoded.emplace_back(values->begin(), values->end());
    }
    const std::vector<double> want = testing::RefAggregate(spec, decoded);
    for (size_t j = 0; j < size; ++j) {
      ASSERT_NEAR(rec.aggregate[j], want[j] * scale, 2e-5 * scale * (1 + std::abs(want[j])))
          << "shard " << s << " element " << j;
    }
  }
  if (codec_case.per_encode == 0) return;
  const std::vector<double> ref = testing::RefButterfly(spec, inputs, average);
  const double clip = spec.kind == robust::AggregatorKind::kCenteredClip ? 2 : 1;
  const double tol = (2 * codec_case.per_encode * clip + 1e-6) * scale;
  for (size_t i = 0; i < n; ++i) {
    ASSERT_NEAR(outs[0].data[i], ref[i], tol) << "element " << i;
  }
}

class ButterflyMatrixTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ButterflyMatrixTest, EveryCodecAndAggregatorMatchesTheReferenceBitIdentically) {
  const uint32_t world = GetParam();
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster);
  uint64_t index = 0;
  for (const CodecCase& codec_case : Codecs()) {
    for (const std::string& aggregator : Aggregators(world)) {
      for (size_t n : {size_t{1}, size_t{7}, size_t{1000}, size_t{4097}}) {
        const bool average = index % 3 != 0;
        SCOPED_TRACE(codec_case.spec + " / " + aggregator + " / n=" + std::to_string(n) +
                     (average ? " / mean" : " / sum"));
        const auto inputs = Inputs(world, n, DeriveSeed({world, index}));
        const robust::AggregatorSpec spec = Spec(aggregator);
        auto outs = RunButterfly(meshes, inputs,
                        {.tag = "m" + std::to_string(index++),
                         .deadline = DeadlineAfter(20s),
                         .codec = codec_case.spec,
                         .aggregator = spec,
                         .average = average});
        CheckCall(outs, inputs, codec_case, spec, average);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, ButterflyMatrixTest, ::testing::Range(2u, 9u));

TEST(ButterflyTest, WorldOfOneAggregatesLocally) {
  LocalCluster cluster(1);
  auto meshes = FormMeshes(cluster);
  std::vector<float> v{1.5f, -2.0f, 3.25f};
  auto stats = ButterflyAllreduce(*meshes[0], v, {.tag = "solo", .average = true});
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->bytes_sent, 0u);
  EXPECT_EQ(v, (std::vector<float>{1.5f, -2.0f, 3.25f}));
}

TEST(ButterflyTest, MultiKrumIsBitIdenticalAndReproducible) {
  const uint32_t world = 6;
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster);
  auto inputs = Inputs(world, 600, 31);
  for (float& x : inputs[4]) x *= 100.0f;  // an outlier Multi-Krum leaves out
  const robust::AggregatorSpec krum = Spec("multi_krum:1");
  auto outs = RunButterfly(meshes, inputs,
                           {.tag = "krum", .deadline = DeadlineAfter(10s), .aggregator = krum,
                            .average = true});
  auto fp32 = codec::MakeCodec("fp32");
  for (uint32_t r = 0; r < world; ++r) {
    ASSERT_TRUE(outs[r].status.ok()) << outs[r].status.ToString();
    EXPECT_TRUE(SameBits(outs[r].data, outs[0].data));
    const ShardRecord& rec = outs[r].record;
    auto again = ReduceShard(**fp32, rec.contributions, rec.size, krum, true);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(SameBits(*again, rec.aggregate));
  }
  double worst = 0;
  for (size_t i = 0; i < 600; ++i) worst = std::max(worst, double(std::abs(outs[0].data[i])));
  EXPECT_LT(worst, 1.0) << "the ×100 outlier got in";
}

TEST(ButterflyTest, SmallIntegersAverageExactly) {
  LocalCluster cluster(3);
  auto meshes = FormMeshes(cluster);
  auto outs = RunButterfly(meshes, {{1, 2, 3, 4}, {2, 4, 6, 8}, {3, 6, 9, 12}},
                  {.tag = "avg", .deadline = DeadlineAfter(10s), .average = true});
  for (const auto& o : outs) {
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    EXPECT_EQ(o.data, (std::vector<float>{2, 4, 6, 8}));
  }
}

// --- error feedback across calls -------------------------------------------------------------

// With the same input every call, error feedback makes the average of the outputs over T calls
// approach the true mean (what is dropped is sent later); without it the bias stays.
double TimeAveragedError(const std::string& codec, bool error_feedback, int calls) {
  const uint32_t world = 4;
  const size_t n = 1000;
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster);
  const auto inputs = Inputs(world, n, 77);
  std::vector<std::unique_ptr<CodecState>> states;
  for (uint32_t r = 0; r < world; ++r) {
    auto state = CodecState::Make(codec, {.error_feedback = error_feedback});
    EXPECT_TRUE(state.ok());
    states.push_back(std::move(state).value());
  }
  std::vector<double> sum(n, 0.0);
  for (int t = 0; t < calls; ++t) {
    auto outs = RunButterfly(meshes, inputs,
                    {.tag = "ef" + std::to_string(t), .deadline = DeadlineAfter(10s),
                     .codec = codec, .average = true},
                    &states);
    for (const auto& o : outs) EXPECT_TRUE(o.status.ok()) << o.status.ToString();
    for (size_t i = 0; i < n; ++i) sum[i] += outs[0].data[i];
  }
  const std::vector<double> ref = testing::RefButterfly(Spec("mean"), inputs, true);
  double squares = 0;
  for (size_t i = 0; i < n; ++i) squares += std::pow(sum[i] / calls - ref[i], 2);
  return std::sqrt(squares / n);  // RMS; the mean itself has RMS ≈ 0.29
}

TEST(ErrorFeedbackTest, TimeAverageConvergesOnlyWithErrorFeedback) {
  for (const std::string codec : {"topk:0.1", "powersgd:2", "dct-topk:0.25", "int4"}) {
    SCOPED_TRACE(codec);
    const double with = TimeAveragedError(codec, true, 50);
    const double without = TimeAveragedError(codec, false, 50);
    std::printf("%-14s RMS error of the 50-call average: %.4f with error feedback, %.4f without\n",
                codec.c_str(), with, without);
    EXPECT_LT(with, 0.05) << "error feedback did not make up for what was dropped";
    EXPECT_GT(without, 4 * with) << "the test cannot tell error feedback from none";
  }
}

TEST(CodecStateTest, BindsOneStreamAndRollsBackExactly) {
  auto state = CodecState::Make("int8");
  ASSERT_TRUE(state.ok());
  CodecState& s = **state;
  EXPECT_EQ(s.codec(), "int8:64");
  ASSERT_TRUE(s.Bind(2, 0, 100).ok());
  EXPECT_EQ(s.Bind(2, 0, 99).code(), StatusCode::kFailedPrecondition);
  const auto values = Uniform(5, 50);
  ASSERT_TRUE(s.EncodeContribution(0, 0, values).ok());
  const std::vector<float> after_one(s.contribution_residual().begin(),
                                     s.contribution_residual().end());
  EXPECT_NE(after_one, std::vector<float>(100, 0.0f)) << "int8 leaves a residual";
  s.Checkpoint();
  ASSERT_TRUE(s.EncodeContribution(0, 0, values).ok());
  ASSERT_TRUE(s.EncodeAggregate(50, values).ok());
  s.Rollback();
  EXPECT_TRUE(SameBits(s.contribution_residual(), after_one));
  auto copy = s.Clone();
  EXPECT_TRUE(SameBits(copy->contribution_residual(), after_one));
  std::vector<float> bad = values;
  bad[3] = std::numeric_limits<float>::infinity();
  auto refused = s.EncodeContribution(0, 0, bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(Contains(refused.status().message(), "input element 3")) << refused.status().ToString();
  ASSERT_TRUE(s.Bind(3, 1, 100).ok()) << "a new world is allowed; the residual stays";
  EXPECT_TRUE(SameBits(s.contribution_residual(), after_one));
}

// --- attackers --------------------------------------------------------------------------------

enum class Attack { kSignFlip, kTimes1000 };

struct AttackCase {
  Attack attack;
  uint32_t attackers;
  std::string codec;
};

void PrintTo(const AttackCase& c, std::ostream* os) {
  *os << (c.attack == Attack::kSignFlip ? "SignFlip" : "Times1000") << "_" << c.attackers << "_"
      << c.codec;
}

class AttackTest : public ::testing::TestWithParam<AttackCase> {};

// Honest ranks hold a common signal plus small noise; attackers (the last ranks) send a
// sign-flipped or ×1000 copy of their honest vector. Robust aggregators stay close to the honest
// mean; the plain mean does not (so the bound below can fail).
TEST_P(AttackTest, RobustAggregatorsBoundTheDamage) {
  const AttackCase& c = GetParam();
  const uint32_t world = 8;
  const size_t n = 1000;
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster);
  const std::vector<float> signal = Uniform(1, n);
  std::vector<std::vector<float>> inputs;
  std::vector<double> honest_mean(n, 0.0);
  for (uint32_t r = 0; r < world; ++r) {
    std::vector<float> v = Uniform(100 + r, n);
    for (size_t i = 0; i < n; ++i) v[i] = signal[i] + 0.1f * v[i];
    if (r < world - c.attackers) {
      for (size_t i = 0; i < n; ++i) honest_mean[i] += v[i] / double(world - c.attackers);
    } else {
      for (float& x : v) x *= c.attack == Attack::kSignFlip ? -1.0f : 1000.0f;
    }
    inputs.push_back(std::move(v));
  }
  auto errors = [&](const std::string& aggregator) {
    auto outs = RunButterfly(meshes, inputs,
                    {.tag = aggregator, .deadline = DeadlineAfter(20s), .codec = c.codec,
                     .aggregator = Spec(aggregator), .average = true});
    double worst = 0, squares = 0;
    for (const auto& o : outs) EXPECT_TRUE(o.status.ok()) << o.status.ToString();
    for (size_t i = 0; i < n; ++i) {
      const double e = std::abs(outs[0].data[i] - honest_mean[i]);
      worst = std::max(worst, e);
      squares += e * e;
    }
    return std::pair(worst, std::sqrt(squares / n));
  };
  // Honest values spread over ±0.1 around the signal: a coordinate-wise aggregator that keeps
  // the attackers out stays within that spread (plus the codec's step); so does CenteredClip,
  // which moves at most (f/n)·τ per step towards them (τ per 125-element shard). Measured: at
  // most 0.10 for every robust aggregator, 0.26 to 390 for the mean.
  constexpr double kBound = 0.15;
  std::string line;
  auto note = [&](const std::string& aggregator, std::pair<double, double> e) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "  %s max %.3f rms %.3f", aggregator.c_str(), e.first, e.second);
    line += buf;
  };
  for (const std::string aggregator : {"trimmed_mean:3", "median"}) {
    const auto e = errors(aggregator);
    note(aggregator, e);
    EXPECT_LT(e.first, kBound) << aggregator;
  }
  const auto clipped = errors("centered_clip:1");
  note("centered_clip:1", clipped);
  EXPECT_LT(clipped.first, kBound) << "centered_clip";
  const auto mean = errors("mean");
  note("mean", mean);
  EXPECT_GT(mean.first, kBound) << "the plain mean should not be robust";
  if (c.attack == Attack::kTimes1000) EXPECT_GT(mean.first, 10.0) << "the mean should be ruined";
  std::ostringstream name;
  PrintTo(c, &name);
  std::printf("%-16s%s\n", name.str().c_str(), line.c_str());
}

INSTANTIATE_TEST_SUITE_P(
    Attacks, AttackTest,
    ::testing::Values(AttackCase{Attack::kSignFlip, 1, "fp32"}, AttackCase{Attack::kSignFlip, 3, "fp32"},
                      AttackCase{Attack::kTimes1000, 1, "fp32"}, AttackCase{Attack::kTimes1000, 2, "int8"},
                      AttackCase{Attack::kTimes1000, 3, "fp32"}, AttackCase{Attack::kSignFlip, 2, "int8"}),
    [](const auto& info) {
      std::ostringstream os;
      PrintTo(info.param, &os);
      std::string name = os.str();
      std::erase_if(name, [](char ch) { return !std::isalnum(static_cast<unsigned char>(ch)) && ch != '_'; });
      return name;
    });

// --- a peer that speaks the protocol but sends hand-made payloads ------------------------------

Status SendTensor(net::Connection& to, const std::string& tag, uint64_t numel, uint64_t offset,
                  const std::string& payload, v1::DType dtype = v1::DTYPE_F32) {
  v1::Envelope env = net::MakeEnvelope("job");
  v1::TensorHeader* h = env.mutable_tensor();
  h->set_tag(tag);
  h->set_dtype(dtype);
  h->set_numel(numel);
  h->set_offset(offset);
  h->set_nbytes(payload.size());
  TRIB_RETURN_IF_ERROR(to.QueueSend(env, std::as_bytes(std::span(payload.data(), payload.size()))));
  return to.Flush(DeadlineAfter(2s));
}

std::string Encode(const std::string& spec, std::span<const float> values) {
  auto c = codec::MakeCodec(spec);
  EXPECT_TRUE(c.ok());
  auto payload = (*c)->Encode(values);
  EXPECT_TRUE(payload.ok()) << payload.status().ToString();
  return payload.ok() ? *payload : std::string();
}

void PutFloat(std::string& payload, size_t at, float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  std::memcpy(payload.data() + at, &bits, 4);
}

// A top-k payload for 5 elements (k = 3 at fraction 0.5) with the given index gaps.
std::string TopKPayload(std::vector<uint8_t> gaps) {
  std::string out;
  codec::AppendHeader(out, codec::CodecId::kTopK, 5);
  codec::AppendU64(out, 3);
  for (uint8_t g : gaps) codec::AppendVarint(out, g);
  const float values[3] = {1, 2, 3};
  codec::AppendFloats(out, values);
  return out;
}

struct Malformed {
  std::string name;
  std::string codec;               // what the victim runs
  std::string contribution;        // rank 1's payload for shard 0 (offset 0, 5 elements)
  std::string aggregate;           // then, if not empty, its "aggregate" of shard 1
  StatusCode code;
  std::string words;
  std::string tag_codec = "";      // the codec rank 1 names in its tag (default: the same)
  uint64_t offset = 0;
};

void PrintTo(const Malformed& m, std::ostream* os) { *os << m.name; }

std::vector<Malformed> MalformedCases() {
  const std::vector<float> five{1, 2, 3, 4, 5};
  std::string nan_value = Encode("fp32", five);
  PutFloat(nan_value, codec::kHeaderBytes + 8, std::numeric_limits<float>::quiet_NaN());
  std::string bad_magic = Encode("fp32", five);
  bad_magic[0] = 'X';
  std::string nan_scale = Encode("int8", five);
  PutFloat(nan_scale, codec::kHeaderBytes + 4, std::numeric_limits<float>::quiet_NaN());
  std::string truncated = Encode("int8", five);
  truncated.pop_back();
  std::string code_128 = Encode("int8", five);
  code_128.back() = static_cast<char>(0x80);
  return {
      {"NaNValue", "fp32", nan_value, "", StatusCode::kCorruption, "not finite"},
      {"BadMagic", "fp32", bad_magic, "", StatusCode::kCorruption, "contribution to shard 0"},
      {"OtherCodecsPayload", "fp32", Encode("fp16", five), "", StatusCode::kCorruption, "fp32"},
      {"WrongElementCount", "fp16", Encode("fp16", std::vector<float>(4, 1.0f)), "",
       StatusCode::kCorruption, "contribution to shard 0"},
      {"OversizedPayload", "fp32", Encode("fp32", std::vector<float>(6, 1.0f)), "",
       StatusCode::kProtocolError, "the codec's bound"},
      {"NaNScale", "int8", nan_scale, "", StatusCode::kCorruption, "scale"},
      {"TruncatedInt8", "int8", truncated, "", StatusCode::kCorruption, "contribution to shard 0"},
      {"Int8CodeMinus128", "int8", code_128, "", StatusCode::kCorruption, "contribution to shard 0"},
      {"TopKDuplicateIndex", "topk:0.5", TopKPayload({1, 0, 2}), "", StatusCode::kCorruption,
       "contribution to shard 0"},
      {"TopKIndexOutOfRange", "topk:0.5", TopKPayload({1, 2, 7}), "", StatusCode::kCorruption,
       "contribution to shard 0"},
      {"CodecMismatchInTag", "int8", Encode("int8", five), "", StatusCode::kProtocolError,
       "wrong tag", "int4:64"},
      {"WrongShard", "fp32", Encode("fp32", five), "", StatusCode::kProtocolError, "wrong shard",
       "", 5},
      {"BadAggregate", "fp32", Encode("fp32", five), nan_value, StatusCode::kCorruption,
       "aggregate of shard 1"},
  };
}

class MalformedPayloadTest : public ::testing::TestWithParam<Malformed> {};

TEST_P(MalformedPayloadTest, IsRejectedNamingThePeerAndLeavesDataAlone) {
  const Malformed& m = GetParam();
  LocalCluster cluster(2);
  auto meshes = FormMeshes(cluster);
  const std::vector<float> input = Uniform(9, 10);
  std::vector<float> data = input;
  auto victim = std::async(std::launch::async, [&] {
    return ButterflyAllreduce(*meshes[0], data,
                              {.tag = "t", .deadline = DeadlineAfter(10s), .codec = m.codec});
  });
  auto canonical = codec::MakeCodec(m.tag_codec.empty() ? m.codec : m.tag_codec);
  ASSERT_TRUE(canonical.ok());
  const robust::AggregatorSpec mean;
  net::Connection& to_victim = *meshes[1]->peer(0);
  ASSERT_TRUE(SendTensor(to_victim,
                         ButterflyWireTag("t", "reduce-scatter", (*canonical)->name(), mean, false),
                         10, m.offset, m.contribution)
                  .ok());
  if (!m.aggregate.empty()) {
    ASSERT_TRUE(SendTensor(to_victim,
                           ButterflyWireTag("t", "all-gather", (*canonical)->name(), mean, false),
                           10, 5, m.aggregate)
                    .ok());
  }
  auto result = victim.get();  // rank 1 keeps its connection open until rank 0 is done
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), m.code) << result.status().ToString();
  EXPECT_TRUE(Contains(result.status().message(), m.words)) << result.status().ToString();
  EXPECT_TRUE(Contains(result.status().message(), "rank 1 'peer-1' at 127.0.0.1:"))
      << result.status().ToString();
  ASSERT_TRUE(meshes[0]->failure().has_value());
  EXPECT_EQ(meshes[0]->failure()->rank, 1u);
  EXPECT_FALSE(meshes[0]->failure()->reported_by.has_value());
  EXPECT_TRUE(meshes[0]->broken());
  EXPECT_TRUE(SameBits(data, input)) << "a failed call must leave the caller's data alone";
}

INSTANTIATE_TEST_SUITE_P(Cases, MalformedPayloadTest, ::testing::ValuesIn(MalformedCases()),
                         [](const auto& info) { return info.param.name; });

// --- NaN attackers: named, excluded, and the retry is exact -----------------------------------

// Attackers send a NaN-laden fp32 contribution to every owner; every honest rank fails naming an
// attacker, keeps its data, and the retry among the honest ranks is exactly their own butterfly.
void NaNAttack(const std::vector<uint32_t>& attackers) {
  const uint32_t world = 6;
  const size_t n = 999;
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster);
  const auto inputs = Inputs(world, n, 4242);
  auto is_attacker = [&](uint32_t r) {
    return std::find(attackers.begin(), attackers.end(), r) != attackers.end();
  };
  const robust::AggregatorSpec median = Spec("median");
  auto outcomes = OnEveryRank(world, [&](uint32_t r) -> Outcome {
    Outcome out{Status::Ok(), {}, inputs[r], {}};
    if (is_attacker(r)) {
      const std::string tag = ButterflyWireTag("nan", "reduce-scatter", "fp32", median, true);
      for (uint32_t s = 0; s < world; ++s) {
        const size_t begin = ShardBegin(n, world, s), size = ShardBegin(n, world, s + 1) - begin;
        if (s == r) continue;
        std::vector<float> poisoned(size, 1.0f);
        poisoned[size / 2] = std::numeric_limits<float>::quiet_NaN();
        std::string payload;
        codec::AppendHeader(payload, codec::CodecId::kFp32, size);
        codec::AppendFloats(payload, poisoned);
        (void)SendTensor(*meshes[r]->peer(s), tag, n, begin, payload);
      }
      return out;
    }
    auto result = ButterflyAllreduce(*meshes[r], out.data,
                                     {.tag = "nan", .deadline = DeadlineAfter(10s),
                                      .aggregator = median, .average = true});
    out.status = result.ok() ? Status::Ok() : result.status();
    return out;
  });
  std::vector<uint32_t> honest;
  for (uint32_t r = 0; r < world; ++r) {
    if (is_attacker(r)) continue;
    honest.push_back(r);
    const Status& st = outcomes[r].status;
    ASSERT_FALSE(st.ok()) << "honest rank " << r << " accepted a NaN contribution";
    ASSERT_TRUE(meshes[r]->failure().has_value()) << st.ToString();
    const PeerFailure& blamed = *meshes[r]->failure();
    EXPECT_TRUE(is_attacker(blamed.rank)) << "rank " << r << " blamed " << blamed.ToString();
    EXPECT_TRUE(Contains(st.message(), "rank " + std::to_string(blamed.rank) + " 'peer-"))
        << st.ToString();
    EXPECT_TRUE(SameBits(outcomes[r].data, inputs[r]));
    if (!blamed.reported_by) {
      EXPECT_EQ(st.code(), StatusCode::kCorruption) << st.ToString();
      EXPECT_TRUE(Contains(st.message(), "not finite")) << st.ToString();
    }
  }
  meshes.clear();

  // Retry with the honest ranks only (attempt 1) on the very same buffers...
  auto retry_meshes = FormMeshes(cluster, honest, {.attempt = 1});
  std::vector<std::vector<float>> honest_data;
  for (uint32_t r : honest) honest_data.push_back(outcomes[r].data);
  auto retried = RunButterfly(retry_meshes, honest_data,
                     {.tag = "nan", .deadline = DeadlineAfter(10s), .aggregator = median,
                      .average = true});
  // ...equals a butterfly that only the honest ranks ever ran.
  LocalCluster fresh_cluster(static_cast<uint32_t>(honest.size()));
  auto fresh_meshes = FormMeshes(fresh_cluster);
  std::vector<std::vector<float>> honest_inputs;
  for (uint32_t r : honest) honest_inputs.push_back(inputs[r]);
  auto fresh = RunButterfly(fresh_meshes, honest_inputs,
                   {.tag = "nan", .deadline = DeadlineAfter(10s), .aggregator = median,
                    .average = true});
  for (size_t i = 0; i < honest.size(); ++i) {
    ASSERT_TRUE(retried[i].status.ok()) << retried[i].status.ToString();
    ASSERT_TRUE(fresh[i].status.ok()) << fresh[i].status.ToString();
    EXPECT_TRUE(SameBits(retried[i].data, fresh[0].data)) << "survivor " << i;
  }
}

TEST(NaNAttackTest, OneAttackerIsNamedAndTheRetryIsExact) { NaNAttack({2}); }
TEST(NaNAttackTest, ThreeAttackersAreNamedAndTheRetryIsExact) { NaNAttack({0, 3, 5}); }

// --- failure modes -----------------------------------------------------------------------------

TEST(ButterflyTest, MismatchedOptionsFailFastWithWrongTag) {
  LocalCluster cluster(2);
  auto meshes = FormMeshes(cluster);
  const auto start = Clock::now();
  auto outs = OnEveryRank(2, [&](uint32_t r) {
    std::vector<float> v(100, 1.0f);
    auto result = ButterflyAllreduce(*meshes[r], v,
                                     {.tag = "t", .deadline = DeadlineAfter(10s),
                                      .codec = r == 0 ? "int8" : "fp16"});
    return result.ok() ? Status::Ok() : result.status();
  });
  EXPECT_LT(SecondsSince(start), 3.0);
  for (const auto& st : outs) {
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(Contains(st.message(), "wrong tag") || Contains(st.message(), "aborted"))
        << st.ToString();
  }
}

TEST(ButterflyTest, SilentPeerIsADeadlineNamingIt) {
  LocalCluster cluster(3);
  auto meshes = FormMeshes(cluster);
  std::vector<float> v(1000, 1.0f);
  const auto start = Clock::now();
  // Ranks 1 and 2 never call: rank 0 names the first one it is missing.
  auto result = ButterflyAllreduce(*meshes[0], v, {.tag = "t", .deadline = DeadlineAfter(300ms)});
  EXPECT_LT(SecondsSince(start), 2.0);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kDeadlineExceeded) << result.status().ToString();
  EXPECT_TRUE(Contains(result.status().message(), "rank 1 'peer-1'")) << result.status().ToString();
  EXPECT_TRUE(Contains(result.status().message(), "rank 2 'peer-2'")) << result.status().ToString();
  ASSERT_TRUE(meshes[0]->failure().has_value());
  EXPECT_EQ(meshes[0]->failure()->rank, 1u);

  auto again = ButterflyAllreduce(*meshes[0], v, {.tag = "t2", .deadline = DeadlineAfter(1s)});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition) << "the mesh is broken";
}

TEST(ButterflyTest, ArgumentErrorsAreFoundBeforeSendingAndBreakNothing) {
  LocalCluster cluster(2);
  auto meshes = FormMeshes(cluster);
  std::vector<float> v(10, 1.0f);
  auto trimmed = ButterflyAllreduce(*meshes[0], v,
                                    {.tag = "t", .aggregator = Spec("trimmed_mean:1")});
  ASSERT_FALSE(trimmed.ok());
  EXPECT_EQ(trimmed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(trimmed.status().message(), "trimmed_mean")) << trimmed.status().ToString();
  auto bad_codec = ButterflyAllreduce(*meshes[0], v, {.tag = "t", .codec = "int9"});
  ASSERT_FALSE(bad_codec.ok());
  EXPECT_EQ(bad_codec.status().code(), StatusCode::kInvalidArgument);
  auto state = CodecState::Make("fp16");
  ASSERT_TRUE(state.ok());
  auto mismatch = ButterflyAllreduce(*meshes[0], v,
                                     {.tag = "t", .codec = "int8", .codec_state = state->get()});
  ASSERT_FALSE(mismatch.ok());
  EXPECT_TRUE(Contains(mismatch.status().message(), "fp16")) << mismatch.status().ToString();
  EXPECT_FALSE(meshes[0]->broken());
  auto outs = RunButterfly(meshes, {std::vector<float>(10, 1.0f), std::vector<float>(10, 3.0f)},
                  {.tag = "ok", .deadline = DeadlineAfter(10s), .average = true});
  for (const auto& o : outs) {
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    EXPECT_EQ(o.data, std::vector<float>(10, 2.0f));
  }
}

TEST(ButterflyTest, NonFiniteOwnInputFailsWithoutBlamingAPeer) {
  LocalCluster cluster(2);
  auto meshes = FormMeshes(cluster);
  std::vector<std::vector<float>> inputs{std::vector<float>(10, 1.0f), std::vector<float>(10, 1.0f)};
  inputs[0][7] = std::numeric_limits<float>::infinity();
  auto outs = RunButterfly(meshes, inputs, {.tag = "t", .deadline = DeadlineAfter(10s)});
  ASSERT_FALSE(outs[0].status.ok());
  EXPECT_TRUE(Contains(outs[0].status.message(), "input element 7")) << outs[0].status.ToString();
  EXPECT_FALSE(meshes[0]->failure().has_value());
  ASSERT_FALSE(outs[1].status.ok()) << "the peer learns at once";
  ASSERT_TRUE(meshes[1]->failure().has_value());
  EXPECT_EQ(meshes[1]->failure()->rank, 0u);
}

// --- bytes on the wire: 1 M floats, 4 ranks ---------------------------------------------------

TEST(BytesOnTheWireTest, OneMillionFloatsFourRanks) {
  const uint32_t world = 4;
  const size_t n = 1 << 20;
  LocalCluster cluster(world);
  const auto inputs = Inputs(world, n, 2024);
  // Ring (fp32, mean).
  auto rings = cluster.FormAll("job", 1);
  auto ring_bytes = OnEveryRank(world, [&](uint32_t r) {
    std::vector<float> v = inputs[r];
    auto st = RingAllreduce(*rings[r], v, {.tag = "ring", .deadline = DeadlineAfter(30s),
                                           .average = true});
    EXPECT_TRUE(st.ok()) << st.status().ToString();
    return st.ok() ? std::pair(st->bytes_sent, st->seconds) : std::pair(uint64_t{0}, 0.0);
  });
  rings.clear();
  auto meshes = FormMeshes(cluster, {}, {.round = 2});
  auto average_sent = [&](const std::vector<Outcome>& outs) {
    double total = 0;
    for (const auto& o : outs) {
      EXPECT_TRUE(o.status.ok()) << o.status.ToString();
      total += static_cast<double>(o.stats.bytes_sent);
    }
    return total / world;
  };
  double ring = 0, ring_seconds = 0;
  for (auto [bytes, seconds] : ring_bytes) {
    ring += static_cast<double>(bytes) / world;
    ring_seconds = std::max(ring_seconds, seconds);
  }
  std::printf("bytes sent per rank, %zu floats (%.1f MB fp32), %u ranks:\n", n, 4.0 * n / 1e6,
              world);
  std::printf("  %-28s %12.0f  (%.4f of ring fp32)  %.3f s\n", "ring fp32 mean", ring, 1.0,
              ring_seconds);
  std::map<std::string, double> butterfly;
  for (const std::string codec : {"fp32", "int8", "int4", "topk:0.01"}) {
    auto outs = RunButterfly(meshes, inputs,
                    {.tag = "bytes-" + codec, .deadline = DeadlineAfter(60s), .codec = codec,
                     .average = true});
    butterfly[codec] = average_sent(outs);
    double seconds = 0;
    for (const auto& o : outs) seconds = std::max(seconds, o.stats.seconds);
    std::printf("  %-28s %12.0f  (%.4f of ring fp32)  %.3f s\n",
                ("butterfly " + codec + " mean").c_str(), butterfly[codec],
                butterfly[codec] / ring, seconds);
  }
  // Both move 2·(N−1)/N of the tensor per rank in fp32.
  const double ideal = 2.0 * (world - 1) / world * 4.0 * n;
  EXPECT_NEAR(ring / ideal, 1.0, 0.01);
  EXPECT_NEAR(butterfly["fp32"] / ideal, 1.0, 0.01);
  // int8:64 is 1 + 4/64 bytes per element, int4:64 is 0.5 + 4/64; topk:0.01 ≈ 1% × (4 + ~1.5).
  EXPECT_NEAR(butterfly["int8"] / ideal, 1.0625 / 4, 0.01);
  EXPECT_NEAR(butterfly["int4"] / ideal, 0.5625 / 4, 0.01);
  EXPECT_LT(butterfly["topk:0.01"] / ideal, 0.02);
}

// --- contribution binding ----------------------------------------------------------------------

// A binding whose attestation lists every shard's payload digest; the owner checks its entry.
// `lie`: the attestation lists digests of other bytes than those sent (commit one thing, send
// another).
ContributionBinding DigestListBinding(uint32_t world, bool lie, std::vector<uint32_t>* checked_from) {
  ContributionBinding b;
  b.attest = [world, lie](std::span<const Digest> digests, std::span<const float>,
                          std::span<const float>) -> Result<std::vector<std::string>> {
    std::string list;
    for (const Digest& d : digests) {
      const Digest stated = lie ? Sha256Of(ToHex(d)) : d;
      list.append(reinterpret_cast<const char*>(stated.data()), stated.size());
    }
    return std::vector<std::string>(world, list);
  };
  b.check = [checked_from](uint32_t from, std::string_view, const Digest&) -> Status {
    checked_from->push_back(from);
    return Status::Ok();
  };
  return b;
}

TEST(ContributionBindingTest, OwnersCheckEveryContributionAndCatchALyingSender) {
  const uint32_t world = 4;
  const size_t n = 1001;
  const auto inputs = Inputs(world, n, 77);
  for (const std::optional<uint32_t> liar : {std::optional<uint32_t>(), std::optional<uint32_t>(2)}) {
    LocalCluster cluster(world);
    auto meshes = FormMeshes(cluster);
    std::vector<std::vector<uint32_t>> checked(world);
    auto outcomes = OnEveryRank(world, [&](uint32_t r) -> Outcome {
      Outcome out{Status::Ok(), {}, inputs[r], {}};
      ContributionBinding b = DigestListBinding(world, liar == r, &checked[r]);
      b.check = [&, r](uint32_t from, std::string_view attestation, const Digest& payload) -> Status {
        checked[r].push_back(from);
        if (attestation.size() != 32 * world) return ProtocolError("bad attestation");
        if (std::memcmp(attestation.data() + 32 * r, payload.data(), 32) != 0) {
          return Corruption("payload differs from the stated digest");
        }
        return Status::Ok();
      };
      auto result = ButterflyAllreduce(*meshes[r], out.data,
                                       {.tag = "bound", .deadline = DeadlineAfter(10s), .average = true,
                                        .binding = &b});
      out.status = result.ok() ? Status::Ok() : result.status();
      return out;
    });
    if (!liar) {
      LocalCluster plain_cluster(world);
      auto plain_meshes = FormMeshes(plain_cluster);
      auto plain = RunButterfly(plain_meshes, inputs, {.tag = "plain", .deadline = DeadlineAfter(10s), .average = true});
      for (uint32_t r = 0; r < world; ++r) {
        ASSERT_TRUE(outcomes[r].status.ok()) << outcomes[r].status.ToString();
        EXPECT_TRUE(SameBits(outcomes[r].data, plain[r].data)) << "a binding changes no bit of the result";
        EXPECT_EQ(checked[r].size(), world - 1) << "rank " << r << " checks every other contribution";
      }
      continue;
    }
    size_t first_hand = 0;
    for (uint32_t r = 0; r < world; ++r) {
      if (r == *liar) continue;
      ASSERT_FALSE(outcomes[r].status.ok()) << "rank " << r << " accepted the lying contribution";
      ASSERT_TRUE(meshes[r]->failure().has_value());
      EXPECT_TRUE(SameBits(outcomes[r].data, inputs[r]));
      // A rank that checked the lie itself names the liar. One that heard of the failure first
      // names whom it was told (hearsay: the liar can race the owners with a counter-claim; the
      // coordinator weighs claims and bans only on proofs).
      const PeerFailure& f = *meshes[r]->failure();
      if (std::count(checked[r].begin(), checked[r].end(), *liar) > 0) {
        EXPECT_EQ(f.rank, *liar) << "rank " << r << " saw the lie itself: " << f.ToString();
        ++first_hand;
      } else {
        EXPECT_TRUE(f.rank == *liar || f.reported_by.has_value()) << f.ToString();
      }
    }
    EXPECT_GE(first_hand, 1u) << "some owner checked the liar's contribution";
  }
}

// A sender that signs what it sends, but sends a NaN: each owner's `check` passes, decoding
// fails, and the owner hands the signed bytes to `bad_payload` before the call fails blaming the
// sender, as it does without the callback. Honest contributions never reach the callback.
TEST(ContributionBindingTest, ASignedNonFinitePayloadGoesToBadPayloadAndTheSenderIsBlamed) {
  const uint32_t world = 3, cheater = 1;
  const auto inputs = Inputs(world, 90, 5);
  for (const bool cheat : {false, true}) {
    LocalCluster cluster(world);
    auto meshes = FormMeshes(cluster);
    struct Seen {
      uint32_t from;
      std::string attestation, payload;
    };
    std::vector<std::vector<Seen>> seen(world);
    std::vector<std::vector<uint32_t>> checked(world);
    auto outcomes = OnEveryRank(world, [&](uint32_t r) -> Outcome {
      Outcome out{Status::Ok(), {}, inputs[r], {}};
      ContributionBinding b = DigestListBinding(world, false, &checked[r]);
      b.bad_payload = [&, r](uint32_t from, std::string_view attestation, std::string_view payload) {
        seen[r].push_back({from, std::string(attestation), std::string(payload)});
      };
      if (cheat && r == cheater) {
        b.tamper_payload = [](uint32_t, std::string& payload) {
          const float nan = std::numeric_limits<float>::quiet_NaN();
          std::memcpy(payload.data() + 12, &nan, sizeof nan);  // the first value after the header
        };
      }
      auto result = ButterflyAllreduce(*meshes[r], out.data,
                                       {.tag = "nan", .deadline = DeadlineAfter(10s), .average = true, .binding = &b});
      out.status = result.ok() ? Status::Ok() : result.status();
      return out;
    });
    size_t reported = 0;
    for (uint32_t r = 0; r < world; ++r) {
      if (!cheat) {
        ASSERT_TRUE(outcomes[r].status.ok()) << outcomes[r].status.ToString();
        EXPECT_TRUE(seen[r].empty());
        continue;
      }
      if (r == cheater) continue;
      ASSERT_FALSE(outcomes[r].status.ok()) << "rank " << r << " accepted a NaN";
      ASSERT_TRUE(meshes[r]->failure().has_value());
      EXPECT_TRUE(SameBits(outcomes[r].data, inputs[r]));
      // First-hand (it decoded the NaN itself): names the cheater. Told first by someone else
      // (the cheater may race the other owner's abort with a counter-claim): names whom it was
      // told, as reported by the teller.
      const PeerFailure& f = *meshes[r]->failure();
      if (!seen[r].empty()) {
        EXPECT_EQ(f.rank, cheater) << f.ToString();
      } else {
        EXPECT_TRUE(f.rank == cheater || f.reported_by.has_value()) << f.ToString();
      }
      // An owner may learn of the failure from the other owner's abort before its own
      // contribution from the cheater arrives; at most once, and only about the cheater.
      ASSERT_LE(seen[r].size(), 1u) << "rank " << r;
      for (const Seen& s : seen[r]) {
        ++reported;
        EXPECT_EQ(s.from, cheater);
        // The attestation states the digest of exactly the bytes handed over (the sender signed them).
        const Digest digest = Sha256Of(s.payload);
        ASSERT_EQ(s.attestation.size(), 32u * world);
        EXPECT_EQ(std::memcmp(s.attestation.data() + 32 * r, digest.data(), 32), 0);
        float first = 0;
        std::memcpy(&first, s.payload.data() + 12, sizeof first);
        EXPECT_TRUE(std::isnan(first));
      }
    }
    if (cheat) EXPECT_GE(reported, 1u);
  }
}

// With error feedback the attestation also states the residual the payloads were encoded with
// and the one they leave: from those alone (and Δ), a fresh CodecState re-encodes every payload
// bit for bit, which is what a Δ audit does; the next call starts from the residual the last
// one left. A tampered residual is what gets stated and encoded.
TEST(ContributionBindingTest, TheAttestationStatesTheResidualThePayloadsAreEncodedWith) {
  const uint32_t world = 3;
  const size_t n = 517;
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster);
  struct Seen {
    std::vector<Digest> digests;
    std::vector<float> in, out;
  };
  std::vector<std::vector<Seen>> seen(world);
  std::vector<std::unique_ptr<CodecState>> states(world);
  for (uint32_t r = 0; r < world; ++r) states[r] = std::move(CodecState::Make("int8")).value();
  for (int call = 0; call < 3; ++call) {
    const auto inputs = Inputs(world, n, 100 + call);
    auto outcomes = OnEveryRank(world, [&](uint32_t r) -> Outcome {
      Outcome out{Status::Ok(), {}, inputs[r], {}};
      ContributionBinding b;
      b.attest = [&, r](std::span<const Digest> digests, std::span<const float> in,
                        std::span<const float> left) -> Result<std::vector<std::string>> {
        seen[r].push_back({{digests.begin(), digests.end()}, {in.begin(), in.end()}, {left.begin(), left.end()}});
        return std::vector<std::string>(world, "ok");
      };
      b.check = [](uint32_t, std::string_view, const Digest&) { return Status::Ok(); };
      if (call == 2 && r == 1) b.tamper_residual = [](std::span<float> e) { e[5] += 0.5f; };
      auto result = ButterflyAllreduce(*meshes[r], out.data,
                                       {.tag = "ef" + std::to_string(call), .deadline = DeadlineAfter(10s),
                                        .codec = "int8", .average = true, .codec_state = states[r].get(),
                                        .binding = &b});
      out.status = result.ok() ? Status::Ok() : result.status();
      return out;
    });
    for (uint32_t r = 0; r < world; ++r) {
      ASSERT_TRUE(outcomes[r].status.ok()) << outcomes[r].status.ToString();
      const Seen& now = seen[r].back();
      ASSERT_EQ(now.in.size(), n);
      ASSERT_EQ(now.out.size(), n);
      if (call == 0) EXPECT_EQ(now.in, std::vector<float>(n, 0.0f)) << "a first call owes nothing";
      if (call == 1) EXPECT_EQ(now.in, seen[r][0].out) << "a call starts from what the last one left";
      if (call == 2 && r == 1) EXPECT_EQ(now.in[5], seen[r][1].out[5] + 0.5f) << "the tampered residual is stated";
      EXPECT_EQ(now.out, std::vector<float>(states[r]->contribution_residual().begin(),
                                            states[r]->contribution_residual().end()));
      // What an audit does (ReencodeContributions): Δ and the stated residual alone reproduce
      // the payloads and the residual they leave.
      auto audit = ReencodeContributions("int8", world, inputs[r], now.in);
      ASSERT_TRUE(audit.ok()) << audit.status().ToString();
      for (uint32_t s = 0; s < world; ++s) {
        EXPECT_EQ(audit->shard_digests[s], now.digests[s]) << "rank " << r << " shard " << s;
      }
      EXPECT_EQ(audit->residual_left, now.out);
    }
  }
  // A state that keeps no residual (a lossless codec) has none to set.
  auto fp32 = std::move(CodecState::Make("fp32")).value();
  ASSERT_TRUE(fp32->Bind(world, 0, n).ok());
  EXPECT_FALSE(fp32->SetContributionResidual(std::vector<float>(n, 0.0f)).ok());
  auto int8 = std::move(CodecState::Make("int8")).value();
  ASSERT_TRUE(int8->Bind(world, 0, n).ok());
  EXPECT_FALSE(int8->SetContributionResidual(std::vector<float>(n - 1, 0.0f)).ok()) << "another size";
}

TEST(ContributionBindingTest, BoundAndUnboundRanksFailFast) {
  LocalCluster cluster(2);
  auto meshes = FormMeshes(cluster);
  std::vector<uint32_t> unused;
  ContributionBinding b = DigestListBinding(2, false, &unused);
  auto outcomes = OnEveryRank(2, [&](uint32_t r) -> Outcome {
    Outcome out{Status::Ok(), {}, std::vector<float>(10, 1.0f), {}};
    ButterflyOptions o{.tag = "mixed", .deadline = DeadlineAfter(10s)};
    if (r == 0) o.binding = &b;
    auto result = ButterflyAllreduce(*meshes[r], out.data, o);
    out.status = result.ok() ? Status::Ok() : result.status();
    return out;
  });
  EXPECT_FALSE(outcomes[0].status.ok());
  EXPECT_FALSE(outcomes[1].status.ok());
}

// --- aggregate binding (the all-gather) -----------------------------------------------------------

// What a bound owner stated (attest_aggregate) and what a receiver was shown (check_aggregate).
struct AggregateStated {
  std::vector<Digest> contributions;
  std::vector<std::string> payloads;
  Digest aggregate{};
  std::vector<float> in, out;
};

// Statements are the contribution digests followed by the aggregate digest. Each receiver checks
// that the aggregate is the payload it got and that its own entry is what it sent (`sent`: the
// digests its attest saw, by shard). `lie_about_me`: the owner states another digest at rank 0.
struct AggregateBinder {
  uint32_t world, rank;
  std::vector<Digest> sent;
  std::vector<AggregateStated> stated;
  std::vector<std::pair<uint32_t, Digest>> checked;  // (owner, payload digest)
  bool lie_about_me = false;
  ContributionBinding binding;

  AggregateBinder(uint32_t world_, uint32_t rank_) : world(world_), rank(rank_) {
    binding.attest = [this](std::span<const Digest> digests, std::span<const float>,
                            std::span<const float>) -> Result<std::vector<std::string>> {
      sent.assign(digests.begin(), digests.end());
      return std::vector<std::string>(world, "signed");
    };
    binding.check = [](uint32_t, std::string_view, const Digest&) { return Status::Ok(); };
    binding.attest_aggregate = [this](std::span<const Digest> contributions, std::vector<std::string> payloads,
                                      const Digest& aggregate, std::span<const float> in,
                                      std::span<const float> out) -> Result<std::string> {
      stated.push_back({{contributions.begin(), contributions.end()}, {payloads.begin(), payloads.end()}, aggregate,
                        {in.begin(), in.end()}, {out.begin(), out.end()}});
      std::string s;
      for (uint32_t i = 0; i < world; ++i) {
        const Digest d = lie_about_me && i == 0 ? Sha256Of("something else") : contributions[i];
        s.append(reinterpret_cast<const char*>(d.data()), d.size());
      }
      s.append(reinterpret_cast<const char*>(aggregate.data()), aggregate.size());
      return s;
    };
    binding.check_aggregate = [this](uint32_t owner, std::string_view statement, const Digest& payload) -> Status {
      checked.emplace_back(owner, payload);
      if (statement.size() != 32 * (world + 1)) return ProtocolError("malformed statement");
      if (std::memcmp(statement.data() + 32 * world, payload.data(), 32) != 0) {
        return ProtocolError("the aggregate is not the stated one");
      }
      if (std::memcmp(statement.data() + 32 * rank, sent[owner].data(), 32) != 0) {
        return ProtocolError("the statement does not name what I sent");
      }
      return Status::Ok();
    };
  }
};

// Honest owners, int8 with error feedback over three calls: each owner states the digests of
// the contributions it received (those their senders attested), the aggregate every receiver
// checks, and its own residual before and after; the result is bit-identical to an unbound call;
// and ReproduceAggregate, given only the contributions and the stated residual, reproduces the
// aggregate payload and the residual it leaves. An owner that scales its aggregate (and states
// it honestly) passes every receiver's check, but not that recomputation.
TEST(AggregateBindingTest, OwnersStateWhatTheyAggregatedAndAnAuditReproducesIt) {
  const uint32_t world = 3;
  const size_t n = 517;
  LocalCluster cluster(world), plain_cluster(world);
  auto meshes = FormMeshes(cluster);
  auto plain_meshes = FormMeshes(plain_cluster);
  std::vector<std::unique_ptr<CodecState>> states(world), plain_states(world);
  for (uint32_t r = 0; r < world; ++r) {
    states[r] = std::move(CodecState::Make("int8")).value();
    plain_states[r] = std::move(CodecState::Make("int8")).value();
  }
  std::vector<std::unique_ptr<AggregateBinder>> binders;
  for (uint32_t r = 0; r < world; ++r) binders.push_back(std::make_unique<AggregateBinder>(world, r));
  const uint32_t cheater = 2;
  for (int call = 0; call < 4; ++call) {
    const bool cheat = call == 3;
    const auto inputs = Inputs(world, n, 300 + call);
    std::vector<ShardRecord> records(world);
    binders[cheater]->binding.tamper_aggregate = nullptr;
    if (cheat) binders[cheater]->binding.tamper_aggregate = [](std::span<float> v) { for (float& x : v) x *= 1000.0f; };
    auto outcomes = OnEveryRank(world, [&](uint32_t r) -> Outcome {
      Outcome out{Status::Ok(), {}, inputs[r], {}};
      auto result = ButterflyAllreduce(*meshes[r], out.data,
                                       {.tag = "agg" + std::to_string(call), .deadline = DeadlineAfter(10s),
                                        .codec = "int8", .average = true, .codec_state = states[r].get(),
                                        .record = &records[r], .binding = &binders[r]->binding});
      out.status = result.ok() ? Status::Ok() : result.status();
      return out;
    });
    auto plain = OnEveryRank(world, [&](uint32_t r) -> Outcome {
      Outcome out{Status::Ok(), {}, inputs[r], {}};
      auto result = ButterflyAllreduce(*plain_meshes[r], out.data,
                                       {.tag = "plain" + std::to_string(call), .deadline = DeadlineAfter(10s),
                                        .codec = "int8", .average = true, .codec_state = plain_states[r].get()});
      out.status = result.ok() ? Status::Ok() : result.status();
      return out;
    });
    for (uint32_t r = 0; r < world; ++r) {
      ASSERT_TRUE(outcomes[r].status.ok()) << "call " << call << " rank " << r << ": " << outcomes[r].status.ToString();
      ASSERT_TRUE(plain[r].status.ok());
      if (!cheat) EXPECT_TRUE(SameBits(outcomes[r].data, plain[r].data)) << "a binding changes no bit";
      const AggregateStated& now = binders[r]->stated.back();
      ASSERT_EQ(now.contributions.size(), world);
      for (uint32_t from = 0; from < world; ++from) {
        EXPECT_EQ(now.contributions[from], binders[from]->sent[r]) << "owner " << r << " names what rank " << from << " sent";
        EXPECT_EQ(Sha256Of(records[r].contributions[from]), binders[from]->sent[r]);
        EXPECT_EQ(now.payloads[from], records[r].contributions[from]) << "the owner is handed what it aggregated";
      }
      EXPECT_EQ(now.aggregate, Sha256Of(records[r].aggregate_payload));
      // The residuals stated are the owner's over its shard's elements.
      const auto owed = states[r]->aggregate_residual().subspan(records[r].begin, records[r].size);
      EXPECT_EQ(now.out, std::vector<float>(owed.begin(), owed.end()));
      if (call == 0) EXPECT_EQ(now.in, std::vector<float>(records[r].size, 0.0f)) << "a first call owes nothing";
      if (call > 0) EXPECT_EQ(now.in, binders[r]->stated[call - 1].out) << "a call starts from what the last one left";
      // Every other rank checked this owner's statement against the payload it received.
      for (uint32_t other = 0; other < world; ++other) {
        if (other == r) continue;
        const auto& seen = binders[other]->checked;
        EXPECT_EQ(std::count(seen.end() - (world - 1), seen.end(), std::make_pair(r, now.aggregate)), 1)
            << "rank " << other << " checked owner " << r << " in call " << call;
      }
      auto audit = ReproduceAggregate("int8", world, r, n, records[r].contributions, now.in, {}, true);
      ASSERT_TRUE(audit.ok()) << audit.status().ToString();
      if (cheat && r == cheater) {
        EXPECT_NE(audit->payload, now.aggregate) << "a scaled aggregate does not follow from its contributions";
      } else {
        EXPECT_EQ(audit->payload, now.aggregate) << "call " << call << " owner " << r;
        EXPECT_EQ(audit->residual_left, now.out);
      }
    }
  }
  // Refusals: the wrong number of contributions, a shard out of range, a payload that is not int8.
  std::vector<std::string> two(2, "x");
  EXPECT_FALSE(ReproduceAggregate("int8", world, 0, n, two, {}, {}, true).ok());
  std::vector<std::string> three(3, "garbage");
  EXPECT_FALSE(ReproduceAggregate("int8", world, 3, n, three, {}, {}, true).ok());
  EXPECT_FALSE(ReproduceAggregate("int8", world, 0, n, three, {}, {}, true).ok());
}

// An owner whose statement does not name what a receiver sent is refused by that receiver,
// which blames the owner and keeps its data; bound and unbound all-gathers fail fast.
TEST(AggregateBindingTest, AStatementThatMisnamesAContributionIsRefusedBlamingTheOwner) {
  const uint32_t world = 3, liar = 1;
  const auto inputs = Inputs(world, 64, 9);
  LocalCluster cluster(world);
  auto meshes = FormMeshes(cluster);
  std::vector<std::unique_ptr<AggregateBinder>> binders;
  for (uint32_t r = 0; r < world; ++r) binders.push_back(std::make_unique<AggregateBinder>(world, r));
  binders[liar]->lie_about_me = true;  // misnames rank 0's contribution
  auto outcomes = OnEveryRank(world, [&](uint32_t r) -> Outcome {
    Outcome out{Status::Ok(), {}, inputs[r], {}};
    auto result = ButterflyAllreduce(*meshes[r], out.data,
                                     {.tag = "lie", .deadline = DeadlineAfter(10s), .average = true,
                                      .binding = &binders[r]->binding});
    out.status = result.ok() ? Status::Ok() : result.status();
    return out;
  });
  ASSERT_FALSE(outcomes[0].status.ok());
  EXPECT_TRUE(SameBits(outcomes[0].data, inputs[0])) << "the refused call leaves the data alone";
  ASSERT_TRUE(meshes[0]->failure().has_value());
  EXPECT_EQ(meshes[0]->failure()->rank, liar) << meshes[0]->failure()->ToString();

  LocalCluster mixed_cluster(2);
  auto mixed = FormMeshes(mixed_cluster);
  AggregateBinder bound(2, 0);
  ContributionBinding contributions_only;  // binds the contributions, not the all-gather
  contributions_only.attest = [](std::span<const Digest>, std::span<const float>,
                                 std::span<const float>) -> Result<std::vector<std::string>> {
    return std::vector<std::string>(2, "signed");
  };
  contributions_only.check = [](uint32_t, std::string_view, const Digest&) { return Status::Ok(); };
  auto both = OnEveryRank(2, [&](uint32_t r) -> Outcome {
    Outcome out{Status::Ok(), {}, std::vector<float>(10, 1.0f), {}};
    auto result = ButterflyAllreduce(*mixed[r], out.data,
                                     {.tag = "mixed", .deadline = DeadlineAfter(10s),
                                      .binding = r == 0 ? &bound.binding : &contributions_only});
    out.status = result.ok() ? Status::Ok() : result.status();
    return out;
  });
  EXPECT_FALSE(both[0].status.ok());
  EXPECT_FALSE(both[1].status.ok());
}

}  // namespace
}  // namespace tributary::collectives
