// fp16 / bf16: one 16-bit float per element, with error feedback.
// Payload: header ‖ numel little-endian 16-bit values. Decode refuses Inf/NaN encodings.
// fp16 saturates at ±65504 (larger magnitudes are carried in the residual); bf16 has fp32's range.
#pragma once

#include "collectives/codec/error_feedback.h"

namespace tributary::collectives::codec {

class HalfCodec final : public ErrorFeedbackCodec {
 public:
  enum class Format { kFp16, kBf16 };
  HalfCodec(Format format, bool error_feedback)
      : ErrorFeedbackCodec(error_feedback), format_(format) {}

  CodecId id() const override;
  std::string name() const override;
  Result<std::vector<float>> Decode(std::string_view payload, size_t expected_numel) const override;
  Result<size_t> MaxPayloadBytes(size_t numel) const override;

 protected:
  Result<std::string> EncodeAndSubtract(std::span<float> target) override;

 private:
  Result<std::vector<float>> DecodeValues(std::string_view payload, size_t expected_numel) const;

  Format format_;
};

}  // namespace tributary::collectives::codec
