// Base class of every lossy codec: owns the error-feedback residual so each codec only has to
// say how it compresses one vector.
//
// Encode(values): residual += values; payload = EncodeAndSubtract(residual), which leaves
// residual − decode(payload) behind, bit for bit what the receiver's Decode reconstructs. With
// error feedback off the same happens on a scratch copy that is thrown away.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "collectives/codec/codec.h"

namespace tributary::collectives::codec {

class ErrorFeedbackCodec : public Codec {
 public:
  bool lossy() const final { return true; }
  Result<std::string> Encode(std::span<const float> values) final;
  void Reset() override;
  std::span<const float> residual() const final;

 protected:
  explicit ErrorFeedbackCodec(bool error_feedback) : error_feedback_(error_feedback) {}

  // Encodes `target` (all finite) into a payload and replaces every element with
  // target[i] − Decode(payload)[i], computed exactly as Decode computes it. Must leave finite
  // values behind.
  virtual Result<std::string> EncodeAndSubtract(std::span<float> target) = 0;

 private:
  bool error_feedback_;
  bool started_ = false;
  std::vector<float> buffer_;  // the residual, or scratch when error feedback is off
};

// Fails with InvalidArgument naming the first index where `values` is not finite.
Status CheckFiniteInput(std::span<const float> values);

}  // namespace tributary::collectives::codec
