#include "net/secure_channel.h"

#include <sodium.h>

#include <cstring>
#include <future>

#include "core/digest.h"
#include "core/sodium_init.h"
#include "net/frame.h"

namespace tributary::net {
namespace {

constexpr size_t kRandomBytes = 32;

struct Ephemeral {
  std::array<uint8_t, crypto_kx_PUBLICKEYBYTES> pk{};
  std::array<uint8_t, crypto_kx_SECRETKEYBYTES> sk{};
  Ephemeral() {
    EnsureSodiumInitialised();
    crypto_kx_keypair(pk.data(), sk.data());
  }
  ~Ephemeral() { sodium_memzero(sk.data(), sk.size()); }
};

std::string Bytes(const uint8_t* p, size_t n) { return std::string(reinterpret_cast<const char*>(p), n); }

std::string RandomBytes() {
  std::string r(kRandomBytes, '\0');
  randombytes_buf(r.data(), r.size());
  return r;
}

// All fields are fixed-size except `context`, which is length-prefixed: no two transcripts
// share an encoding.
Digest Transcript(const std::string& context, const v1::HandshakeInit& init,
                  const std::string& server_static, const std::string& server_ephemeral,
                  const std::string& server_random) {
  Sha256 h;
  h.Update(std::string_view("tributary/v1/handshake"));
  h.UpdateU64(context.size());
  h.Update(context);
  h.Update(init.static_key());
  h.Update(init.ephemeral_key());
  h.Update(init.random());
  h.Update(server_static);
  h.Update(server_ephemeral);
  h.Update(server_random);
  return h.Finish();
}

std::string Role(const char* role, const Digest& t) { return std::string(role) + DigestToBytes(t); }

Status CheckSizes(const std::string& static_key, const std::string& ephemeral, const std::string& random) {
  if (static_key.size() != 32 || ephemeral.size() != crypto_kx_PUBLICKEYBYTES ||
      random.size() != kRandomBytes) {
    return ProtocolError("handshake message has fields of the wrong size");
  }
  return Status::Ok();
}

// Binds the raw X25519 session keys to the transcript.
Connection::SessionKeys Bind(const uint8_t* rx, const uint8_t* tx, const Digest& t) {
  Connection::SessionKeys keys;
  crypto_generichash(keys.rx.data(), keys.rx.size(), t.data(), t.size(), rx, crypto_kx_SESSIONKEYBYTES);
  crypto_generichash(keys.tx.data(), keys.tx.size(), t.data(), t.size(), tx, crypto_kx_SESSIONKEYBYTES);
  return keys;
}

Result<v1::Envelope> Expect(Result<v1::Envelope> message, v1::Envelope::PayloadCase want,
                            const std::string& context) {
  if (!message.ok()) return message.status().WithContext("handshake");
  TRIB_RETURN_IF_ERROR(CheckEnvelope(*message, "").WithContext("handshake"));
  if (message->has_error()) {
    return Unavailable("handshake refused: " + message->error().message());
  }
  if (message->payload_case() != want) {
    return ProtocolError("expected a handshake message, got " + PayloadName(*message));
  }
  // The context binds the channel to its purpose (a job, or the coordinator).
  TRIB_RETURN_IF_ERROR(CheckEnvelope(*message, context).WithContext("handshake"));
  return message;
}

}  // namespace

Result<PublicKey> ClientHandshake(Connection& connection, const Identity& self,
                                  const std::string& context,
                                  const std::optional<PublicKey>& expected_server,
                                  Deadline deadline) {
  Ephemeral eph;
  v1::Envelope init_env = MakeEnvelope(context);
  v1::HandshakeInit* init = init_env.mutable_handshake_init();
  init->set_static_key(KeyToBytes(self.public_key()));
  init->set_ephemeral_key(Bytes(eph.pk.data(), eph.pk.size()));
  init->set_random(RandomBytes());
  TRIB_RETURN_IF_ERROR(connection.Send(init_env, deadline).WithContext("handshake"));

  TRIB_ASSIGN_OR_RETURN(v1::Envelope reply_env,
                        Expect(connection.Receive(deadline), v1::Envelope::kHandshakeReply, context));
  const v1::HandshakeReply& reply = reply_env.handshake_reply();
  TRIB_RETURN_IF_ERROR(CheckSizes(reply.static_key(), reply.ephemeral_key(), reply.random()));
  TRIB_ASSIGN_OR_RETURN(PublicKey server_key, KeyFromBytes(reply.static_key()));
  if (expected_server && server_key != *expected_server) {
    return Unavailable("server at " + connection.remote() + " has key " + ShortKey(server_key) +
                       ", not the expected " + ShortKey(*expected_server));
  }
  const Digest t = Transcript(context, *init, reply.static_key(), reply.ephemeral_key(), reply.random());
  auto sig = SignatureFromBytes(reply.signature());
  if (!sig.ok() || !VerifySignature(server_key, Role("server", t), *sig)) {
    return Unavailable("server at " + connection.remote() + " failed to prove its key " +
                       ShortKey(server_key) + " (bad handshake signature)");
  }
  uint8_t rx[crypto_kx_SESSIONKEYBYTES], tx[crypto_kx_SESSIONKEYBYTES];
  if (crypto_kx_client_session_keys(rx, tx, eph.pk.data(), eph.sk.data(),
                                    reinterpret_cast<const uint8_t*>(reply.ephemeral_key().data())) != 0) {
    return ProtocolError("server sent an unusable ephemeral key");
  }
  v1::Envelope finish = MakeEnvelope(context);
  finish.mutable_handshake_finish()->set_signature(SignatureToBytes(self.Sign(Role("client", t))));
  TRIB_RETURN_IF_ERROR(connection.Send(finish, deadline).WithContext("handshake"));
  connection.EnableEncryption(Bind(rx, tx, t));
  sodium_memzero(rx, sizeof(rx));
  sodium_memzero(tx, sizeof(tx));
  return server_key;
}

namespace {

// Server-side state carried across the async steps.
struct ServerState {
  std::shared_ptr<Connection> connection;
  Identity self;
  std::string context;
  std::function<void(Result<PublicKey>)> done;
  Ephemeral eph;
  v1::HandshakeInit init;
  std::string server_random;
  Digest transcript{};
  PublicKey client_key{};
  Connection::SessionKeys keys;
};

void OnFinish(std::shared_ptr<ServerState> st, Result<v1::Envelope> message) {
  auto finish = Expect(std::move(message), v1::Envelope::kHandshakeFinish, st->context);
  if (!finish.ok()) return st->done(finish.status());
  auto sig = SignatureFromBytes(finish->handshake_finish().signature());
  if (!sig.ok() || !VerifySignature(st->client_key, Role("client", st->transcript), *sig)) {
    return st->done(Unavailable("client at " + st->connection->remote() + " failed to prove key " +
                                ShortKey(st->client_key) + " (bad or replayed handshake signature)"));
  }
  st->connection->EnableEncryption(st->keys);
  st->done(st->client_key);
}

void OnInit(std::shared_ptr<ServerState> st, Result<v1::Envelope> message) {
  auto init = Expect(std::move(message), v1::Envelope::kHandshakeInit, st->context);
  if (!init.ok()) return st->done(init.status());
  st->init = init->handshake_init();
  Status sizes = CheckSizes(st->init.static_key(), st->init.ephemeral_key(), st->init.random());
  if (!sizes.ok()) return st->done(sizes);
  st->client_key = *KeyFromBytes(st->init.static_key());
  st->server_random = RandomBytes();
  const std::string server_static = KeyToBytes(st->self.public_key());
  const std::string server_eph = Bytes(st->eph.pk.data(), st->eph.pk.size());
  st->transcript = Transcript(st->context, st->init, server_static, server_eph, st->server_random);
  uint8_t rx[crypto_kx_SESSIONKEYBYTES], tx[crypto_kx_SESSIONKEYBYTES];
  if (crypto_kx_server_session_keys(rx, tx, st->eph.pk.data(), st->eph.sk.data(),
                                    reinterpret_cast<const uint8_t*>(st->init.ephemeral_key().data())) != 0) {
    return st->done(ProtocolError("client sent an unusable ephemeral key"));
  }
  st->keys = Bind(rx, tx, st->transcript);
  sodium_memzero(rx, sizeof(rx));
  sodium_memzero(tx, sizeof(tx));
  v1::Envelope reply_env = MakeEnvelope(st->context);
  v1::HandshakeReply* reply = reply_env.mutable_handshake_reply();
  reply->set_static_key(server_static);
  reply->set_ephemeral_key(server_eph);
  reply->set_random(st->server_random);
  reply->set_signature(SignatureToBytes(st->self.Sign(Role("server", st->transcript))));
  st->connection->AsyncSend(reply_env, [st](Status sent) {
    if (!sent.ok()) return st->done(sent.WithContext("handshake"));
    st->connection->AsyncReceive([st](Result<v1::Envelope> m) { OnFinish(st, std::move(m)); });
  });
}

}  // namespace

void AsyncServerHandshake(std::shared_ptr<Connection> connection, const Identity& self,
                          std::string context, std::function<void(Result<PublicKey>)> done) {
  auto st = std::make_shared<ServerState>();
  st->connection = connection;
  st->self = self;
  st->context = std::move(context);
  st->done = std::move(done);
  connection->AsyncReceive([st](Result<v1::Envelope> m) { OnInit(st, std::move(m)); });
}

Result<PublicKey> ServerHandshake(std::shared_ptr<Connection> connection, const Identity& self,
                                  const std::string& context, Deadline deadline) {
  auto promise = std::make_shared<std::promise<Result<PublicKey>>>();
  auto future = promise->get_future();
  AsyncServerHandshake(connection, self, context,
                       [promise](Result<PublicKey> r) { promise->set_value(std::move(r)); });
  if (future.wait_until(deadline) == std::future_status::timeout) {
    connection->Close();
    future.wait();
    return DeadlineExceeded("handshake with " + connection->remote() + " timed out");
  }
  return future.get();
}

}  // namespace tributary::net
