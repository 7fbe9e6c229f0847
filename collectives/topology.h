// Topology: link measurements between group members and the ring order they suggest.
//
//   LinkEstimate / LinkMatrix   RTT and bandwidth of every directed link i -> j.
//   PredictRingSeconds          the pipelined ring all-reduce (allreduce.h) over a given order:
//                                 2(N-1)/N * bytes / (slowest edge's bandwidth)
//                               + (N-1)/N * (sum of the ring's RTTs)   [2(N-1) one-way hops]
//   OrderRing                   the order minimising that prediction. The prediction is a
//                               bottleneck term plus a sum, so for every candidate bottleneck b
//                               it solves the asymmetric TSP on latencies over the edges of
//                               bandwidth >= b (collectives/tsp.h: exact up to `exact_limit`
//                               members, heuristic above) and keeps the best.
//   ProbeLinks / MeasureLinks   short probes over a mesh: in step s = 1..N-1 every rank probes
//                               rank+s while rank-s probes it (each rank sends to one and hears
//                               from one at a time, as in the ring), a few pings for RTT, then
//                               `probe_bytes` timed at the receiver for bandwidth.
//   LinkTable                   directed links between named members (e.g. public keys) with
//                               their age: what the coordinator keeps from the peers' reports to
//                               order RoundStart.members, and tells it which links are stale.
// Probe numbers are advisory: a peer can lie about its links, which costs speed, never
// correctness (every member still gets the same ring from the coordinator).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "collectives/mesh.h"
#include "collectives/tsp.h"
#include "core/clock.h"
#include "core/status.h"
#include "net/identity.h"
#include "net/io_thread.h"

namespace tributary::collectives {

struct LinkEstimate {
  double rtt_seconds = 0;
  double bytes_per_second = 0;  // 0: unknown
};

class LinkMatrix {
 public:
  LinkMatrix() = default;
  explicit LinkMatrix(size_t n) : n_(n), v_(n * n) {}
  size_t size() const { return n_; }
  LinkEstimate& at(size_t i, size_t j) { return v_[i * n_ + j]; }
  const LinkEstimate& at(size_t i, size_t j) const { return v_[i * n_ + j]; }

 private:
  size_t n_ = 0;
  std::vector<LinkEstimate> v_;
};

// Seconds the model above predicts for an all-reduce of `bytes` over the ring visiting `order`
// (a permutation of 0..n-1; order[k] sends to order[k+1]). +infinity if an edge has no bandwidth.
double PredictRingSeconds(const LinkMatrix& links, const std::vector<uint32_t>& order, double bytes);

struct RingOrder {
  std::vector<uint32_t> order;  // order[k] = the member at ring rank k; starts with 0
  double predicted_seconds = 0;
  bool exact = false;  // proven optimal for the model
};

// The best ring for `bytes`. InvalidArgument if some link i != j has no bandwidth estimate.
Result<RingOrder> OrderRing(const LinkMatrix& links, double bytes, size_t exact_limit = 12);

struct ProbeOptions {
  int pings = 3;  // RTT = the fastest of these round trips
  // Bandwidth: the sender streams segments for `seconds` or until `max_bytes`, whichever comes
  // first; the receiver times the second half of the arrivals, after TCP's slow start (which
  // takes ~7 RTTs to fill 100 Mbit/s at 100 ms, so short probes there should still last ~1 s).
  double seconds = 1.0;
  uint64_t max_bytes = 32ull << 20;
  uint64_t segment_bytes = 256 << 10;
  Deadline deadline = Deadline::max();
  // Polled while the probe mesh forms (see form_control.h): a probe the caller no longer needs
  // (the round was retried without a member) gives up instead of waiting for that member.
  std::function<bool()> cancelled;
};

// This rank's outgoing links (entry rank() is zero). Every rank of `mesh` must call it at once
// with the same options. Errors name the peer; a failure aborts the mesh.
Result<std::vector<LinkEstimate>> ProbeLinks(Mesh& mesh, const ProbeOptions& options);

// Forms a short-lived mesh of `members` and probes it (every member calls this at once). The
// mesh is formed for attempt `kProbeAttemptBit | attempt`, so it never collides with the ring or
// mesh of the round itself on the same listener.
inline constexpr uint32_t kProbeAttemptBit = 0x40000000u;
Result<std::vector<LinkEstimate>> MeasureLinks(net::IoThread& io, net::Listener& listener,
                                               uint32_t my_rank,
                                               const std::vector<MeshMember>& members,
                                               const std::string& job_id, uint64_t round,
                                               uint32_t attempt, const net::Identity* identity,
                                               const ProbeOptions& options);

class LinkTable {
 public:
  void Record(const std::string& from, const std::string& to, const LinkEstimate& link,
              Clock::time_point now = Clock::now());
  // The matrix over `ids` (in that order) if every directed link between them is known and no
  // older than `max_age`; nullopt otherwise.
  std::optional<LinkMatrix> Matrix(const std::vector<std::string>& ids, Clock::duration max_age,
                                   Clock::time_point now = Clock::now()) const;
  // True when some link between `ids` is missing or older than `max_age`: time to probe.
  bool Stale(const std::vector<std::string>& ids, Clock::duration max_age,
             Clock::time_point now = Clock::now()) const {
    return ids.size() > 1 && !Matrix(ids, max_age, now).has_value();
  }
  // Drops every link measured before `now - max_age` (bounded memory under churn).
  void Expire(Clock::duration max_age, Clock::time_point now = Clock::now());
  // Marks the links out of `from` as stale, e.g. when its observed bandwidth fell far below the
  // prediction (its links changed).
  void Invalidate(const std::string& from);
  size_t size() const { return links_.size(); }

 private:
  struct Entry {
    LinkEstimate link;
    Clock::time_point measured;
  };
  std::map<std::pair<std::string, std::string>, Entry> links_;
};

// The permutation of `ids` that OrderRing picks from `table`, or nullopt (keep the given order)
// when links are missing or stale or there are fewer than 3 members (every ring of 2 is the same).
std::optional<std::vector<uint32_t>> OrderFromTable(const LinkTable& table,
                                                    const std::vector<std::string>& ids,
                                                    double bytes, Clock::duration max_age,
                                                    Clock::time_point now = Clock::now());

}  // namespace tributary::collectives
