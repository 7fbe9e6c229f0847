// fp32: the identity codec, so callers have one code path whether they compress or not.
// Payload: header ‖ numel raw little-endian floats. Lossless, so it has no residual.
#pragma once

#include "collectives/codec/codec.h"

namespace tributary::collectives::codec {

class Fp32Codec final : public Codec {
 public:
  CodecId id() const override { return CodecId::kFp32; }
  std::string name() const override { return "fp32"; }
  bool lossy() const override { return false; }
  Result<std::string> Encode(std::span<const float> values) override;
  Result<std::vector<float>> Decode(std::string_view payload, size_t expected_numel) const override;
  Result<size_t> MaxPayloadBytes(size_t numel) const override;
  void Reset() override {}
  std::span<const float> residual() const override { return {}; }

 private:
  Result<std::vector<float>> DecodeValues(std::string_view payload, size_t expected_numel) const;
};

}  // namespace tributary::collectives::codec
