#include "collectives/codec/fp32_codec.h"

#include "collectives/codec/error_feedback.h"
#include "collectives/codec/wire_format.h"

namespace tributary::collectives::codec {

Result<size_t> Fp32Codec::MaxPayloadBytes(size_t numel) const {
  if (numel > kMaxNumel) return InvalidArgument("numel exceeds the maximum");
  return kHeaderBytes + 4 * numel;
}

Result<std::string> Fp32Codec::Encode(std::span<const float> values) {
  TRIB_ASSIGN_OR_RETURN(size_t bytes, MaxPayloadBytes(values.size()));
  TRIB_RETURN_IF_ERROR(CheckFiniteInput(values));
  std::string out;
  out.reserve(bytes);
  AppendHeader(out, id(), values.size());
  AppendFloats(out, values);
  return out;
}

Result<std::vector<float>> Fp32Codec::Decode(std::string_view payload,
                                             size_t expected_numel) const {
  return InCodecContext(DecodeValues(payload, expected_numel), name());
}

Result<std::vector<float>> Fp32Codec::DecodeValues(std::string_view payload,
                                                   size_t expected_numel) const {
  TRIB_ASSIGN_OR_RETURN(Reader r, OpenPayload(payload, id(), expected_numel));
  TRIB_RETURN_IF_ERROR(ExpectRemaining(r, 4 * uint64_t{expected_numel}, "fp32 values"));
  TRIB_ASSIGN_OR_RETURN(std::string_view data, r.Bytes(4 * expected_numel, "values"));
  std::vector<float> out(expected_numel);
  TRIB_RETURN_IF_ERROR(ReadFiniteFloats(data, out, "value"));
  return out;
}

}  // namespace tributary::collectives::codec
