// Every codec round-trips within its error bound; specs parse; payload sizes match formulas.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <numeric>

#include "collectives/codec/codec.h"
#include "tests/collectives/codec/codec_test_util.h"

namespace tributary::collectives::codec {
namespace {

using testing::AllSpecs;
using testing::Contains;
using testing::Distance;
using testing::Gaussian;
using testing::LossySpecs;
using testing::Make;
using testing::Norm;

const size_t kSizes[] = {1, 7, 1000, 4097};

enum class Input { kGaussian, kZero, kHuge };

std::vector<float> MakeInput(Input kind, size_t n, uint64_t seed) {
  switch (kind) {
    case Input::kGaussian:
      return Gaussian(seed, n);
    case Input::kZero:
      return std::vector<float>(n, 0.0f);
    case Input::kHuge:
      return Gaussian(seed, n, 1e30f);
  }
  return {};
}

// Per-element bound for blockwise absmax codecs: half a quantisation step of the element's block.
void ExpectBlockwiseBound(const std::vector<float>& x, const std::vector<float>& y, int qmax,
                          size_t block, const std::string& what) {
  for (size_t b = 0; b * block < x.size(); ++b) {
    const size_t end = std::min(x.size(), (b + 1) * block);
    float absmax = 0;
    for (size_t i = b * block; i < end; ++i) absmax = std::max(absmax, std::fabs(x[i]));
    const double step = static_cast<double>(absmax) / qmax;
    for (size_t i = b * block; i < end; ++i) {
      ASSERT_LE(std::fabs(static_cast<double>(x[i]) - y[i]), 0.5 * step * (1 + 1e-5) + 1e-37)
          << what << " element " << i;
    }
  }
}

// The entries top-k must keep: largest magnitude first, lower index on ties.
std::vector<float> ExpectedTopK(const std::vector<float>& x, size_t k) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return std::fabs(x[a]) > std::fabs(x[b]); });
  std::vector<float> y(x.size(), 0.0f);
  for (size_t s = 0; s < k; ++s) y[order[s]] = x[order[s]];
  return y;
}

void ExpectWithinBound(const std::string& spec, const std::vector<float>& x,
                       const std::vector<float>& y) {
  const std::string what = spec + " n=" + std::to_string(x.size());
  ASSERT_EQ(y.size(), x.size()) << what;
  for (float v : y) ASSERT_TRUE(std::isfinite(v)) << what;
  if (spec == "fp32") {
    EXPECT_EQ(x, y) << what;
  } else if (spec == "fp16") {
    for (size_t i = 0; i < x.size(); ++i) {
      if (std::fabs(x[i]) > 65504.0f) {
        ASSERT_EQ(y[i], std::copysign(65504.0f, x[i])) << what << " saturates at " << i;
      } else {
        ASSERT_LE(std::fabs(x[i] - y[i]), std::max(std::fabs(x[i]) * 0x1p-11f, 0x1p-25f))
            << what << " element " << i;
      }
    }
  } else if (spec == "bf16") {
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_LE(std::fabs(x[i] - y[i]), std::fabs(x[i]) * 0x1p-8f) << what << " element " << i;
    }
  } else if (spec == "int8") {
    ExpectBlockwiseBound(x, y, 127, 64, what);
  } else if (spec == "int4") {
    ExpectBlockwiseBound(x, y, 7, 64, what);
  } else if (spec == "topk:0.01") {
    const size_t k = static_cast<size_t>(std::ceil(0.01 * static_cast<double>(x.size())));
    EXPECT_EQ(y, ExpectedTopK(x, std::max<size_t>(k, 1))) << what;
  } else if (spec == "powersgd:4") {
    // An orthogonal projection of the matrix: it can only lose energy.
    EXPECT_LE(Distance(x, y), Norm(x) * (1 + 1e-5)) << what;
    EXPECT_LE(Norm(y), Norm(x) * (1 + 1e-5)) << what;
  } else if (spec == "dct-topk:0.03") {
    // Orthonormal transform: each chunk keeps at least k/L ≥ 2/64 of its energy.
    const double err = Distance(x, y), norm = Norm(x);
    EXPECT_LE(err * err, (1.0 - 2.0 / 64.0) * norm * norm * (1 + 1e-4) + 1e-30) << what;
  } else {
    FAIL() << "no bound for " << spec;
  }
}

TEST(CodecRoundTripTest, EveryCodecIsWithinItsBoundOnOddSizesZerosAndHugeValues) {
  for (const std::string& spec : AllSpecs()) {
    for (size_t n : kSizes) {
      for (Input kind : {Input::kGaussian, Input::kZero, Input::kHuge}) {
        auto codec = Make(spec);
        ASSERT_NE(codec, nullptr);
        const std::vector<float> x = MakeInput(kind, n, n * 31 + static_cast<int>(kind));
        auto payload = codec->Encode(x);
        ASSERT_TRUE(payload.ok()) << spec << ": " << payload.status().ToString();
        auto y = codec->Decode(*payload, n);
        ASSERT_TRUE(y.ok()) << spec << ": " << y.status().ToString();
        ExpectWithinBound(spec, x, *y);
        if (kind == Input::kZero) {
          EXPECT_EQ(*y, x) << spec << " keeps zeros exactly";
        }
      }
    }
  }
}

