#include "collectives/codec/wire_format.h"

#include <cmath>
#include <cstdio>

namespace tributary::collectives::codec {

const char* CodecIdName(CodecId id) {
  switch (id) {
    case CodecId::kFp32:
      return "fp32";
    case CodecId::kFp16:
      return "fp16";
    case CodecId::kBf16:
      return "bf16";
    case CodecId::kInt8:
      return "int8";
    case CodecId::kInt4:
      return "int4";
    case CodecId::kTopK:
      return "topk";
    case CodecId::kPowerSgd:
      return "powersgd";
    case CodecId::kDctTopK:
      return "dct-topk";
  }
  return "unknown";
}

void AppendHeader(std::string& out, CodecId id, uint64_t numel) {
  out.push_back('T');
  out.push_back('C');
  out.push_back(static_cast<char>(id));
  out.push_back(static_cast<char>(kFormatVersion));
  AppendU64(out, numel);
}

void AppendU32(std::string& out, uint32_t v) {
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
}

void AppendU64(std::string& out, uint64_t v) {
  char b[8];
  std::memcpy(b, &v, 8);
  out.append(b, 8);
}

void AppendVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

size_t VarintBytes(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

Result<uint8_t> Reader::U8(const char* what) {
  TRIB_ASSIGN_OR_RETURN(std::string_view b, Bytes(1, what));
  return static_cast<uint8_t>(b[0]);
}

Result<uint32_t> Reader::U32(const char* what) {
  TRIB_ASSIGN_OR_RETURN(std::string_view b, Bytes(4, what));
  uint32_t v;
  std::memcpy(&v, b.data(), 4);
  return v;
}

Result<uint64_t> Reader::U64(const char* what) {
  TRIB_ASSIGN_OR_RETURN(std::string_view b, Bytes(8, what));
  uint64_t v;
  std::memcpy(&v, b.data(), 8);
  return v;
}

Result<uint64_t> Reader::Varint(const char* what) {
  uint64_t value = 0;
  for (int i = 0; i < 10; ++i) {
    if (pos_ >= bytes_.size()) return Corruption(std::string("truncated varint in ") + what);
    const uint8_t byte = static_cast<uint8_t>(bytes_[pos_++]);
    const uint64_t bits = byte & 0x7f;
    if (i == 9 && bits > 1) return Corruption(std::string("varint overflows 64 bits in ") + what);
    value |= bits << (7 * i);
    if ((byte & 0x80) == 0) {
      if (i > 0 && byte == 0) return Corruption(std::string("over-long varint in ") + what);
      return value;
    }
  }
  return Corruption(std::string("varint longer than 10 bytes in ") + what);
}

Result<std::string_view> Reader::Bytes(size_t n, const char* what) {
  if (n > remaining()) {
    return Corruption("payload truncated: " + std::string(what) + " needs " + std::to_string(n) +
                      " bytes, " + std::to_string(remaining()) + " left");
  }
  std::string_view out = bytes_.substr(pos_, n);
  pos_ += n;
  return out;
}

Result<Reader> OpenPayload(std::string_view payload, CodecId id, uint64_t expected_numel) {
  if (expected_numel > kMaxNumel) {
    return InvalidArgument("expected numel " + std::to_string(expected_numel) +
                           " exceeds the maximum " + std::to_string(kMaxNumel));
  }
  if (payload.size() < kHeaderBytes) {
    return Corruption("payload of " + std::to_string(payload.size()) +
                      " bytes is shorter than the " + std::to_string(kHeaderBytes) +
                      "-byte header");
  }
  Reader r(payload);
  TRIB_ASSIGN_OR_RETURN(std::string_view magic, r.Bytes(2, "magic"));
  if (magic != "TC") return Corruption("bad magic: not a Tributary codec payload");
  TRIB_ASSIGN_OR_RETURN(uint8_t got_id, r.U8("codec id"));
  if (got_id != static_cast<uint8_t>(id)) {
    return Corruption("codec id " + std::to_string(got_id) + " (" +
                      CodecIdName(static_cast<CodecId>(got_id)) + ") does not match this codec " +
                      std::to_string(static_cast<int>(id)) + " (" + CodecIdName(id) + ")");
  }
  TRIB_ASSIGN_OR_RETURN(uint8_t version, r.U8("version"));
  if (version != kFormatVersion) {
    return Corruption("format version " + std::to_string(version) + " is not supported (want " +
                      std::to_string(kFormatVersion) + ")");
  }
  TRIB_ASSIGN_OR_RETURN(uint64_t numel, r.U64("numel"));
  if (numel != expected_numel) {
    return Corruption("payload numel " + std::to_string(numel) + " does not match expected " +
                      std::to_string(expected_numel));
  }
  return r;
}

Result<uint64_t> CheckedMul(uint64_t a, uint64_t b, const char* what) {
  uint64_t out;
  if (__builtin_mul_overflow(a, b, &out)) {
    return InvalidArgument(std::string("size of ") + what + " overflows 64 bits");
  }
  return out;
}

Result<uint64_t> CheckedAdd(uint64_t a, uint64_t b, const char* what) {
  uint64_t out;
  if (__builtin_add_overflow(a, b, &out)) {
    return InvalidArgument(std::string("size of ") + what + " overflows 64 bits");
  }
  return out;
}

Status ExpectRemaining(const Reader& reader, uint64_t want, const char* what) {
  if (reader.remaining() == want) return Status::Ok();
  return Corruption(std::string(reader.remaining() < want ? "payload truncated: "
                                                          : "payload has trailing bytes: ") +
                    what + " needs " + std::to_string(want) + " bytes after the parameters, " +
                    std::to_string(reader.remaining()) + " present");
}

Status ReadFiniteFloats(std::string_view bytes, std::span<float> out, const char* what) {
  if (bytes.size() != out.size_bytes()) {
    return Internal(std::string("ReadFiniteFloats size mismatch for ") + what);
  }
  CopyBytes(out.data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) {
      return Corruption(std::string(what) + "[" + std::to_string(i) + "] is not finite");
    }
  }
  return Status::Ok();
}

std::string FormatFloat(double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", value);
  return buf;
}

Status CheckDecodedFinite(std::span<const float> values) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return Corruption("decoded value [" + std::to_string(i) +
                        "] overflows: the payload's values are too large");
    }
  }
  return Status::Ok();
}

}  // namespace tributary::collectives::codec
