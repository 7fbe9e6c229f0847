#include "collectives/codec/blockwise_codec.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "collectives/codec/wire_format.h"

namespace tributary::collectives::codec {
namespace {

// Round-to-nearest-even to an integer for |y| < 2^22 with plain float adds: exact, branch-free,
// vectorisable, and the same on every IEEE machine (unlike a libm call under other flags).
inline float RoundToInt(float y) {
  constexpr float kMagic = 12582912.0f;  // 1.5 · 2^23
  return (y + kMagic) - kMagic;
}

// The scale must keep qmax·scale finite, so every decoded value is finite too.
bool ScaleIsValid(float scale, int qmax) {
  return std::isfinite(scale) && scale >= 0.0f &&
         static_cast<double>(scale) * qmax <= static_cast<double>(FLT_MAX);
}

float ScaleFor(std::span<const float> block, int qmax) {
  float absmax = 0.0f;
  for (float x : block) absmax = std::max(absmax, std::fabs(x));
  float scale = absmax / static_cast<float>(qmax);
  while (!ScaleIsValid(scale, qmax)) scale = std::nextafter(scale, 0.0f);  // only near FLT_MAX
  return scale;
}

// Quantises one block into codes in [−qmax, qmax] and leaves target − q·scale behind.
void QuantiseBlock(std::span<float> block, float scale, int qmax, int8_t* codes) {
  if (scale == 0.0f) {  // all zero, or so tiny that absmax/qmax underflowed: all owed to later
    std::fill(codes, codes + block.size(), int8_t{0});
    return;
  }
  const float limit = static_cast<float>(qmax);
  for (size_t i = 0; i < block.size(); ++i) {
    // A division, not a multiply by 1/scale: 1/scale overflows for subnormal scales.
    const float q = RoundToInt(std::clamp(block[i] / scale, -limit, limit));
    codes[i] = static_cast<int8_t>(q);
    block[i] -= q * scale;
  }
}

void PackInt4(const int8_t* codes, size_t n, char* out) {
  for (size_t j = 0; 2 * j < n; ++j) {
    const uint8_t lo = static_cast<uint8_t>(codes[2 * j] + 8);
    const uint8_t hi = 2 * j + 1 < n ? static_cast<uint8_t>(codes[2 * j + 1] + 8) : 0;
    out[j] = static_cast<char>(lo | (hi << 4));
  }
}

// Unpacks codes, refusing values the encoder never produces.
Status UnpackCodes(int bits, std::string_view data, size_t n, int8_t* codes) {
  if (bits == 8) {
    CopyBytes(codes, data.data(), n);
    for (size_t i = 0; i < n; ++i) {
      if (codes[i] == -128) return Corruption("int8 code [" + std::to_string(i) + "] is -128");
    }
    return Status::Ok();
  }
  for (size_t j = 0; 2 * j < n; ++j) {
    const uint8_t byte = static_cast<uint8_t>(data[j]);
    const uint8_t lo = byte & 0x0f, hi = byte >> 4;
    if (lo == 0) return Corruption("int4 nibble [" + std::to_string(2 * j) + "] is 0, not a code");
    codes[2 * j] = static_cast<int8_t>(lo - 8);
    if (2 * j + 1 < n) {
      if (hi == 0) {
        return Corruption("int4 nibble [" + std::to_string(2 * j + 1) + "] is 0, not a code");
      }
      codes[2 * j + 1] = static_cast<int8_t>(hi - 8);
    } else if (hi != 0) {
      return Corruption("int4 padding nibble is not zero");
    }
  }
  return Status::Ok();
}

}  // namespace

std::string BlockwiseCodec::name() const {
  return (bits_ == 8 ? "int8:" : "int4:") + std::to_string(block_);
}

Result<size_t> BlockwiseCodec::MaxPayloadBytes(size_t numel) const {
  if (numel > kMaxNumel) return InvalidArgument("numel exceeds the maximum");
  const uint64_t blocks = (numel + block_ - 1) / block_;
  return kHeaderBytes + 4 + 4 * blocks + CodeBytes(numel);
}

Result<std::string> BlockwiseCodec::EncodeAndSubtract(std::span<float> target) {
  const size_t n = target.size();
  const size_t blocks = (n + block_ - 1) / block_;
  TRIB_ASSIGN_OR_RETURN(size_t bytes, MaxPayloadBytes(n));
  std::string out;
  out.reserve(bytes);
  AppendHeader(out, id(), n);
  AppendU32(out, block_);
  const size_t scales_at = out.size();
  out.resize(bytes);
  std::vector<int8_t> codes(n);
  for (size_t b = 0; b < blocks; ++b) {
    const size_t begin = b * block_, len = std::min<size_t>(block_, n - begin);
    std::span<float> block = target.subspan(begin, len);
    const float scale = ScaleFor(block, qmax());
    std::memcpy(out.data() + scales_at + 4 * b, &scale, 4);
    QuantiseBlock(block, scale, qmax(), codes.data() + begin);
  }
  char* code_bytes = out.data() + scales_at + 4 * blocks;
  if (bits_ == 8) {
    CopyBytes(code_bytes, codes.data(), n);
  } else {
    PackInt4(codes.data(), n, code_bytes);
  }
  return out;
}

Result<std::vector<float>> BlockwiseCodec::Decode(std::string_view payload,
                                                  size_t expected_numel) const {
  return InCodecContext(DecodeValues(payload, expected_numel), name());
}

Result<std::vector<float>> BlockwiseCodec::DecodeValues(std::string_view payload, size_t n) const {
  TRIB_ASSIGN_OR_RETURN(Reader r, OpenPayload(payload, id(), n));
  TRIB_ASSIGN_OR_RETURN(uint32_t block, r.U32("block size"));
  if (block != block_) {
    return Corruption("block size " + std::to_string(block) + " does not match " +
                      std::to_string(block_));
  }
  const uint64_t blocks = (n + block_ - 1) / block_;
  TRIB_RETURN_IF_ERROR(ExpectRemaining(r, 4 * blocks + CodeBytes(n), "scales and codes"));
  std::vector<float> scales(blocks);
  TRIB_ASSIGN_OR_RETURN(std::string_view scale_bytes, r.Bytes(4 * blocks, "scales"));
  CopyBytes(scales.data(), scale_bytes.data(), scale_bytes.size());
  for (size_t b = 0; b < blocks; ++b) {
    if (!ScaleIsValid(scales[b], qmax())) {
      return Corruption("scale[" + std::to_string(b) + "] = " + FormatFloat(scales[b]) +
                        " is negative, not finite or too large");
    }
  }
  TRIB_ASSIGN_OR_RETURN(std::string_view code_bytes, r.Bytes(CodeBytes(n), "codes"));
  std::vector<int8_t> codes(n);
  TRIB_RETURN_IF_ERROR(UnpackCodes(bits_, code_bytes, n, codes.data()));
  std::vector<float> out(n);
  for (size_t b = 0; b < blocks; ++b) {
    const size_t begin = b * block_, end = std::min<size_t>(begin + block_, n);
    for (size_t i = begin; i < end; ++i) out[i] = static_cast<float>(codes[i]) * scales[b];
  }
  return out;
}

}  // namespace tributary::collectives::codec