TEST(CodecRoundTripTest, EmptyTensorsRoundTrip) {
  for (const std::string& spec : AllSpecs()) {
    auto codec = Make(spec);
    auto payload = codec->Encode({});
    ASSERT_TRUE(payload.ok()) << spec << ": " << payload.status().ToString();
    EXPECT_EQ(payload->size(), *codec->MaxPayloadBytes(0)) << spec;
    auto y = codec->Decode(*payload, 0);
    ASSERT_TRUE(y.ok()) << spec << ": " << y.status().ToString();
    EXPECT_TRUE(y->empty());
  }
}

TEST(CodecRoundTripTest, Fp32IsExactAndHasNoResidual) {
  auto codec = Make("fp32");
  std::vector<float> x = Gaussian(7, 4097);
  x[3] = -0.0f;
  x[4] = FLT_MAX;
  x[5] = FLT_TRUE_MIN;
  auto payload = codec->Encode(x);
  ASSERT_TRUE(payload.ok());
  auto y = codec->Decode(*payload, x.size());
  ASSERT_TRUE(y.ok());
  EXPECT_EQ(0, std::memcmp(x.data(), y->data(), 4 * x.size()));
  EXPECT_FALSE(codec->lossy());
  EXPECT_TRUE(codec->residual().empty());
}

// The residual left behind is exactly (old residual + input) − what the receiver decodes, so
// nothing is lost or double-counted between rounds.
TEST(CodecRoundTripTest, ResidualIsExactlyWhatTheReceiverDidNotGet) {
  for (const std::string& spec : LossySpecs()) {
    for (size_t n : kSizes) {
      auto codec = Make(spec);
      for (int step = 0; step < 3; ++step) {
        const std::vector<float> x = Gaussian(100 * n + step, n);
        std::vector<float> before(n, 0.0f);
        if (step > 0) before.assign(codec->residual().begin(), codec->residual().end());
        auto payload = codec->Encode(x);
        ASSERT_TRUE(payload.ok());
        auto y = codec->Decode(*payload, n);
        ASSERT_TRUE(y.ok());
        std::span<const float> after = codec->residual();
        ASSERT_EQ(after.size(), n);
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(after[i], (before[i] + x[i]) - (*y)[i]) << spec << " n=" << n << " i=" << i;
        }
      }
    }
  }
}

TEST(CodecRoundTripTest, Fp16SaturatesInsteadOfOverflowingAndCarriesTheRest) {
  auto codec = Make("fp16");
  const std::vector<float> x{1e6f, -1e30f, 65519.0f, 65520.0f, 1e-8f, -3e-5f};
  auto payload = codec->Encode(x);
  ASSERT_TRUE(payload.ok());
  auto y = codec->Decode(*payload, x.size());
  ASSERT_TRUE(y.ok());
  EXPECT_EQ((*y)[0], 65504.0f);
  EXPECT_EQ((*y)[1], -65504.0f);
  EXPECT_EQ((*y)[2], 65504.0f);           // rounds down
  EXPECT_EQ((*y)[3], 65504.0f);           // would round to Inf
  EXPECT_NEAR((*y)[4], 1e-8f, 0x1p-25f);  // subnormal half
  EXPECT_EQ(codec->residual()[0], 1e6f - 65504.0f);
}

// A rank-2 matrix with a decaying tail: warm-started power iteration converges to the best
// rank-2 approximation, whose error is the tail's energy.
TEST(CodecRoundTripTest, PowerSgdWarmStartConvergesToTheBestLowRankApproximation) {
  const size_t rows = 48, cols = 40;
  const double sigma[] = {10, 6, 0.5, 0.25, 0.1};
  auto basis = [](size_t k, size_t i, size_t len) {
    return std::sqrt(2.0 / len) * std::cos(M_PI * (i + 0.5) * (k + 1) / len);
  };
  std::vector<float> m(rows * cols);
  for (size_t i = 0; i < rows; ++i) {
    for (size_t j = 0; j < cols; ++j) {
      double v = 0;
      for (size_t k = 0; k < 5; ++k) v += sigma[k] * basis(k, i, rows) * basis(k, j, cols);
      m[i * cols + j] = static_cast<float>(v);
    }
  }
  const double optimal = std::sqrt(0.5 * 0.5 + 0.25 * 0.25 + 0.1 * 0.1);
  auto codec = Make("powersgd:2:40", {.error_feedback = false});
  std::vector<double> errors;
  for (int call = 0; call < 12; ++call) {
    auto payload = codec->Encode(m);
    ASSERT_TRUE(payload.ok());
    EXPECT_EQ(payload->size(), 12u + 12u + 4u * (rows + cols) * 2u);
    auto y = codec->Decode(*payload, m.size());
    ASSERT_TRUE(y.ok());
    errors.push_back(Distance(m, *y));
  }
  EXPECT_GT(errors.front(), errors.back());
  EXPECT_LT(errors.back(), optimal * 1.01) << "first " << errors.front();
}

