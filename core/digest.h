// SHA-256 digests for everything an attacker could forge: parameters, checkpoints, batches,
// step leaves. Canonical tensor bytes are the raw little-endian element bytes in order.
// OpenSSL's libcrypto computes them: it dispatches to the CPU's SHA extensions (SHA-NI) or
// AVX2 code where present, 6x libsodium's portable SHA-256 on this machine kind, which matters
// because a verifying prover digests its whole training state after every step.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/status.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX, kept out of this header

namespace tributary {

using Digest = std::array<uint8_t, 32>;

// Incremental SHA-256. Not thread-safe; one instance per stream. Movable, not copyable.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  void Update(std::span<const std::byte> bytes);
  void Update(std::string_view text);
  void UpdateU64(uint64_t value);  // little-endian, fixed width
  Digest Finish();  // once per instance

 private:
  struct FreeContext {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, FreeContext> context_;
};

Digest Sha256Of(std::span<const std::byte> bytes);
Digest Sha256Of(std::string_view text);
std::string ToHex(const Digest& digest);
std::string ShortHex(const Digest& digest);  // first 12 hex chars, for logs
Result<Digest> DigestFromHex(std::string_view hex);
// Digest as raw 32-byte string (for protobuf bytes fields) and back.
std::string DigestToBytes(const Digest& digest);
Result<Digest> DigestFromBytes(std::string_view bytes);

}  // namespace tributary
