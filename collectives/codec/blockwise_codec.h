// int8 / int4 blockwise absmax quantisation with error feedback.
//
// Each block of `block` consecutive elements gets one fp32 scale s = absmax/qmax (qmax 127 for
// int8, 7 for int4) and codes q = round(x/s) ∈ [−qmax, qmax]; decode is q·s. Payload:
//   header ‖ u32 block ‖ f32 scale × ceil(n/block) ‖ codes
// int8 codes are one signed byte each (−128 is refused). int4 codes are stored as q+8 ∈ [1, 15],
// two per byte, element 2j in the low nibble; the pad nibble of an odd n must be 0. Decode
// refuses scales that are negative, not finite, or so large that qmax·s overflows float.
#pragma once

#include <cstdint>

#include "collectives/codec/error_feedback.h"

namespace tributary::collectives::codec {

inline constexpr uint32_t kDefaultQuantBlock = 64;
inline constexpr uint32_t kMaxQuantBlock = 1u << 16;

class BlockwiseCodec final : public ErrorFeedbackCodec {
 public:
  // bits is 8 or 4; block in [1, kMaxQuantBlock] (MakeCodec checks both).
  BlockwiseCodec(int bits, uint32_t block, bool error_feedback)
      : ErrorFeedbackCodec(error_feedback), bits_(bits), block_(block) {}

  CodecId id() const override { return bits_ == 8 ? CodecId::kInt8 : CodecId::kInt4; }
  std::string name() const override;
  Result<std::vector<float>> Decode(std::string_view payload, size_t expected_numel) const override;
  Result<size_t> MaxPayloadBytes(size_t numel) const override;

 protected:
  Result<std::string> EncodeAndSubtract(std::span<float> target) override;

 private:
  int qmax() const { return bits_ == 8 ? 127 : 7; }
  uint64_t CodeBytes(uint64_t numel) const { return bits_ == 8 ? numel : (numel + 1) / 2; }
  Result<std::vector<float>> DecodeValues(std::string_view payload, size_t expected_numel) const;

  int bits_;
  uint32_t block_;
};

}  // namespace tributary::collectives::codec