TEST(CodecRoundTripTest, SpecsParseToCanonicalNamesAndBadSpecsAreRefused) {
  const std::pair<const char*, const char*> good[] = {{"fp32", "fp32"},
                                                      {"fp16", "fp16"},
                                                      {"bf16", "bf16"},
                                                      {"int8", "int8:64"},
                                                      {"int4:128", "int4:128"},
                                                      {"topk:0.01", "topk:0.01"},
                                                      {"powersgd:4", "powersgd:4"},
                                                      {"powersgd:2:512", "powersgd:2:512"},
                                                      {"dct-topk:0.03", "dct-topk:0.03:64"},
                                                      {"dct-topk:0.25:16", "dct-topk:0.25:16"}};
  for (const auto& [spec, name] : good) {
    auto codec = MakeCodec(spec);
    ASSERT_TRUE(codec.ok()) << spec << ": " << codec.status().ToString();
    EXPECT_EQ((*codec)->name(), name);
    auto again = MakeCodec((*codec)->name());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ((*again)->name(), name);
  }
  const char* bad[] = {"",
                       "zstd",
                       "fp16:2",
                       "int8:0",
                       "int8:x",
                       "int4:1:2",
                       "topk",
                       "topk:0",
                       "topk:1.5",
                       "topk:nan",
                       "topk:0.1x",
                       "powersgd:0",
                       "powersgd:4:0",
                       "powersgd:999",
                       "dct-topk:0.1:300",
                       "dct-topk:0.1:1",
                       "dct-topk:-1"};
  for (const char* spec : bad) {
    auto codec = MakeCodec(spec);
    ASSERT_FALSE(codec.ok()) << spec;
    EXPECT_EQ(codec.status().code(), StatusCode::kInvalidArgument) << spec;
    EXPECT_TRUE(Contains(codec.status().message(), "codec spec")) << codec.status().ToString();
  }
}

size_t VarintLength(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

TEST(CodecRoundTripTest, BytesOnTheWireMatchTheFormulas) {
  const size_t n = 1000;
  const std::vector<float> x = Gaussian(5, n);
  auto bytes = [&](const std::string& spec) {
    auto codec = Make(spec);
    auto payload = codec->Encode(x);
    EXPECT_TRUE(payload.ok());
    auto bound = codec->MaxPayloadBytes(n);
    EXPECT_TRUE(bound.ok());
    EXPECT_LE(payload->size(), *bound) << spec;
    if (spec.rfind("topk", 0) != 0) {
      EXPECT_EQ(payload->size(), *bound) << spec;
    }
    return payload->size();
  };
  const size_t header = 12;
  EXPECT_EQ(bytes("fp32"), header + 4 * n);
  EXPECT_EQ(bytes("fp16"), header + 2 * n);
  EXPECT_EQ(bytes("bf16"), header + 2 * n);
  EXPECT_EQ(bytes("int8"), header + 4 + 4 * 16 + n);  // 16 blocks of 64
  EXPECT_EQ(bytes("int8:128"), header + 4 + 4 * 8 + n);
  EXPECT_EQ(bytes("int4"), header + 4 + 4 * 16 + n / 2);
  EXPECT_EQ(bytes("powersgd:4"), header + 12 + 4 * 4 * (32 + 32));   // 32×32 view of 1000
  EXPECT_EQ(bytes("dct-topk:0.03"), header + 8 + 5 * (15 * 2 + 2));  // 15 chunks + a tail of 40

  // top-k: k = 10 entries of 4 value bytes plus their delta-varint indices.
  const std::vector<float> kept = ExpectedTopK(x, 10);
  size_t index_bytes = 0, previous = 0;
  bool first = true;
  for (size_t i = 0; i < n; ++i) {
    if (kept[i] == 0.0f) continue;
    index_bytes += VarintLength(first ? i : i - previous);
    previous = i;
    first = false;
  }
  EXPECT_EQ(bytes("topk:0.01"), header + 8 + index_bytes + 4 * 10);
}

TEST(CodecRoundTripTest, CompressionRatiosForOneMillionElements) {
  const size_t n = 1 << 20;
  const std::vector<float> x = Gaussian(11, n);
  const std::pair<const char*, double> expected_min[] = {
      {"fp32", 0.99}, {"fp16", 1.99},    {"bf16", 1.99},      {"int8", 3.7},
      {"int4", 7.0},  {"topk:0.01", 60}, {"powersgd:4", 120}, {"dct-topk:0.03", 25}};
  for (const auto& [spec, min_ratio] : expected_min) {
    auto codec = Make(spec);
    auto payload = codec->Encode(x);
    ASSERT_TRUE(payload.ok());
    const double ratio = CompressionRatio(n, payload->size());
    std::printf("  %-14s %10zu bytes  ratio %7.2f\n", spec, payload->size(), ratio);
    EXPECT_GE(ratio, min_ratio) << spec;
  }
}

}  // namespace
}  // namespace tributary::collectives::codec
