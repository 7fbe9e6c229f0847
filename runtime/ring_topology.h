// Ring order from measured links, agreed through the coordinator (issue 6, "Topology").
//
// Design: the coordinator is the single source of the order, so members can never disagree.
//   1. When its LinkTable lacks (or holds stale) links between a ring job's members, the
//      coordinator sets RoundStart.probe_links (attempt 0 only, at most every kProbeEveryRounds).
//   2. Every member then runs collectives::MeasureLinks (its own short-lived mesh, beside the
//      round's ring) and reports its outgoing links in RoundReport.links.
//   3. From then on the coordinator orders RoundStart.members by collectives::OrderRing
//      (asymmetric TSP) over those links; until every link is known it keeps shard order.
// A failed probe costs only the order (the peer logs it and reports no links); links are keyed
// by public key, so they survive reconnects and follow members across memberships.
#pragma once

#include <cstdint>
#include <optional>
#include <functional>
#include <string>
#include <vector>

#include "collectives/topology.h"
#include "core/clock.h"
#include "proto/tributary.pb.h"

namespace tributary::runtime {

// Coordinator side: one per job.
class RingTopology {
 public:
  static constexpr uint64_t kProbeEveryRounds = 5;        // backoff between probe requests
  static constexpr auto kMaxLinkAge = std::chrono::minutes(30);

  // `ring` is false for jobs that average over the butterfly (order does not matter there).
  struct Plan {
    std::vector<uint32_t> order;  // members[order[k]] gets rank k
    bool probe = false;           // set RoundStart.probe_links
  };
  // `keys[i]`: raw public key of the i-th member in the default (shard) order; `relayed`: some
  // member is relay-only (a probe mesh cannot reach it, so none is asked for).
  Plan PlanAttempt(const std::vector<std::string>& keys, bool ring, bool relayed, uint64_t round,
                   uint32_t attempt, Clock::time_point now = Clock::now());
  // Records the links in a member's report (keyed by its raw public key).
  void OnReport(const std::string& from_key, const v1::RoundReport& report,
                Clock::time_point now = Clock::now());

  const collectives::LinkTable& links() const { return links_; }

 private:
  collectives::LinkTable links_;
  std::optional<uint64_t> last_probe_round_;
  double payload_bytes_ = 64.0 * (1 << 20);  // what the order is tuned for, from reports
};

// Whether a job averages over the ring (fp32 + mean), as the peer decides it.
bool JobUsesRing(const v1::JobSpec& spec);

// Peer side: when `start.probe_links()`, measures this member's outgoing links (members as in
// `start`, relay fields resolved) and returns them for RoundReport.links; on failure logs why and
// returns nothing. Bounded by `deadline`; gives up as soon as `cancelled()` is true.
std::vector<v1::LinkProbe> ProbeLinksIfAsked(const v1::RoundStart& start, net::IoThread& io,
                                             net::Listener& listener,
                                             const std::vector<collectives::RingMember>& members,
                                             const std::string& job_id,
                                             const net::Identity* identity, Deadline deadline,
                                             std::function<bool()> cancelled = {});

}  // namespace tributary::runtime
