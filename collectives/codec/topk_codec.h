// top-k sparsification with error feedback: sends the k = ceil(fraction·n) (at least 1)
// largest-magnitude entries; ties go to the lower index, so the choice is a pure function of the
// input. Payload:
//   header ‖ u64 k ‖ k canonical LEB128 index gaps ‖ f32 value × k
// The first gap is the first index, every later gap is ≥ 1, so indices are strictly increasing:
// Decode refuses a zero gap (duplicate index), an index ≥ n, a k other than the one `fraction`
// gives for n, leftover or missing bytes and non-finite values.
#pragma once

#include "collectives/codec/error_feedback.h"

namespace tributary::collectives::codec {

class TopKCodec final : public ErrorFeedbackCodec {
 public:
  // fraction in (0, 1] (MakeCodec checks it).
  TopKCodec(double fraction, bool error_feedback)
      : ErrorFeedbackCodec(error_feedback), fraction_(fraction) {}

  CodecId id() const override { return CodecId::kTopK; }
  std::string name() const override;
  Result<std::vector<float>> Decode(std::string_view payload, size_t expected_numel) const override;
  Result<size_t> MaxPayloadBytes(size_t numel) const override;
  // The k this codec sends for n elements.
  uint64_t KFor(uint64_t n) const;

 protected:
  Result<std::string> EncodeAndSubtract(std::span<float> target) override;

 private:
  Result<std::vector<float>> DecodeValues(std::string_view payload, size_t expected_numel) const;

  double fraction_;
  std::vector<float> magnitudes_;  // scratch for the selection
};

// Shortest decimal that parses back to exactly `value` ("0.01"), for canonical spec names.
std::string FormatFraction(double value);

}  // namespace tributary::collectives::codec
