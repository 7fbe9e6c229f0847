// Shared helpers for the codec tests: deterministic inputs, norms and the spec lists.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "collectives/codec/codec.h"
#include "core/seed.h"

namespace tributary::collectives::codec::testing {

// One spec per codec, lossless first.
inline const std::vector<std::string>& AllSpecs() {
  static const std::vector<std::string> specs{"fp32", "fp16",      "bf16",       "int8",
                                              "int4", "topk:0.01", "powersgd:4", "dct-topk:0.03"};
  return specs;
}

inline std::vector<std::string> LossySpecs() { return {AllSpecs().begin() + 1, AllSpecs().end()}; }

// Roughly standard normal (sum of 4 uniforms, rescaled), a pure function of (seed, i).
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

inline double Norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

inline double Distance(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    s += d * d;
  }
  return std::sqrt(s);
}

inline std::unique_ptr<Codec> Make(const std::string& spec, CodecOptions options = {}) {
  auto codec = MakeCodec(spec, options);
  EXPECT_TRUE(codec.ok()) << spec << ": " << codec.status().ToString();
  return codec.ok() ? std::move(codec).value() : nullptr;
}

inline bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace tributary::collectives::codec::testing
