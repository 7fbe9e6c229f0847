// fp16 (IEEE binary16) and bfloat16 conversions, bit-exact and portable (no F16C needed):
// round to nearest even, and saturate at the largest finite value instead of producing Inf, so a
// huge input costs precision (which error feedback carries forward) rather than a refused payload.
// Inputs must be finite.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace tributary::collectives::codec {

inline constexpr uint16_t kHalfMaxFinite = 0x7bff;  // 65504
inline constexpr uint16_t kBf16MaxFinite = 0x7f7f;  // ≈ 3.39e38

inline uint16_t FloatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | kHalfMaxFinite);  // ≥ 65520 → Inf
  if (abs < 0x38800000u) {  // below 2^-14: a subnormal half; scaling by 2^24 is exact
    const float scaled = std::bit_cast<float>(abs) * 16777216.0f;
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  const uint32_t rebased = abs - (112u << 23);  // exponent bias 127 → 15
  return static_cast<uint16_t>(sign | ((rebased + 0xfffu + ((rebased >> 13) & 1u)) >> 13));
}

inline bool HalfIsFinite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

inline float HalfToFloat(uint16_t h) {  // h must be finite
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // 2^-24
    return std::bit_cast<float>(std::bit_cast<uint32_t>(magnitude) | sign);
  }
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t FloatToBf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t h = static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
  if ((h & 0x7f80u) == 0x7f80u)
    return static_cast<uint16_t>(((x >> 16) & 0x8000u) | kBf16MaxFinite);
  return h;
}

inline bool Bf16IsFinite(uint16_t h) { return (h & 0x7f80u) != 0x7f80u; }

inline float Bf16ToFloat(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

}  // namespace tributary::collectives::codec
