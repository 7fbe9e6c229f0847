// PowerSGD (Vogels et al. 2019) rank-r compression with error feedback and warm start.
//
// The flat tensor of n elements is viewed as a rows×cols matrix M, row-major, cols = the spec's
// COLS (clamped to n) or ceil(sqrt(n)), rows = ceil(n/cols), the missing tail of the last row
// zero. Rank r is clamped to min(r, rows, cols). One call is one power-iteration step:
//   P = M·Q_prev;  P ← Gram-Schmidt(P) (orthonormal columns);  Q = Mᵀ·P;  M̂ = P·Qᵀ
// so M̂ = P·Pᵀ·M is M's orthogonal projection onto span(P), and the error never exceeds ‖M‖.
// Q (column-normalised, which leaves the next P unchanged) is kept for the next call's warm
// start. Unlike all-reduce PowerSGD, P and Q are both sent, since every contribution is decoded
// on its own (robust aggregation needs each peer's vector). Payload:
//   header ‖ u32 rows ‖ u32 cols ‖ u32 rank ‖ f32 Pᵀ (rank×rows) ‖ f32 Qᵀ (rank×cols)
// Decode checks the dimensions against n and the spec, that P and Q are finite, and that no
// decoded value overflows.
#pragma once

#include <cstdint>

#include "collectives/codec/error_feedback.h"

namespace tributary::collectives::codec {

inline constexpr uint32_t kMaxPowerSgdRank = 256;

class PowerSgdCodec final : public ErrorFeedbackCodec {
 public:
  struct Shape {
    uint32_t rows = 0, cols = 0, rank = 0;
  };

  // rank in [1, kMaxPowerSgdRank]; cols 0 means ceil(sqrt(n)).
  PowerSgdCodec(uint32_t rank, uint32_t cols, uint64_t seed, bool error_feedback)
      : ErrorFeedbackCodec(error_feedback), rank_(rank), cols_(cols), seed_(seed) {}

  CodecId id() const override { return CodecId::kPowerSgd; }
  std::string name() const override;
  Result<std::vector<float>> Decode(std::string_view payload, size_t expected_numel) const override;
  Result<size_t> MaxPayloadBytes(size_t numel) const override;
  void Reset() override;
  Shape ShapeFor(uint64_t n) const;

 protected:
  Result<std::string> EncodeAndSubtract(std::span<float> target) override;

 private:
  Result<std::vector<float>> DecodeValues(std::string_view payload, size_t expected_numel) const;
  void StartStream(size_t n, const Shape& shape);

  uint32_t rank_;
  uint32_t cols_;
  uint64_t seed_;
  size_t stream_numel_ = 0;
  std::vector<float> approx_;  // scratch: this call's P·Qᵀ
  // Warm start: Qᵀ with unit rows (rank×cols); empty before the first call.
  std::vector<float> q_;
};

}  // namespace tributary::collectives::codec
