#include "runtime/state_sync.h"

#include <spdlog/spdlog.h>

#include <deque>

#include "net/frame.h"
#include "net/secure_channel.h"

namespace tributary::runtime {

struct StateServer::Shared {
  net::Identity identity;
  std::string job_id;
  std::mutex mu;
  uint64_t rounds = 0;
  Digest digest{};
  std::shared_ptr<const std::string> state;
  std::deque<std::pair<Digest, std::shared_ptr<const std::string>>> offered;  // oldest first
  uint64_t offered_bytes = 0;
};

namespace {

void Serve(std::shared_ptr<StateServer::Shared> shared, std::shared_ptr<net::Connection> conn) {
  net::AsyncServerHandshake(conn, shared->identity, shared->job_id, [shared, conn](Result<net::PublicKey> key) {
    if (!key.ok()) {
      spdlog::warn("state sync: handshake with {} failed: {}", conn->remote(), key.status().ToString());
      return conn->Close();
    }
    conn->AsyncReceive([shared, conn](Result<v1::Envelope> request) {
      if (!request.ok() || !net::CheckEnvelope(*request, shared->job_id).ok() || !request->has_state_request()) {
        conn->AsyncSend(net::MakeError(shared->job_id, v1::UNEXPECTED_MESSAGE, "expected a StateRequest"),
                        [conn](Status) { conn->Close(); });
        return;
      }
      std::shared_ptr<const std::string> state;
      uint64_t rounds = 0;
      Digest digest{};
      const std::string& wanted = request->state_request().blob_digest();
      {
        std::lock_guard<std::mutex> lock(shared->mu);
        if (wanted.empty()) {
          state = shared->state;
          rounds = shared->rounds;
          digest = shared->digest;
        } else {
          for (const auto& [d, blob] : shared->offered) {
            if (DigestToBytes(d) == wanted) {
              state = blob;
              digest = d;
            }
          }
        }
      }
      if (!state) {
        conn->AsyncSend(net::MakeError(shared->job_id, v1::UNEXPECTED_MESSAGE,
                                       wanted.empty() ? "no committed state yet" : "no such blob offered"),
                        [conn](Status) { conn->Close(); });
        return;
      }
      v1::Envelope header = net::MakeEnvelope(shared->job_id);
      header.mutable_state_header()->set_committed_rounds(rounds);
      header.mutable_state_header()->set_state_digest(DigestToBytes(digest));
      header.mutable_state_header()->set_total_bytes(state->size());
      header.mutable_state_header()->set_chunk_bytes(kStateChunkBytes);
      conn->AsyncSend(header);
      for (size_t off = 0; off < state->size(); off += kStateChunkBytes) {
        const size_t n = std::min<size_t>(kStateChunkBytes, state->size() - off);
        auto chunk = std::as_bytes(std::span(state->data() + off, n));
        // `state` is captured so the chunk memory outlives the write.
        const bool last = off + n >= state->size();
        conn->AsyncSend(nullptr, chunk, [state, conn, last](Status) {
          if (last) conn->Close();
        });
      }
    });
  });
}

}  // namespace

StateServer::StateServer(std::unique_ptr<net::Listener> listener, std::shared_ptr<Shared> shared)
    : listener_(std::move(listener)), shared_(std::move(shared)) {}

StateServer::~StateServer() { listener_->Close(); }

Result<std::unique_ptr<StateServer>> StateServer::Start(net::IoThread& io, const std::string& host,
                                                        const net::Identity& identity,
                                                        const std::string& job_id) {
  TRIB_ASSIGN_OR_RETURN(auto listener, net::Listener::Bind(io.context(), host, 0));
  auto shared = std::make_shared<Shared>();
  shared->identity = identity;
  shared->job_id = job_id;
  listener->AcceptLoop([shared](std::shared_ptr<net::Connection> c) { Serve(shared, c); });
  return std::unique_ptr<StateServer>(new StateServer(std::move(listener), std::move(shared)));
}

uint16_t StateServer::port() const { return listener_->port(); }

void StateServer::Publish(uint64_t committed_rounds, const Digest& digest,
                          std::shared_ptr<const std::string> state) {
  std::lock_guard<std::mutex> lock(shared_->mu);
  shared_->rounds = committed_rounds;
  shared_->digest = digest;
  shared_->state = std::move(state);
}

Result<StateSource> StateSourceOf(const v1::Member& m) {
  StateSource source{m.peer_name(), m.host(), static_cast<uint16_t>(m.port()), {}};
  TRIB_ASSIGN_OR_RETURN(source.key, net::KeyFromBytes(m.public_key()));
  return source;
}

void StateServer::Offer(const Digest& digest, std::shared_ptr<const std::string> blob) {
  std::lock_guard<std::mutex> lock(shared_->mu);
  for (const auto& [d, offered] : shared_->offered) {
    if (d == digest) return;  // the same opening asked for again
  }
  shared_->offered_bytes += blob->size();
  shared_->offered.emplace_back(digest, std::move(blob));
  while (shared_->offered.size() > 1 && shared_->offered_bytes > kOfferedBlobBytes) {
    shared_->offered_bytes -= shared_->offered.front().second->size();
    shared_->offered.pop_front();
  }
}

namespace {

// One StateRequest to `source`, then its StateHeader and chunks: the bytes, once their SHA-256
// is `expected_digest`.
Result<std::string> Fetch(net::IoThread& io, const net::Identity& identity, const std::string& job_id,
                          const StateSource& source, const v1::StateRequest& what, const Digest& expected_digest,
                          uint64_t max_bytes, Deadline deadline) {
  const std::string who = "state source " + source.name + " at " + source.host + ":" + std::to_string(source.port);
  const uint64_t committed_rounds = what.committed_rounds();
  TRIB_ASSIGN_OR_RETURN(auto conn, net::Connection::Dial(io.context(), source.host, source.port, deadline));
  TRIB_RETURN_IF_ERROR(net::ClientHandshake(*conn, identity, job_id, source.key, deadline).status().WithContext(who));
  v1::Envelope request = net::MakeEnvelope(job_id);
  *request.mutable_state_request() = what;
  TRIB_RETURN_IF_ERROR(conn->Send(request, deadline).WithContext(who));
  TRIB_ASSIGN_OR_RETURN(v1::Envelope reply, conn->Receive(deadline));
  TRIB_RETURN_IF_ERROR(net::CheckEnvelope(reply, job_id).WithContext(who));
  if (reply.has_error()) return Unavailable(who + " refused: " + reply.error().message());
  if (!reply.has_state_header()) return ProtocolError(who + " sent " + net::PayloadName(reply));
  const v1::StateHeader& header = reply.state_header();
  if (header.committed_rounds() != committed_rounds) {
    return FailedPrecondition(who + " holds round " + std::to_string(header.committed_rounds()) +
                              ", not " + std::to_string(committed_rounds));
  }
  if (header.total_bytes() == 0 || header.total_bytes() > max_bytes || header.chunk_bytes() == 0 ||
      header.chunk_bytes() > (16u << 20)) {
    return ProtocolError(who + " announced " + std::to_string(header.total_bytes()) +
                         " bytes in chunks of " + std::to_string(header.chunk_bytes()) +
                         " (at most " + std::to_string(max_bytes) + " allowed)");
  }
  std::string state(header.total_bytes(), '\0');
  for (size_t off = 0; off < state.size(); off += header.chunk_bytes()) {
    const size_t n = std::min<size_t>(header.chunk_bytes(), state.size() - off);
    TRIB_RETURN_IF_ERROR(
        conn->ReceiveRaw(std::as_writable_bytes(std::span(state.data() + off, n)), deadline).WithContext(who));
  }
  const Digest got = Sha256Of(state);
  if (got != expected_digest) {
    return Corruption(who + " sent " + (what.blob_digest().empty() ? "a state" : "a blob") + " with digest " +
                      ShortHex(got) + ", but " + (what.blob_digest().empty() ? "the job committed " : "asked for ") +
                      ShortHex(expected_digest));
  }
  return state;
}

}  // namespace

Result<std::string> FetchState(net::IoThread& io, const net::Identity& identity,
                               const std::string& job_id, const StateSource& source,
                               uint64_t committed_rounds, const Digest& expected_digest,
                               uint64_t max_bytes, Deadline deadline) {
  v1::StateRequest what;
  what.set_committed_rounds(committed_rounds);
  return Fetch(io, identity, job_id, source, what, expected_digest, max_bytes, deadline);
}

Result<std::string> FetchBlob(net::IoThread& io, const net::Identity& identity, const std::string& job_id,
                              const StateSource& source, const Digest& digest, uint64_t max_bytes,
                              Deadline deadline) {
  v1::StateRequest what;
  what.set_blob_digest(DigestToBytes(digest));
  return Fetch(io, identity, job_id, source, what, digest, max_bytes, deadline);
}

}  // namespace tributary::runtime
