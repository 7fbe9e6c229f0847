#include "runtime/ring_topology.h"

#include <algorithm>
#include <numeric>

#include <spdlog/spdlog.h>

namespace tributary::runtime {

RingTopology::Plan RingTopology::PlanAttempt(const std::vector<std::string>& keys, bool ring,
                                             bool relayed, uint64_t round, uint32_t attempt,
                                             Clock::time_point now) {
  Plan plan;
  plan.order.resize(keys.size());
  std::iota(plan.order.begin(), plan.order.end(), 0u);
  if (!ring || keys.size() < 3) return plan;  // every ring of 2 is the same ring
  links_.Expire(kMaxLinkAge, now);
  if (auto order = collectives::OrderFromTable(links_, keys, payload_bytes_, kMaxLinkAge, now)) {
    plan.order = std::move(*order);
    return plan;
  }
  // Links missing or stale: ask for a probe (not on retries, which should be quick, and not
  // more often than every kProbeEveryRounds rounds, so a probe that keeps failing costs little).
  // Every group of a grouped round may probe in the round that probes.
  if (!relayed && attempt == 0 &&
      (!last_probe_round_ || round == *last_probe_round_ || round >= *last_probe_round_ + kProbeEveryRounds)) {
    plan.probe = true;
    last_probe_round_ = round;
  }
  return plan;
}

void RingTopology::OnReport(const std::string& from_key, const v1::RoundReport& report,
                            Clock::time_point now) {
  // Advisory numbers from a peer: bounded and checked, nonsense is dropped (LinkTable::Record).
  if (report.links_size() > 4096) return;
  for (const v1::LinkProbe& link : report.links()) {
    if (link.to_public_key().size() != 32) continue;
    links_.Record(from_key, link.to_public_key(),
                  collectives::LinkEstimate{link.rtt_seconds(), link.bytes_per_second()}, now);
  }
  // The ring sends 2(N-1)/N of the tensor; tune the order for about the tensor size.
  if (report.bytes_sent() > 0) payload_bytes_ = static_cast<double>(report.bytes_sent()) / 2;
}

bool JobUsesRing(const v1::JobSpec& spec) {
  return (spec.codec().empty() || spec.codec() == "fp32") &&
         (spec.aggregator().empty() || spec.aggregator() == "mean");
}

std::vector<v1::LinkProbe> ProbeLinksIfAsked(const v1::RoundStart& start, net::IoThread& io,
                                             net::Listener& listener,
                                             const std::vector<collectives::RingMember>& members,
                                             const std::string& job_id,
                                             const net::Identity* identity, Deadline deadline,
                                             std::function<bool()> cancelled) {
  std::vector<v1::LinkProbe> out;
  if (!start.probe_links() || members.size() < 2 || start.your_rank() >= members.size()) return out;
  collectives::ProbeOptions options;
  // Each of the N-1 steps streams for options.seconds; leave room for formation and pings.
  options.deadline = std::min(
      deadline, DeadlineAfter(Millis(static_cast<long>(
                    10000 + 1000 * (options.seconds + 1) * static_cast<double>(members.size())))));
  options.cancelled = std::move(cancelled);
  const auto started = Clock::now();
  auto row = collectives::MeasureLinks(io, listener, start.your_rank(), members, job_id,
                                       start.round(), start.attempt(), identity, options);
  if (!row.ok()) {
    spdlog::warn("round {}: link probe failed ({}); the ring keeps its order",
                 start.round(), row.status().ToString());
    return out;
  }
  for (size_t j = 0; j < row->size(); ++j) {
    if (j == start.your_rank()) continue;
    v1::LinkProbe& p = out.emplace_back();
    p.set_to_public_key(net::KeyToBytes(members[j].public_key));
    p.set_rtt_seconds((*row)[j].rtt_seconds);
    p.set_bytes_per_second((*row)[j].bytes_per_second);
  }
  spdlog::info("round {}: probed {} links in {:.2f} s", start.round(), out.size(), SecondsSince(started));
  return out;
}

}  // namespace tributary::runtime
