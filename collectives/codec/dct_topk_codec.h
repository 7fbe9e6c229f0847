// DCT + top-k (DeMo / DisTrO style) with error feedback.
//
// The flat tensor is cut into chunks of CHUNK elements (the last one may be shorter, length L);
// each chunk goes through an orthonormal DCT-II of its own length, and the k = round(fraction ·
// CHUNK) (at least 1, at most L) largest-magnitude coefficients are sent; ties go to the lower
// frequency. Decode applies the inverse DCT to the sparse coefficients. Since the transform is
// orthonormal, a chunk keeps at least k/L of its energy. Payload:
//   header ‖ u32 chunk ‖ u32 k ‖ u8 frequency × K ‖ f32 coefficient × K
// with chunk c's frequencies strictly increasing and < L_c, K = Σ_c min(k, L_c). Decode refuses
// any other chunk/k, out-of-order, repeated or out-of-range frequencies, non-finite coefficients
// and decoded values that overflow.
#pragma once

#include <cstdint>

#include "collectives/codec/error_feedback.h"

namespace tributary::collectives::codec {

inline constexpr uint32_t kDefaultDctChunk = 64;
inline constexpr uint32_t kMaxDctChunk = 256;  // frequencies travel as one byte

class DctTopKCodec final : public ErrorFeedbackCodec {
 public:
  // fraction in (0, 1]; chunk in [2, kMaxDctChunk] (MakeCodec checks both).
  DctTopKCodec(double fraction, uint32_t chunk, bool error_feedback);

  CodecId id() const override { return CodecId::kDctTopK; }
  std::string name() const override;
  Result<std::vector<float>> Decode(std::string_view payload, size_t expected_numel) const override;
  Result<size_t> MaxPayloadBytes(size_t numel) const override;
  uint32_t coefficients_per_chunk() const { return k_; }

 protected:
  Result<std::string> EncodeAndSubtract(std::span<float> target) override;

 private:
  Result<std::vector<float>> DecodeValues(std::string_view payload, size_t expected_numel) const;
  uint64_t TotalCoefficients(uint64_t n) const;
  // Basis of a chunk of length `len`: the full one or the (cached) tail one.
  const std::vector<float>& BasisFor(size_t len, bool transposed);

  double fraction_;
  uint32_t chunk_;
  uint32_t k_;
  std::vector<float> basis_;    // chunk×chunk, row k = frequency k
  std::vector<float> basis_t_;  // its transpose, for the forward transform
  size_t tail_len_ = 0;
  std::vector<float> tail_basis_, tail_basis_t_;
};

}  // namespace tributary::collectives::codec
