// Ring: the data connections one rank holds in a ring of `world` ranks ordered by rank: an
// outgoing Connection to rank+1 ("next") and an incoming one from rank-1 ("prev").
//
// Form() dials next, introduces itself with Hello{ROLE_RING_NEIGHBOR, rank, round}, and accepts
// connections on the caller's listener until prev's valid Hello arrives; each side answers a
// valid Hello with HelloAck, so a successful Form on every rank means the whole ring is up.
// Anything else that connects meanwhile (wrong job, protocol version, round, rank, or silence)
// is rejected with an Error frame, logged, and closed, and waiting goes on until the deadline.
//
// A Ring is used by one thread at a time and owns one io thread (for next); prev lives on the
// caller's io thread, which must outlive the Ring. After any collective fails the ring is broken
// (both connections closed, so the neighbours fail fast too) and a new one must be formed.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "collectives/form_control.h"
#include "core/status.h"
#include "net/connection.h"
#include "net/identity.h"
#include "net/io_thread.h"

namespace tributary::collectives {

struct RingMember {
  uint32_t rank = 0;
  std::string host;  // where this rank's listener accepts ring connections
  uint16_t port = 0;
  std::string name;  // for logs and errors only
  net::PublicKey public_key{};  // with an identity, the handshake must prove this key (all zero: any)
  // Set when this member cannot accept connections (NAT): its prev reaches it, and it reaches
  // its prev, through the relay at relay_host:relay_port, pairing on this token.
  std::string relay_token;
  std::string relay_host;
  uint16_t relay_port = 0;
};

class Ring {
 public:
  // `members` must be ordered by rank (members[i].rank == i). World size 1 is valid and holds no
  // connections. Blocking; must not run on `io`'s thread. Fails with DeadlineExceeded if the ring
  // is not up by `deadline`, FailedPrecondition if a neighbour rejected our Hello.
  //
  // With an `identity`, every ring connection first runs the authenticated handshake
  // (net/secure_channel.h) and then carries only encrypted records; next must prove
  // members[next].public_key and prev members[prev].public_key. `attempt` tells retries of one
  // round apart, so a connection left over from a failed attempt is rejected. With a `control`,
  // formation gives up (Aborted) once control->cancelled() is true, and a failure names the
  // neighbour it waited for in control->blamed_rank.
  static Result<std::unique_ptr<Ring>> Form(net::IoThread& io, net::Listener& listener,
                                            uint32_t my_rank,
                                            const std::vector<RingMember>& members,
                                            const std::string& job_id, uint64_t round,
                                            uint32_t attempt, const net::Identity* identity,
                                            Deadline deadline, FormControl* control = nullptr);
  // Plaintext, attempt 0 (trusted settings, tests and benchmarks).
  static Result<std::unique_ptr<Ring>> Form(net::IoThread& io, net::Listener& listener,
                                            uint32_t my_rank,
                                            const std::vector<RingMember>& members,
                                            const std::string& job_id, uint64_t round,
                                            Deadline deadline) {
    return Form(io, listener, my_rank, members, job_id, round, 0, nullptr, deadline);
  }
  // A ring over connections that already exist (a Mesh's: see mesh_communicator.h), so one
  // formation serves both the ring and the direct path. The Ring shares the connections: its
  // Abort and Interrupt close them. `next` and `prev` may be one connection (world 2: it carries
  // both directions). No io thread of its own; the connections keep theirs.
  static std::unique_ptr<Ring> Over(uint32_t my_rank, std::vector<RingMember> members,
                                    std::string job_id, uint64_t round, uint32_t attempt,
                                    const net::Identity* identity,
                                    std::shared_ptr<net::Connection> next,
                                    std::shared_ptr<net::Connection> prev);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  uint32_t rank() const { return rank_; }
  uint32_t world() const { return static_cast<uint32_t>(members_.size()); }
  uint64_t round() const { return round_; }
  uint32_t attempt() const { return attempt_; }
  const net::Identity* identity() const { return identity_; }
  const std::string& job_id() const { return job_id_; }
  const RingMember& self_member() const { return members_[rank_]; }
  const RingMember& next_member() const { return members_[(rank_ + 1) % world()]; }
  const RingMember& prev_member() const { return members_[(rank_ + world() - 1) % world()]; }

  // Only when world() > 1.
  net::Connection& next() { return *next_; }
  net::Connection& prev() { return *prev_; }
  // "rank 2 'peer-2' at 127.0.0.1:40312" (the connection's remote address), for errors.
  std::string DescribeNext() const;
  std::string DescribePrev() const;

  // Bytes on both connections since Form, frames included.
  uint64_t bytes_sent() const;
  uint64_t bytes_received() const;

  // Closes both connections and returns once no queued send can still read caller memory.
  // Idempotent. Afterwards broken() is true and every collective on this ring fails.
  void Abort();
  bool broken() const { return broken_; }
  // Thread-safe, callable while another thread is inside a collective on this ring: closes
  // both connections so that collective fails at once (Unavailable). Call Abort afterwards,
  // from the ring's own thread, before the caller's buffers go away.
  void Interrupt();

 private:
  Ring(uint32_t rank, std::vector<RingMember> members, std::string job_id, uint64_t round,
       uint32_t attempt, const net::Identity* identity);

  uint32_t rank_;
  std::vector<RingMember> members_;
  std::string job_id_;
  uint64_t round_;
  uint32_t attempt_ = 0;
  const net::Identity* identity_ = nullptr;  // not owned; outlives Form
  // next_ lives on an io thread of the ring's own, so writing to next and reading from prev (the
  // two kernel copies of every byte) proceed in parallel; prev_ lives on the caller's io thread.
  std::unique_ptr<net::IoThread> send_io_;
  std::shared_ptr<net::Connection> next_;
  std::shared_ptr<net::Connection> prev_;
  std::atomic<bool> broken_{false};  // read by other threads (a peer deciding whether to re-form)
};

}  // namespace tributary::collectives
