#include "collectives/codec/error_feedback.h"

#include <algorithm>
#include <cmath>

#include "collectives/codec/wire_format.h"

namespace tributary::collectives::codec {

Status CheckFiniteInput(std::span<const float> values) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return InvalidArgument("input[" + std::to_string(i) + "] is not finite");
    }
  }
  return Status::Ok();
}

namespace {

// Checked before touching the residual, so a refused input leaves the stream as it was.
Status CheckSumFinite(std::span<const float> residual, std::span<const float> values) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(residual[i] + values[i])) {
      if (!std::isfinite(values[i])) {
        return InvalidArgument("input[" + std::to_string(i) + "] is not finite");
      }
      return InvalidArgument("input[" + std::to_string(i) +
                             "] plus the error-feedback residual overflows float");
    }
  }
  return Status::Ok();
}

}  // namespace

Result<std::string> ErrorFeedbackCodec::Encode(std::span<const float> values) {
  if (values.size() > kMaxNumel) {
    return InvalidArgument("tensor of " + std::to_string(values.size()) +
                           " elements exceeds the maximum " + std::to_string(kMaxNumel));
  }
  if (started_ && error_feedback_ && buffer_.size() != values.size()) {
    return FailedPrecondition("stream carries " + std::to_string(buffer_.size()) +
                              " elements, got " + std::to_string(values.size()) +
                              "; Reset() before changing the tensor");
  }
  if (!started_ || !error_feedback_) buffer_.assign(values.size(), 0.0f);
  TRIB_RETURN_IF_ERROR(CheckSumFinite(buffer_, values));
  started_ = true;
  for (size_t i = 0; i < values.size(); ++i) buffer_[i] += values[i];
  auto payload = EncodeAndSubtract(buffer_);
  if (!payload.ok()) {
    Reset();  // the residual may be half updated; start the stream over
    return payload.status().WithContext(name());
  }
  return payload;
}

void ErrorFeedbackCodec::Reset() {
  started_ = false;
  buffer_.clear();
}

std::span<const float> ErrorFeedbackCodec::residual() const {
  if (!error_feedback_) return {};
  return buffer_;
}

}  // namespace tributary::collectives::codec
