// Authenticated key exchange that turns a fresh Connection into an encrypted, mutually
// authenticated channel.
//
//   client -> server  HandshakeInit   {client Ed25519 key, ephemeral X25519 key, random}
//   server -> client  HandshakeReply  {server Ed25519 key, ephemeral X25519 key, random,
//                                      Sign_server("server" ‖ T)}
//   client -> server  HandshakeFinish {Sign_client("client" ‖ T)}
//
// T = SHA-256 over a label, the `context` string both sides expect (e.g. a job id), and every
// key and random above. Session keys come from X25519 (libsodium crypto_kx) over the ephemeral
// keys, bound to T. Each side proves it holds its static key by signing a transcript that
// contains the other side's fresh randomness, so a replayed handshake or a man in the middle
// fails. On success the connection is switched to AEAD records (Connection::EnableEncryption)
// and the caller learns the remote's verified static key; deciding whether that key is
// *allowed* (admission, the key the coordinator announced) is the caller's job.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/clock.h"
#include "core/status.h"
#include "net/connection.h"
#include "net/identity.h"

namespace tributary::net {

// Dialer side. Blocking (not on an IoThread). Fails if the server's key is not `expected_server`
// (when given).
Result<PublicKey> ClientHandshake(Connection& connection, const Identity& self,
                                  const std::string& context,
                                  const std::optional<PublicKey>& expected_server,
                                  Deadline deadline);

// Acceptor side, asynchronous (for servers): `done` runs on the connection's strand with the
// client's verified key, or an error (the caller then answers/closes). The first frame must be
// a HandshakeInit.
void AsyncServerHandshake(std::shared_ptr<Connection> connection, const Identity& self,
                          std::string context, std::function<void(Result<PublicKey>)> done);

// Acceptor side, blocking wrapper.
Result<PublicKey> ServerHandshake(std::shared_ptr<Connection> connection, const Identity& self,
                                  const std::string& context, Deadline deadline);

}  // namespace tributary::net
