#include "net/identity.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/digest.h"
#include "core/files.h"
#include "core/sodium_init.h"

namespace tributary::net {
namespace {

std::string ToHexString(const uint8_t* data, size_t n) {
  std::string out(2 * n + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), data, n);
  out.pop_back();
  return out;
}

template <size_t N>
Result<std::array<uint8_t, N>> FromHex(std::string_view hex, const char* what) {
  std::array<uint8_t, N> out{};
  size_t len = 0;
  const char* end = nullptr;
  if (hex.size() != 2 * N ||
      sodium_hex2bin(out.data(), N, hex.data(), hex.size(), nullptr, &len, &end) != 0 || len != N) {
    return InvalidArgument(std::string(what) + " must be " + std::to_string(2 * N) +
                           " hex characters");
  }
  return out;
}

std::string OctalMode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%03o", mode & 0777);
  return buf;
}

}  // namespace

Identity Identity::Generate() {
  EnsureSodiumInitialised();
  Identity id;
  crypto_sign_keypair(id.public_key_.data(), id.secret_key_.data());
  return id;
}

Status Identity::WriteFile(const std::string& path) const {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) {
      return FailedPrecondition("'" + path + "' already exists; refusing to overwrite an identity");
    }
    return IoError("cannot create '" + path + "': " + std::strerror(errno));
  }
  const std::string text = ToHexString(secret_key_.data(), secret_key_.size()) + "\n";
  ssize_t n = ::write(fd, text.data(), text.size());
  int rc = ::fsync(fd);
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size()) || rc != 0) {
    ::unlink(path.c_str());
    return IoError("cannot write '" + path + "'");
  }
  return WriteFileAtomically(path + ".pub", KeyToHex(public_key_) + "\n");
}

Result<Identity> Identity::LoadFile(const std::string& path) {
  EnsureSodiumInitialised();
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return NotFound("no identity at '" + path + "' (create one with `tributary keygen`)");
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    return FailedPrecondition("identity '" + path + "' is readable by others (mode " +
                              OctalMode(st.st_mode) + "); run chmod 600 on it");
  }
  TRIB_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  auto secret = FromHex<64>(text, "identity secret key");
  if (!secret.ok()) return Corruption("'" + path + "' is not an identity file");
  Identity id;
  id.secret_key_ = *secret;
  crypto_sign_ed25519_sk_to_pk(id.public_key_.data(), id.secret_key_.data());
  return id;
}

Signature Identity::Sign(std::span<const uint8_t> message) const {
  Signature sig{};
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), secret_key_.data());
  return sig;
}

Signature Identity::Sign(std::string_view message) const {
  return Sign(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(message.data()),
                                       message.size()));
}

bool VerifySignature(const PublicKey& key, std::span<const uint8_t> message, const Signature& sig) {
  EnsureSodiumInitialised();
  return crypto_sign_verify_detached(sig.data(), message.data(), message.size(), key.data()) == 0;
}

bool VerifySignature(const PublicKey& key, std::string_view message, const Signature& sig) {
  return VerifySignature(
      key, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(message.data()), message.size()),
      sig);
}

std::string KeyToHex(const PublicKey& key) { return ToHexString(key.data(), key.size()); }
std::string ShortKey(const PublicKey& key) { return KeyToHex(key).substr(0, 12); }
Result<PublicKey> KeyFromHex(std::string_view hex) { return FromHex<32>(hex, "public key"); }

Result<PublicKey> KeyFromBytes(std::string_view bytes) {
  if (bytes.size() != 32) return InvalidArgument("public key must be 32 bytes");
  PublicKey key;
  std::memcpy(key.data(), bytes.data(), 32);
  return key;
}

std::string KeyToBytes(const PublicKey& key) {
  return std::string(reinterpret_cast<const char*>(key.data()), key.size());
}

Result<Signature> SignatureFromBytes(std::string_view bytes) {
  if (bytes.size() != 64) return InvalidArgument("signature must be 64 bytes");
  Signature sig;
  std::memcpy(sig.data(), bytes.data(), 64);
  return sig;
}

std::string SignatureToBytes(const Signature& sig) {
  return std::string(reinterpret_cast<const char*>(sig.data()), sig.size());
}

}  // namespace tributary::net
