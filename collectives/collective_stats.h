// What every collective reports: bytes on the wire, wall time and, when it failed because of a
// peer, which peer. Shared by ButterflyAllreduce, Mesh and the Communicator implementations.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace tributary::collectives {

// The peer a failed collective blames. Seen directly (its connection broke, it sent something
// invalid, it stayed silent past the deadline) or, with `reported_by`, as another member's claim
// relayed to us; a claim is hearsay (the reporter may lie), so whoever decides whom to exclude
// should weigh it against the other members' reports.
struct PeerFailure {
  uint32_t rank = 0;
  std::string name;
  std::optional<uint32_t> reported_by;

  // "rank 3 'peer-3'" or "rank 3 'peer-3' (reported by rank 1)"
  std::string ToString() const {
    std::string out = "rank " + std::to_string(rank) + " '" + name + "'";
    if (reported_by) out += " (reported by rank " + std::to_string(*reported_by) + ")";
    return out;
  }
  bool operator==(const PeerFailure&) const = default;
};

struct CollectiveStats {
  uint64_t bytes_sent = 0;  // on this rank's connections during the call, frames included
  uint64_t bytes_received = 0;
  double seconds = 0;
  // Set only for a failed call that a peer caused (not for our own bad input or arguments).
  std::optional<PeerFailure> failed_peer;
};

}  // namespace tributary::collectives
