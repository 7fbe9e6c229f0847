#include "collectives/codec/half_codec.h"

#include <cstring>

#include "collectives/codec/half.h"
#include "collectives/codec/wire_format.h"

namespace tributary::collectives::codec {
namespace {

struct Fp16 {
  static uint16_t From(float f) { return FloatToHalf(f); }
  static float To(uint16_t h) { return HalfToFloat(h); }
  static bool Finite(uint16_t h) { return HalfIsFinite(h); }
};

struct Bf16 {
  static uint16_t From(float f) { return FloatToBf16(f); }
  static float To(uint16_t h) { return Bf16ToFloat(h); }
  static bool Finite(uint16_t h) { return Bf16IsFinite(h); }
};

template <typename F>
void EncodeInto(std::span<float> target, char* out) {
  for (size_t i = 0; i < target.size(); ++i) {
    const uint16_t h = F::From(target[i]);
    std::memcpy(out + 2 * i, &h, 2);
    target[i] -= F::To(h);
  }
}

template <typename F>
Status DecodeInto(const char* data, std::span<float> out) {
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, data + 2 * i, 2);
    if (!F::Finite(h)) return Corruption("value [" + std::to_string(i) + "] is Inf or NaN");
    out[i] = F::To(h);
  }
  return Status::Ok();
}

}  // namespace

CodecId HalfCodec::id() const { return format_ == Format::kFp16 ? CodecId::kFp16 : CodecId::kBf16; }

std::string HalfCodec::name() const { return format_ == Format::kFp16 ? "fp16" : "bf16"; }

Result<size_t> HalfCodec::MaxPayloadBytes(size_t numel) const {
  if (numel > kMaxNumel) return InvalidArgument("numel exceeds the maximum");
  return kHeaderBytes + 2 * numel;
}

Result<std::string> HalfCodec::EncodeAndSubtract(std::span<float> target) {
  std::string out;
  AppendHeader(out, id(), target.size());
  out.resize(kHeaderBytes + 2 * target.size());
  char* codes = out.data() + kHeaderBytes;
  if (format_ == Format::kFp16) {
    EncodeInto<Fp16>(target, codes);
  } else {
    EncodeInto<Bf16>(target, codes);
  }
  return out;
}

Result<std::vector<float>> HalfCodec::Decode(std::string_view payload,
                                             size_t expected_numel) const {
  return InCodecContext(DecodeValues(payload, expected_numel), name());
}

Result<std::vector<float>> HalfCodec::DecodeValues(std::string_view payload,
                                                   size_t expected_numel) const {
  TRIB_ASSIGN_OR_RETURN(Reader r, OpenPayload(payload, id(), expected_numel));
  TRIB_RETURN_IF_ERROR(ExpectRemaining(r, 2 * uint64_t{expected_numel}, "16-bit values"));
  TRIB_ASSIGN_OR_RETURN(std::string_view data, r.Bytes(2 * expected_numel, "values"));
  std::vector<float> out(expected_numel);
  if (format_ == Format::kFp16) {
    TRIB_RETURN_IF_ERROR(DecodeInto<Fp16>(data.data(), out));
  } else {
    TRIB_RETURN_IF_ERROR(DecodeInto<Bf16>(data.data(), out));
  }
  return out;
}

}  // namespace tributary::collectives::codec
