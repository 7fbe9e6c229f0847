// Error feedback makes every lossy codec unbiased in the long run: sending the same g for T
// rounds, Σ decoded = T·g − residual_T, so ‖mean − g‖/‖g‖ = ‖residual_T‖/(T·‖g‖) falls like 1/T
// once the residual stops growing. Without error feedback top-k sends the same k entries
// forever and the mean stays biased.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "collectives/codec/codec.h"
#include "tests/collectives/codec/codec_test_util.h"

namespace tributary::collectives::codec {
namespace {

using testing::Gaussian;
using testing::Make;

struct Trace {
  std::map<int, double> relative_error;  // T → ‖mean_T − g‖ / ‖g‖
  double telescoping_error = 0;          // ‖Σ decoded + residual − T·g‖ / (T·‖g‖)
};

Trace SendRepeatedly(const std::string& spec, bool error_feedback, const std::vector<float>& g,
                     int rounds) {
  auto codec = Make(spec, {.error_feedback = error_feedback});
  std::vector<double> sum(g.size(), 0.0);
  double g_norm = 0;
  for (float v : g) g_norm += static_cast<double>(v) * v;
  g_norm = std::sqrt(g_norm);
  Trace trace;
  for (int t = 1; t <= rounds; ++t) {
    auto payload = codec->Encode(g);
    EXPECT_TRUE(payload.ok());
    auto y = codec->Decode(*payload, g.size());
    EXPECT_TRUE(y.ok());
    for (size_t i = 0; i < g.size(); ++i) sum[i] += (*y)[i];
    if (t == 10 || t == 100 || t == 1000 || t == rounds) {
      double err = 0;
      for (size_t i = 0; i < g.size(); ++i) {
        const double d = sum[i] / t - g[i];
        err += d * d;
      }
      trace.relative_error[t] = std::sqrt(err) / g_norm;
    }
  }
  if (error_feedback) {
    double err = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      const double d = sum[i] + codec->residual()[i] - static_cast<double>(rounds) * g[i];
      err += d * d;
    }
    trace.telescoping_error = std::sqrt(err) / (rounds * g_norm);
  }
  return trace;
}

// Specs with enough budget that the residual settles within ~100 rounds at n = 1000.
const char* kSpecs[] = {"fp16", "bf16", "int8", "int4", "topk:0.05", "powersgd:2", "dct-topk:0.1"};

TEST(ErrorFeedbackTest, LongRunAverageConvergesToTheInputLikeOneOverT) {
  const std::vector<float> g = Gaussian(42, 1000);
  for (const char* spec : kSpecs) {
    const Trace trace = SendRepeatedly(spec, true, g, 1000);
    const double e100 = trace.relative_error.at(100), e1000 = trace.relative_error.at(1000);
    std::printf("  %-13s error after 10: %.2e  100: %.2e  1000: %.2e\n", spec,
                trace.relative_error.at(10), e100, e1000);
    // 10× the rounds, ~10× less error (allow 5× for a residual still settling).
    EXPECT_LE(e1000, e100 / 5 + 1e-7) << spec;
    EXPECT_LE(e1000, 0.05) << spec;
    EXPECT_LE(trace.telescoping_error, 1e-5) << spec;
  }
}

TEST(ErrorFeedbackTest, WithoutErrorFeedbackTopKStaysBiased) {
  const std::vector<float> g = Gaussian(42, 1000);
  const Trace with = SendRepeatedly("topk:0.05", true, g, 1000);
  const Trace without = SendRepeatedly("topk:0.05", false, g, 1000);
  std::printf("  topk:0.05 error after 1000 rounds: %.2e with EF, %.2e without\n",
              with.relative_error.at(1000), without.relative_error.at(1000));
  // Without EF the mean is just topk(g): the dropped 95% of coordinates never arrive.
  EXPECT_GT(without.relative_error.at(1000), 0.5);
  EXPECT_NEAR(without.relative_error.at(1000), without.relative_error.at(100), 1e-9);
  EXPECT_GT(without.relative_error.at(1000), 50 * with.relative_error.at(1000));
}

TEST(ErrorFeedbackTest, ResetForgetsTheResidualAndEncodeChecksItsInput) {
  auto codec = Make("int4");
  const std::vector<float> g = Gaussian(1, 100);
  ASSERT_TRUE(codec->Encode(g).ok());
  const std::vector<float> residual(codec->residual().begin(), codec->residual().end());

  // A different size on the same stream is refused, and so is a non-finite input; neither
  // changes the residual.
  auto wrong_size = codec->Encode(Gaussian(2, 99));
  EXPECT_EQ(wrong_size.status().code(), StatusCode::kFailedPrecondition);
  std::vector<float> bad = g;
  bad[17] = std::nanf("");
  auto nan = codec->Encode(bad);
  ASSERT_FALSE(nan.ok());
  EXPECT_EQ(nan.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(testing::Contains(nan.status().message(), "input[17]")) << nan.status().ToString();
  EXPECT_TRUE(std::equal(residual.begin(), residual.end(), codec->residual().begin()));

  codec->Reset();
  EXPECT_TRUE(codec->residual().empty());
  EXPECT_TRUE(codec->Encode(Gaussian(2, 99)).ok());
}

TEST(ErrorFeedbackTest, InputThatOverflowsTogetherWithTheResidualIsRefused) {
  auto codec = Make("fp16");
  const std::vector<float> huge{3e38f};
  ASSERT_TRUE(codec->Encode(huge).ok());  // sends 65504, owes ~3e38
  auto again = codec->Encode(huge);
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(testing::Contains(again.status().message(), "overflows"))
      << again.status().ToString();
  EXPECT_TRUE(std::isfinite(codec->residual()[0]));
}

}  // namespace
}  // namespace tributary::collectives::codec
