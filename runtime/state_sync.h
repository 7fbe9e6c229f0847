// State sync for late joiners: peers serve their last committed state; a joiner fetches it from
// one of the sources the coordinator named and checks it against the digest the *coordinator*
// announced (never one the source chose), so a lying source is detected and the next tried.
// The same server offers blobs by digest: the bulk of a verifier opening (verifier/opening_bulk.h).
//
// StateServer runs entirely on the peer's IoThread: it accepts on its own listener, runs the
// server handshake, answers one StateRequest with a StateHeader followed by raw chunk records,
// and closes. Publish() swaps the served state atomically (thread-safe).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "core/clock.h"
#include "core/digest.h"
#include "core/status.h"
#include "net/connection.h"
#include "net/identity.h"
#include "net/io_thread.h"

namespace tributary::runtime {

inline constexpr uint32_t kStateChunkBytes = 1u << 20;
inline constexpr uint64_t kOfferedBlobBytes = 1ull << 30;

class StateServer {
 public:
  static Result<std::unique_ptr<StateServer>> Start(net::IoThread& io, const std::string& host,
                                                    const net::Identity& identity,
                                                    const std::string& job_id);
  ~StateServer();
  uint16_t port() const;
  void Publish(uint64_t committed_rounds, const Digest& digest,
               std::shared_ptr<const std::string> state);
  // Also serves `blob` to whoever asks for `digest`, its SHA-256, which the caller has already
  // computed (an opening's bulk: Opening.bulk_digest; FetchBlob). The newest offers are kept up
  // to `kOfferedBlobBytes` in all; older ones are dropped.
  void Offer(const Digest& digest, std::shared_ptr<const std::string> blob);

  struct Shared;  // what the io-thread handlers read; defined in the .cc

 private:
  StateServer(std::unique_ptr<net::Listener> listener, std::shared_ptr<Shared> shared);
  std::unique_ptr<net::Listener> listener_;
  std::shared_ptr<Shared> shared_;
};

struct StateSource {
  std::string name;
  std::string host;
  uint16_t port = 0;
  net::PublicKey key{};
};
// The state server a coordinator's Member names (SyncState sources, VerifyRequest.bulk_source);
// an error if its key is malformed.
Result<StateSource> StateSourceOf(const v1::Member& member);

// Fetches the committed state after `committed_rounds` rounds; fails unless its SHA-256 equals
// `expected_digest`. `max_bytes` bounds what the source may announce (checked before allocating).
Result<std::string> FetchState(net::IoThread& io, const net::Identity& identity,
                               const std::string& job_id, const StateSource& source,
                               uint64_t committed_rounds, const Digest& expected_digest,
                               uint64_t max_bytes, Deadline deadline);

// Fetches the blob whose SHA-256 is `digest` that `source` offers (StateServer::Offer); fails
// unless it is that blob and at most `max_bytes` long.
Result<std::string> FetchBlob(net::IoThread& io, const net::Identity& identity, const std::string& job_id,
                              const StateSource& source, const Digest& digest, uint64_t max_bytes,
                              Deadline deadline);

}  // namespace tributary::runtime
