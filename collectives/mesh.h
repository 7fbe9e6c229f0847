// Mesh: a direct connection between every pair of `world` ranks, for collectives in which every
// member talks to every other (ButterflyAllreduce: each shard owner hears every contribution).
//
// Form() connects rank i to every j > i by dialing (on a thread per dial, since the secure
// handshake waits for the other side's answer) while it accepts every j < i on the caller's
// listener, so no rank waits on another's progress before it accepts and formation cannot
// deadlock. Per connection:
//   dialer -> acceptor   [secure handshake] Hello{ROLE_RING_NEIGHBOR, rank, round, attempt, name}
//   acceptor -> dialer   HelloAck "ack" (hello accepted), or Error and close
//   both ways            HelloAck "connected", once all of the sender's connections are acked
//   both ways            HelloAck "ready", once the sender heard "connected" from every peer
// The acceptor checks protocol version, job id, role, round, attempt and that the rank is one it
// expects and has not seen yet; with an identity it also checks the key the handshake proved
// against members[rank].public_key, and the dialer checks the acceptor's key the same way.
// Anything else that connects meanwhile is answered with an Error frame and closed, and waiting
// goes on. A successful Form on any rank means every member is fully connected. Every rank
// listens on every connection until that connection's "ready", which is what lets a failure
// anywhere reach everyone (see mesh.cc).
//
// Failure is contagious on purpose: a rank that gives up (deadline, rejected hello, a peer that
// went away) sends Error{ROUND_FAILED} on every connection it holds and closes them, so members
// still forming fail at once naming it instead of waiting for their deadline. A member that
// never shows up makes Form fail with DeadlineExceeded naming it.
//
// A Mesh is used by one thread at a time. It owns one io thread (for the connections it dialed);
// accepted connections live on the caller's io thread, which must outlive the Mesh. After a
// collective fails the mesh is broken (see Abort) and a new one must be formed.
//
// Wire note: proto v1 has no mesh role yet, so the hello says ROLE_RING_NEIGHBOR; a round and
// attempt must form either a ring or a mesh on a listener, never both. With an identity the
// handshake context is "<job id>/mesh", so a ring dialer can never complete a handshake with a
// mesh acceptor or the other way round.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "collectives/collective_stats.h"
#include "collectives/form_control.h"
#include "collectives/ring.h"
#include "core/clock.h"
#include "core/status.h"
#include "net/connection.h"
#include "net/identity.h"
#include "net/io_thread.h"

namespace tributary::collectives {

using MeshMember = RingMember;

class Mesh {
 public:
  // `members` must be ordered by rank (members[i].rank == i). World size 1 is valid and holds no
  // connections. Blocking; must not run on `io`'s thread. `attempt` tells retries of one round
  // apart, so a connection left over from a failed attempt is rejected. With an `identity`, every
  // connection runs the authenticated handshake first and carries only encrypted records. With a
  // `control`, formation gives up (Aborted) once control->cancelled() is true, and a failure
  // names the member it waited for in control->blamed_rank.
  static Result<std::unique_ptr<Mesh>> Form(net::IoThread& io, net::Listener& listener,
                                            uint32_t my_rank,
                                            const std::vector<MeshMember>& members,
                                            const std::string& job_id, uint64_t round,
                                            uint32_t attempt, const net::Identity* identity,
                                            Deadline deadline, FormControl* control = nullptr);
  // Plaintext, attempt 0 (trusted settings, tests and benchmarks).
  static Result<std::unique_ptr<Mesh>> Form(net::IoThread& io, net::Listener& listener,
                                            uint32_t my_rank,
                                            const std::vector<MeshMember>& members,
                                            const std::string& job_id, uint64_t round,
                                            Deadline deadline) {
    return Form(io, listener, my_rank, members, job_id, round, 0, nullptr, deadline);
  }
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  uint32_t rank() const { return rank_; }
  uint32_t world() const { return static_cast<uint32_t>(members_.size()); }
  uint64_t round() const { return round_; }
  uint32_t attempt() const { return attempt_; }
  const std::string& job_id() const { return job_id_; }
  const net::Identity* identity() const { return identity_; }
  const MeshMember& member(uint32_t rank) const { return members_[rank]; }
  const std::vector<MeshMember>& members() const { return members_; }

  // The connection to `rank` (!= rank()). Shared so asynchronous handlers can keep it alive.
  const std::shared_ptr<net::Connection>& peer(uint32_t rank) const { return peers_[rank]; }
  // "rank 2 'peer-2' at 127.0.0.1:40312" (the connection's remote address), for errors.
  std::string Describe(uint32_t rank) const;
  PeerFailure FailureOf(uint32_t rank, std::optional<uint32_t> reported_by = std::nullopt) const;
  // `from` relayed an abort (`relayed`, Mesh::Abort's message): the rank it names, reported by
  // `from`, or `from` itself when it names nobody else or names this rank (we cannot tell who of
  // the two is wrong; the coordinator weighs both reports).
  PeerFailure FailureOfRelayedAbort(uint32_t from, const std::string& relayed) const;

