// One directed emulated link (i→j) as a pure function of time and its own random stream:
// drop-tail queue, token-bucket serialisation, random loss, one-way delay and jitter.
// No I/O and no clock reads: the caller passes `now`, so tests drive it with any timeline.
// Not thread-safe; the emulator's event-loop thread owns every LinkModel.
#pragma once

#include <cstdint>
#include <deque>
#include <random>

namespace tributary::wan {

enum class JitterDistribution { kUniform, kNormal };

// Settings of one directed link. Zero means "off" for rate and both queue limits.
struct LinkParams {
  double delay_ms = 0;     // one-way propagation delay
  double jitter_ms = 0;    // uniform: delay ± jitter_ms; normal: standard deviation
  JitterDistribution jitter_distribution = JitterDistribution::kUniform;
  bool allow_reorder = false;  // false: jitter never lets a packet overtake an earlier one
  double rate_mbit = 0;    // serialisation rate in Mbit/s of IP bytes; 0 = unshaped
  double loss = 0;         // probability that a packet is lost on the wire, in [0, 1]
  int64_t queue_bytes = 0;    // drop-tail limit on bytes waiting for the serialiser; 0 = none
  int64_t queue_packets = 0;  // the same limit counted in packets; 0 = none

  bool operator==(const LinkParams&) const = default;
};

enum class Verdict { kDeliver, kDropQueue, kDropLoss };

struct Admission {
  Verdict verdict = Verdict::kDeliver;
  int64_t deliver_at_ns = 0;  // meaningful for kDeliver only
};

class LinkModel {
 public:
  LinkModel(const LinkParams& params, uint64_t seed);

  // Decides the fate of a packet of `bytes` IP bytes that enters the link at `now_ns`.
  // Calls must come with non-decreasing `now_ns`.
  Admission Admit(int64_t now_ns, uint32_t bytes);

  // New settings apply to packets admitted from now on; the backlog already queued stays.
  void Reconfigure(const LinkParams& params);

  const LinkParams& params() const { return params_; }
  int64_t backlog_bytes() const { return backlog_bytes_; }
  size_t backlog_packets() const { return backlog_.size(); }

 private:
  struct Queued {
    int64_t done_ns;  // when the serialiser finishes this packet
    uint32_t bytes;
  };

  void DrainSerialised(int64_t now_ns);
  bool QueueFull(uint32_t bytes) const;
  int64_t JitterNs();

  LinkParams params_;
  double ns_per_byte_ = 0;  // 0 when unshaped
  int64_t delay_ns_ = 0;
  std::mt19937_64 rng_;
  int64_t free_at_ns_ = 0;       // when the serialiser is idle again
  double carry_ns_ = 0;          // fraction of a nanosecond not yet added to free_at_ns_
  int64_t last_deliver_ns_ = 0;  // for the no-reordering clamp
  std::deque<Queued> backlog_;   // packets not yet fully serialised
  int64_t backlog_bytes_ = 0;
};

}  // namespace tributary::wan
