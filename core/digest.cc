#include "core/digest.h"

#include <sodium.h>

#include <cstring>
#include <stdexcept>

namespace tributary {
namespace {
crypto_hash_sha256_state* State(unsigned char* raw) {
  static_assert(sizeof(crypto_hash_sha256_state) <= 128, "state buffer too small");
  return reinterpret_cast<crypto_hash_sha256_state*>(raw);
}
void EnsureSodium() {
  static const int init = sodium_init();  // thread-safe static init; -1 means unusable
  if (init < 0) throw std::runtime_error("libsodium failed to initialise");
}
}  // namespace

Sha256::Sha256() {
  EnsureSodium();
  crypto_hash_sha256_init(State(state_));
}

void Sha256::Update(std::span<const std::byte> bytes) {
  crypto_hash_sha256_update(State(state_), reinterpret_cast<const unsigned char*>(bytes.data()),
                            bytes.size());
}

void Sha256::Update(std::string_view text) {
  Update(std::as_bytes(std::span<const char>(text.data(), text.size())));
}

void Sha256::UpdateU64(uint64_t value) {
  unsigned char le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(value >> (8 * i));
  crypto_hash_sha256_update(State(state_), le, sizeof(le));
}

Digest Sha256::Finish() {
  Digest out;
  crypto_hash_sha256_final(State(state_), out.data());
  return out;
}

Digest Sha256Of(std::span<const std::byte> bytes) {
  Sha256 h;
  h.Update(bytes);
  return h.Finish();
}

Digest Sha256Of(std::string_view text) {
  Sha256 h;
  h.Update(text);
  return h.Finish();
}

std::string ToHex(const Digest& digest) {
  static const char* kHex = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < digest.size(); ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 15];
  }
  return out;
}

std::string ShortHex(const Digest& digest) { return ToHex(digest).substr(0, 12); }

Result<Digest> DigestFromHex(std::string_view hex) {
  if (hex.size() != 64) return InvalidArgument("digest hex must be 64 characters");
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Digest out;
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgument("digest hex has a non-hex character");
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return out;
}

std::string DigestToBytes(const Digest& digest) {
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

Result<Digest> DigestFromBytes(std::string_view bytes) {
  if (bytes.size() != 32) {
    return InvalidArgument("digest must be 32 bytes, got " + std::to_string(bytes.size()));
  }
  Digest out;
  std::memcpy(out.data(), bytes.data(), 32);
  return out;
}

}  // namespace tributary
