// Ed25519 identities. A peer, a coordinator and a researcher are each one key pair; the public
// key is the identity everyone else checks. Key files hold the 64-byte libsodium secret key as
// hex, are created with mode 0600 and never overwritten; a file readable by group or others is
// refused (like ssh does), because anyone who reads it can impersonate its owner.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/status.h"

namespace tributary::net {

using PublicKey = std::array<uint8_t, 32>;
using Signature = std::array<uint8_t, 64>;

class Identity {
 public:
  static Identity Generate();
  // Refuses to overwrite an existing file. Also writes PATH.pub (public key hex, mode 0644).
  Status WriteFile(const std::string& path) const;
  static Result<Identity> LoadFile(const std::string& path);

  const PublicKey& public_key() const { return public_key_; }
  Signature Sign(std::span<const uint8_t> message) const;
  Signature Sign(std::string_view message) const;

 private:
  PublicKey public_key_{};
  std::array<uint8_t, 64> secret_key_{};
};

bool VerifySignature(const PublicKey& key, std::span<const uint8_t> message, const Signature& sig);
bool VerifySignature(const PublicKey& key, std::string_view message, const Signature& sig);

std::string KeyToHex(const PublicKey& key);
std::string ShortKey(const PublicKey& key);  // first 12 hex chars, for logs
Result<PublicKey> KeyFromHex(std::string_view hex);
Result<PublicKey> KeyFromBytes(std::string_view bytes);
std::string KeyToBytes(const PublicKey& key);
Result<Signature> SignatureFromBytes(std::string_view bytes);
std::string SignatureToBytes(const Signature& sig);

}  // namespace tributary::net
