// Canonical byte encoding shared by every signed or hashed verifier structure.
//
// Integers are fixed-width little-endian; strings and byte runs are length-prefixed (u64), so
// no two different field sequences can produce the same bytes (no concatenation ambiguity).
// The reader is strict: any truncation, oversize length or trailing byte is Corruption, so a
// decoded structure always re-encodes to exactly the bytes it came from.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace tributary::verifier::detail {

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void Str(std::string_view s) {
    U64(s.size());
    out_.append(s);
  }
  template <size_t N>
  void Fixed(const std::array<uint8_t, N>& bytes) {
    out_.append(reinterpret_cast<const char*>(bytes.data()), N);
  }
  void Raw(std::string_view s) { out_.append(s); }
  const std::string& bytes() const& { return out_; }
  std::string bytes() && { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  // `what` names the structure in error messages ("receipt", "commitment").
  Reader(std::string_view data, const char* what) : data_(data), what_(what) {}

  Status Magic(std::string_view magic) {
    if (data_.substr(0, magic.size()) != magic) return Corruption(std::string("not a ") + what_);
    pos_ = magic.size();
    return Status::Ok();
  }
  Result<uint8_t> U8() {
    if (data_.size() - pos_ < 1) return Truncated();
    return static_cast<uint8_t>(data_[pos_++]);
  }
  Result<uint64_t> U64() {
    if (data_.size() - pos_ < 8) return Truncated();
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) {
      v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    }
    pos_ += 8;
    return v;
  }
  // A length-prefixed string of at most `max_len` bytes (bounds hostile lengths before copying).
  Result<std::string> Str(size_t max_len) {
    TRIB_ASSIGN_OR_RETURN(uint64_t n, U64());
    if (n > max_len) return Corruption(std::string(what_) + " has an oversized field");
    if (n > data_.size() - pos_) return Truncated();
    std::string out(data_.substr(pos_, n));
    pos_ += n;
    return out;
  }
  template <size_t N>
  Result<std::array<uint8_t, N>> Fixed() {
    if (data_.size() - pos_ < N) return Truncated();
    std::array<uint8_t, N> out{};
    for (size_t i = 0; i < N; ++i) out[i] = static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += N;
    return out;
  }
  // Exactly `n` raw bytes (the caller bounds n before asking).
  Result<std::string> Bytes(uint64_t n) {
    if (n > data_.size() - pos_) return Truncated();
    std::string out(data_.substr(pos_, n));
    pos_ += n;
    return out;
  }
  Status Done() const {
    if (pos_ != data_.size()) return Corruption(std::string(what_) + " has trailing bytes");
    return Status::Ok();
  }

 private:
  Status Truncated() const { return Corruption(std::string(what_) + " is truncated"); }

  std::string_view data_;
  const char* what_;
  size_t pos_ = 0;
};

}  // namespace tributary::verifier::detail
