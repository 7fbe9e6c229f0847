// Shared helpers for the robust aggregation tests.
#pragma once

#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "collectives/robust/aggregator.h"
#include "core/seed.h"

namespace tributary::collectives::robust::testing {

using Vectors = std::vector<std::vector<float>>;

// Roughly standard normal, a pure function of (seed, i).
inline std::vector<float> Gaussian(uint64_t seed, size_t n, float scale = 1.0f) {
  SeedStream s(seed);
  std::vector<float> v(n);
  for (float& x : v) {
    double u = 0;
    for (int k = 0; k < 4; ++k) u += static_cast<double>(s.Next() >> 11) * 0x1p-53;
    x = static_cast<float>((u - 2.0) * std::sqrt(3.0)) * scale;
  }
  return v;
}

inline std::vector<std::span<const float>> Spans(const Vectors& vs) {
  return {vs.begin(), vs.end()};
}

inline double Distance(std::span<const float> a, std::span<const float> b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    s += d * d;
  }
  return std::sqrt(s);
}

inline AggregatorSpec Spec(const std::string& text) {
  auto spec = ParseAggregator(text);
  return spec.ok() ? *spec : AggregatorSpec{};
}

inline bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace tributary::collectives::robust::testing