  // Bytes on all of this rank's connections since Form, frames included.
  uint64_t bytes_sent() const;
  uint64_t bytes_received() const;

  // Gives up on the mesh: tells every peer why (the blamed one too, last: it may be alive and
  // only wrong, e.g. a mismatched tag, and should learn why instead of seeing a closed socket), as
  // Error{ROUND_FAILED, "failed rank K: <why>"} when a peer is to blame or
  // Error{ROUND_FAILED, "rank R gave up: <why>"} when not, waits briefly for those frames to
  // leave, then closes every connection. Returns once no queued send can still read caller
  // memory. Idempotent; afterwards broken() is true and failure() names whom we blamed.
  void Abort(const Status& why, std::optional<PeerFailure> failure = std::nullopt);
  bool broken() const { return broken_; }
  const std::optional<PeerFailure>& failure() const { return failure_; }
  // Thread-safe, callable while another thread is inside a collective on this mesh: closes
  // every connection so that collective fails at once. Call Abort afterwards, from the mesh's
  // own thread, before the caller's buffers go away.
  void Interrupt();

 private:
  friend class MeshFormation;
  Mesh(uint32_t rank, std::vector<MeshMember> members, std::string job_id, uint64_t round,
       uint32_t attempt, const net::Identity* identity);
  void CloseAll();

  uint32_t rank_;
  std::vector<MeshMember> members_;
  std::string job_id_;
  uint64_t round_;
  uint32_t attempt_;
  const net::Identity* identity_;  // not owned; outlives the Mesh
  // Dialed connections live here, so sending and receiving are spread over two io threads.
  std::unique_ptr<net::IoThread> dial_io_;
  std::vector<std::shared_ptr<net::Connection>> peers_;  // by rank; null at rank_
  std::atomic<bool> broken_{false};  // read by other threads (a peer deciding whether to re-form)
  std::optional<PeerFailure> failure_;
};

// What every all-reduce over a Mesh does around its algorithm: the context its errors carry
// ("<algorithm> all-reduce '<tag>' (rank r of n)"), the refusal of a mesh an earlier collective
// broke, and the call's bytes and seconds.
class MeshCall {
 public:
  MeshCall(const Mesh& mesh, std::string_view algorithm, const std::string& tag);
  const std::string& context() const { return context_; }
  // FailedPrecondition, in context, when an earlier collective broke the mesh.
  Status CheckUsable() const;
  // Starts counting; call it after the argument checks, right before the algorithm runs.
  void Start();
  CollectiveStats Stats() const;  // since Start()

 private:
  const Mesh& mesh_;
  std::string context_;
  Clock::time_point start_ = Clock::now();
  uint64_t sent_ = 0, received_ = 0;
};

// How long a rank whose send to a peer failed waits for that peer's relayed abort before blaming
// the peer itself. A peer that gives up relays why (Mesh::Abort) and then closes, so a write to it
// can fail ("Broken pipe") before its message is read, and would blame a live peer for another's
// death. Only failures pay it.
inline constexpr Millis kRelayedAbortGrace{200};

// Hands `arrivals` to `handle`, stopping at the first error, in the order of the evidence: first
// what this rank saw itself (data, whose content `handle` checks, and malformed headers), then
// relayed aborts (hearsay that names who failed), last transport failures (a failed send or a
// closed connection, which may only mean the peer gave up because of someone else). So a cheater
// that answers an owner's accusation with one of its own cannot overtake the NaN it sent us
// itself. Before a failed send is handled, waits up to kRelayedAbortGrace (capped by `deadline`)
// for a relayed abort through `take(until)` and handles that instead (a peer's relayed abort
// comes before its close on the same connection, so a failed receive needs no grace). Shared by the
// butterfly and the direct all-reduce; `Arrival` has `relayed`, `sending` and `status`.
template <typename Arrival>
int EvidenceRank(const Arrival& a) {
  if (a.relayed) return 1;
  if (a.status.ok()) return 0;
  const bool transport = a.sending || a.status.code() == StatusCode::kUnavailable ||
                         a.status.code() == StatusCode::kDeadlineExceeded;
  return transport ? 2 : 0;
}

template <typename Arrival, typename Take, typename Handle>
Status HandleArrivals(std::deque<Arrival>& arrivals, Deadline deadline, Take take, Handle handle) {
  std::stable_sort(arrivals.begin(), arrivals.end(), [](const Arrival& a, const Arrival& b) {
    return EvidenceRank(a) < EvidenceRank(b);
  });
  for (Arrival& a : arrivals) {
    if (a.sending && !a.status.ok()) {
      const Deadline grace = std::min(deadline, DeadlineAfter(kRelayedAbortGrace));
      while (Clock::now() < grace) {
        for (Arrival& later : take(grace)) {
          if (later.relayed) return handle(later);
        }
      }
    }
    TRIB_RETURN_IF_ERROR(handle(a));
  }
  return Status::Ok();
}

// The "failed rank K: ..." prefix Mesh::Abort puts on an Error it relays: K, when `message`
// starts with it and K is a rank of a world of `world`.
std::optional<uint32_t> BlamedRank(const std::string& message, uint32_t world);

}  // namespace tributary::collectives
