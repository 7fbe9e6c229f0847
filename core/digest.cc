#include "core/digest.h"

#include <openssl/evp.h>

#include <cstring>
#include <new>
#include <stdexcept>

namespace tributary {
namespace {
// Fetched once: an implicit fetch on every init costs a provider lookup per digest, which the
// many small digests (Merkle nodes, leaves) would pay.
const EVP_MD* Sha256Algorithm() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (md == nullptr) throw std::runtime_error("OpenSSL has no SHA-256 implementation");
  return md;
}
// libcrypto's SHA-256 cannot fail on valid arguments; a failure means the library is unusable.
void Check(int ok, const char* what) {
  if (ok != 1) throw std::runtime_error(std::string("OpenSSL SHA-256 ") + what + " failed");
}
}  // namespace

void Sha256::FreeContext::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  if (!context_) throw std::bad_alloc();
  Check(EVP_DigestInit_ex(context_.get(), Sha256Algorithm(), nullptr), "init");
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::Update(std::span<const std::byte> bytes) {
  Check(EVP_DigestUpdate(context_.get(), bytes.data(), bytes.size()), "update");
}

void Sha256::Update(std::string_view text) {
  Update(std::as_bytes(std::span<const char>(text.data(), text.size())));
}

void Sha256::UpdateU64(uint64_t value) {
  unsigned char le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(value >> (8 * i));
  Check(EVP_DigestUpdate(context_.get(), le, sizeof(le)), "update");
}

Digest Sha256::Finish() {
  Digest out;
  unsigned int length = 0;
  Check(EVP_DigestFinal_ex(context_.get(), out.data(), &length), "final");
  if (length != out.size()) throw std::runtime_error("OpenSSL SHA-256 returned a short digest");
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
