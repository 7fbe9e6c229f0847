// Byte-level helpers shared by the codecs: the common payload header, little-endian writers, a
// bounds-checked reader, LEB128 varints and overflow-checked size arithmetic.
//
// Header (12 bytes): 'T' 'C' ‖ u8 codec id ‖ u8 format version ‖ u64 numel. OpenPayload checks it
// against what the receiver expects before any codec looks at the rest. Every Reader method
// fails with Corruption naming the field instead of reading past the end.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "collectives/codec/codec.h"
#include "core/status.h"

namespace tributary::collectives::codec {

static_assert(std::endian::native == std::endian::little,
              "the wire format is little-endian and copied with memcpy");

inline constexpr size_t kHeaderBytes = 12;
inline constexpr uint8_t kFormatVersion = 1;

const char* CodecIdName(CodecId id);

void AppendHeader(std::string& out, CodecId id, uint64_t numel);
void AppendU32(std::string& out, uint32_t v);
void AppendU64(std::string& out, uint64_t v);
void AppendVarint(std::string& out, uint64_t v);
size_t VarintBytes(uint64_t v);
// memcpy that accepts the null data() of empty vectors (memcpy itself may not, even for n = 0).
inline void CopyBytes(void* dst, const void* src, size_t n) {
  if (n != 0) std::memcpy(dst, src, n);
}
inline void AppendFloats(std::string& out, std::span<const float> values) {
  out.append(reinterpret_cast<const char*>(values.data()), values.size_bytes());
}

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  size_t remaining() const { return bytes_.size() - pos_; }
  Result<uint8_t> U8(const char* what);
  Result<uint32_t> U32(const char* what);
  Result<uint64_t> U64(const char* what);
  // Canonical LEB128 of at most 10 bytes: an over-long encoding is refused, so each value has
  // exactly one byte string (payloads can be hashed and compared).
  Result<uint64_t> Varint(const char* what);
  Result<std::string_view> Bytes(size_t n, const char* what);

 private:
  std::string_view bytes_;
  size_t pos_ = 0;
};

// Checks magic, codec id, version and numel == expected_numel (and expected_numel ≤ kMaxNumel).
// Returns a Reader positioned after the header.
Result<Reader> OpenPayload(std::string_view payload, CodecId id, uint64_t expected_numel);

// Size arithmetic that cannot wrap: fails with InvalidArgument naming `what`.
Result<uint64_t> CheckedMul(uint64_t a, uint64_t b, const char* what);
Result<uint64_t> CheckedAdd(uint64_t a, uint64_t b, const char* what);

// Fails with Corruption if `got` != `want`, saying which part of the payload is off.
Status ExpectRemaining(const Reader& reader, uint64_t want, const char* what);

// Copies floats out of `bytes` (size must be 4·out.size()) and checks each is finite.
Status ReadFiniteFloats(std::string_view bytes, std::span<float> out, const char* what);
// Fails with Corruption naming the first non-finite element (a decoded value overflowed).
Status CheckDecodedFinite(std::span<const float> values);

// "%.9g", for values in error messages.
std::string FormatFloat(double value);

// Prefixes an error with "codec <name>" so the caller sees which stream's decoder refused it.
template <typename T>
Result<T> InCodecContext(Result<T> result, const std::string& codec_name) {
  if (result.ok()) return result;
  return result.status().WithContext("codec " + codec_name);
}

}  // namespace tributary::collectives::codec
