// Each aggregator against a float64 reference, determinism across runs and thread counts,
// and the input / spec checks.
#include "collectives/robust/aggregator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "collectives/robust/centered_clip.h"
#include "tests/collectives/robust/robust_test_util.h"

namespace tributary::collectives::robust {
namespace {

using testing::Contains;
using testing::Gaussian;
using testing::Spans;
using testing::Spec;
using testing::Vectors;

// ---- float64 references -------------------------------------------------------------------

std::vector<double> Column(const Vectors& g, size_t j) {
  std::vector<double> c;
  for (const auto& v : g) c.push_back(v[j]);
  std::sort(c.begin(), c.end());
  return c;
}

std::vector<double> RefTrimmedMean(const Vectors& g, size_t b) {
  std::vector<double> out(g[0].size());
  for (size_t j = 0; j < out.size(); ++j) {
    const std::vector<double> c = Column(g, j);
    out[j] = std::accumulate(c.begin() + b, c.end() - b, 0.0) / (c.size() - 2 * b);
  }
  return out;
}

std::vector<double> RefMedian(const Vectors& g) {
  std::vector<double> out(g[0].size());
  const size_t n = g.size();
  for (size_t j = 0; j < out.size(); ++j) {
    const std::vector<double> c = Column(g, j);
    out[j] = n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
  }
  return out;
}

std::vector<double> RefCenteredClip(const Vectors& g, std::vector<double> x, double tau,
                                    int iterations) {
  const size_t n = g.size();
  for (int it = 0; it < iterations; ++it) {
    std::vector<double> step(x.size(), 0.0);
    for (size_t i = 0; i < n; ++i) {
      double norm = 0;
      for (size_t j = 0; j < x.size(); ++j) norm += (g[i][j] - x[j]) * (g[i][j] - x[j]);
      norm = std::sqrt(norm);
      const double w = norm > tau ? tau / norm : 1.0;
      for (size_t j = 0; j < x.size(); ++j) step[j] += w * (g[i][j] - x[j]) / n;
    }
    for (size_t j = 0; j < x.size(); ++j) x[j] += step[j];
  }
  return x;
}

std::vector<double> RefMultiKrum(const Vectors& g, size_t f, size_t m) {
  const size_t n = g.size();
  std::vector<std::pair<double, size_t>> scores;
  for (size_t i = 0; i < n; ++i) {
    std::vector<double> d;
    for (size_t k = 0; k < n; ++k) {
      if (k == i) continue;
      double s = 0;
      for (size_t j = 0; j < g[i].size(); ++j) s += (g[i][j] - g[k][j]) * (g[i][j] - g[k][j]);
      d.push_back(s);
    }
    std::sort(d.begin(), d.end());
    scores.push_back({std::accumulate(d.begin(), d.begin() + (n - f - 2), 0.0), i});
  }
  std::sort(scores.begin(), scores.end());
  std::vector<double> out(g[0].size(), 0.0);
  for (size_t s = 0; s < m; ++s) {
    for (size_t j = 0; j < out.size(); ++j) out[j] += g[scores[s].second][j] / m;
  }
  return out;
}

void ExpectNear(const std::vector<float>& got, const std::vector<double>& want, double tol,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t j = 0; j < got.size(); ++j) {
    ASSERT_NEAR(got[j], want[j], tol * std::max(1.0, std::fabs(want[j]))) << what << " j=" << j;
  }
}

Vectors RandomContributions(size_t n, size_t d, uint64_t seed) {
  Vectors g;
  const std::vector<float> center = Gaussian(seed, d);
  for (size_t i = 0; i < n; ++i) {
    std::vector<float> v = Gaussian(seed * 100 + i + 1, d, 0.5f);
    for (size_t j = 0; j < d; ++j) v[j] += center[j];
    g.push_back(std::move(v));
  }
  return g;
}

TEST(AggregatorTest, EveryAggregatorMatchesAFloat64Reference) {
  for (size_t n = 2; n <= 8; ++n) {
    for (size_t d : {1, 3, 17, 1001}) {
      const Vectors g = RandomContributions(n, d, n * 1000 + d);
      const auto inputs = Spans(g);
      const std::string what = "n=" + std::to_string(n) + " d=" + std::to_string(d);

      auto mean = Aggregate(Spec("mean"), inputs);
      ASSERT_TRUE(mean.ok());
      ExpectNear(mean->values, RefTrimmedMean(g, 0), 1e-6, "mean " + what);

      for (size_t b = 1; 2 * b < n; ++b) {
        auto trimmed = Aggregate(Spec("trimmed_mean:" + std::to_string(b)), inputs);
        ASSERT_TRUE(trimmed.ok());
        ExpectNear(trimmed->values, RefTrimmedMean(g, b), 1e-6, "trimmed " + what);
      }

      auto median = Aggregate(Spec("median"), inputs);
      ASSERT_TRUE(median.ok());
      ExpectNear(median->values, RefMedian(g), 1e-6, "median " + what);

      auto clip = Aggregate(Spec("centered_clip:1.5:8"), inputs);
      ASSERT_TRUE(clip.ok());
      EXPECT_LE(clip->iterations, 8u);  // stops early at an exact fixed point
      const std::vector<float> start32(median->values);
      ExpectNear(clip->values, RefCenteredClip(g, {start32.begin(), start32.end()}, 1.5, 8), 2e-5,
                 "centered_clip " + what);

      for (size_t f = 0; n > 2 * f + 2; ++f) {
        auto krum = Aggregate(Spec("multi_krum:" + std::to_string(f)), inputs);
        ASSERT_TRUE(krum.ok());
        EXPECT_EQ(krum->selected.size(), n - f);
        ExpectNear(krum->values, RefMultiKrum(g, f, n - f), 1e-6, "krum " + what);
      }
    }
  }
}

TEST(AggregatorTest, CenteredClipStartsFromTheGivenGuessAndStopsAtTheTolerance) {
  const Vectors g = RandomContributions(5, 101, 3);
  const std::vector<float> guess(101, 0.25f);
  auto from_guess = Aggregate(Spec("centered_clip:2:3"), Spans(g), {.initial_guess = guess});
  ASSERT_TRUE(from_guess.ok());
  ExpectNear(from_guess->values, RefCenteredClip(g, {guess.begin(), guess.end()}, 2.0, 3), 2e-5,
             "from guess");

  auto converged = Aggregate(Spec("centered_clip:2:1000:1e-5"), Spans(g));
  ASSERT_TRUE(converged.ok());
  EXPECT_LT(converged->iterations, 1000u);
  EXPECT_LE(converged->fixed_point_residual, 1e-5);
  auto residual = CenteredClipResidual(Spans(g), converged->values, 2.0);
  ASSERT_TRUE(residual.ok());
  EXPECT_EQ(*residual, converged->fixed_point_residual);  // bit for bit what a checker sees
}

// Same inputs give the same bits: across calls and for any thread count (the vector spans
// three 16384-element blocks, so partial sums are really combined across blocks).
TEST(AggregatorTest, ResultsAreBitIdenticalAcrossRunsAndThreadCounts) {
  const Vectors g = RandomContributions(7, 40001, 9);
  for (const char* spec :
       {"mean", "trimmed_mean:2", "median", "centered_clip:50:4", "multi_krum:2"}) {
    auto reference = Aggregate(Spec(spec), Spans(g), {.initial_guess = {}, .threads = 1});
    ASSERT_TRUE(reference.ok()) << spec;
    for (int threads : {1, 2, 3, 8}) {
      auto again = Aggregate(Spec(spec), Spans(g), {.initial_guess = {}, .threads = threads});
      ASSERT_TRUE(again.ok());
      ASSERT_EQ(0, std::memcmp(reference->values.data(), again->values.data(),
                               4 * reference->values.size()))
          << spec << " with " << threads << " threads";
      EXPECT_EQ(reference->fixed_point_residual, again->fixed_point_residual) << spec;
      EXPECT_EQ(reference->selected, again->selected) << spec;
    }
  }
}

TEST(AggregatorTest, BadContributionsAreRefusedNamingTheContributor) {
  Vectors g = RandomContributions(4, 10, 1);
  g[2].push_back(1.0f);
  auto ragged = Aggregate(Spec("mean"), Spans(g));
  ASSERT_FALSE(ragged.ok());
  EXPECT_EQ(ragged.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(ragged.status().message(), "contribution 2 has 11 elements"))
      << ragged.status().ToString();

  g = RandomContributions(4, 10, 1);
  g[3][7] = -INFINITY;
  auto inf = Aggregate(Spec("median"), Spans(g));
  ASSERT_FALSE(inf.ok());
  EXPECT_TRUE(Contains(inf.status().message(), "contribution 3: element 7 is not finite"));

  EXPECT_FALSE(Aggregate(Spec("mean"), {}).ok());
}

TEST(AggregatorTest, SpecsNeedEnoughContributions) {
  const Vectors g = RandomContributions(4, 10, 1);
  auto trimmed = Aggregate(Spec("trimmed_mean:2"), Spans(g));
  ASSERT_FALSE(trimmed.ok());
  EXPECT_TRUE(Contains(trimmed.status().message(), "needs more than 4 contributions, got 4"));
  auto krum = Aggregate(Spec("multi_krum:1"), Spans(g));
  ASSERT_FALSE(krum.ok());
  EXPECT_TRUE(Contains(krum.status().message(), "needs more than 4"));
  auto too_many = Aggregate(Spec("multi_krum:0:5"), Spans(g));
  EXPECT_FALSE(too_many.ok());
  const std::vector<float> short_guess(9, 0.0f);
  auto guess = Aggregate(Spec("centered_clip:1"), Spans(g), {.initial_guess = short_guess});
  ASSERT_FALSE(guess.ok());
  EXPECT_TRUE(Contains(guess.status().message(), "initial guess has 9 elements"));
}

TEST(AggregatorTest, SpecsParseAndPrintCanonically) {
  const std::pair<const char*, const char*> good[] = {
      {"mean", "mean"},
      {"trimmed_mean:1", "trimmed_mean:1"},
      {"median", "median"},
      {"coordinate_median", "median"},
      {"centered_clip:0.5", "centered_clip:0.5:5:0"},
      {"centered_clip:2:10:1e-06", "centered_clip:2:10:1e-06"},
      {"multi_krum:2", "multi_krum:2"},
      {"multi_krum:1:3", "multi_krum:1:3"}};
  for (const auto& [text, canonical] : good) {
    auto spec = ParseAggregator(text);
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status().ToString();
    EXPECT_EQ(ToString(*spec), canonical);
    auto again = ParseAggregator(ToString(*spec));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(ToString(*again), canonical);
  }
  for (const char* bad :
       {"", "avg", "mean:1", "trimmed_mean", "trimmed_mean:-1", "trimmed_mean:x", "median:3",
        "centered_clip", "centered_clip:0", "centered_clip:-1", "centered_clip:inf",
        "centered_clip:1:2:3:4", "multi_krum", "multi_krum:1:0"}) {
    auto spec = ParseAggregator(bad);
    ASSERT_FALSE(spec.ok()) << bad;
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
    EXPECT_TRUE(Contains(spec.status().message(), "aggregator spec")) << spec.status().ToString();
  }
}

}  // namespace
}  // namespace tributary::collectives::robust
