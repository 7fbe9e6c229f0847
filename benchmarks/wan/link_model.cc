#include "benchmarks/wan/link_model.h"

#include <algorithm>
#include <cmath>

namespace tributary::wan {

LinkModel::LinkModel(const LinkParams& params, uint64_t seed) : rng_(seed) {
  Reconfigure(params);
}

void LinkModel::Reconfigure(const LinkParams& params) {
  params_ = params;
  ns_per_byte_ = params.rate_mbit > 0 ? 8.0 * 1e3 / params.rate_mbit : 0.0;
  delay_ns_ = static_cast<int64_t>(std::llround(params.delay_ms * 1e6));
}

void LinkModel::DrainSerialised(int64_t now_ns) {
  while (!backlog_.empty() && backlog_.front().done_ns <= now_ns) {
    backlog_bytes_ -= backlog_.front().bytes;
    backlog_.pop_front();
  }
}

bool LinkModel::QueueFull(uint32_t bytes) const {
  if (params_.queue_bytes > 0 && backlog_bytes_ + bytes > params_.queue_bytes) return true;
  if (params_.queue_packets > 0 &&
      static_cast<int64_t>(backlog_.size()) + 1 > params_.queue_packets) {
    return true;
  }
  return false;
}

int64_t LinkModel::JitterNs() {
  if (params_.jitter_ms <= 0) return 0;
  double ms = 0;
  if (params_.jitter_distribution == JitterDistribution::kNormal) {
    ms = std::normal_distribution<double>(0.0, params_.jitter_ms)(rng_);
  } else {
    ms = std::uniform_real_distribution<double>(-params_.jitter_ms, params_.jitter_ms)(rng_);
  }
  return static_cast<int64_t>(std::llround(ms * 1e6));
}

Admission LinkModel::Admit(int64_t now_ns, uint32_t bytes) {
  int64_t sent_ns = now_ns;  // when the last bit leaves the sender
  if (ns_per_byte_ > 0) {
    // A real link queues behind its serialiser and drops at the tail once the buffer is full.
    DrainSerialised(now_ns);
    if (QueueFull(bytes)) return {Verdict::kDropQueue, 0};
    const int64_t start_ns = std::max(now_ns, free_at_ns_);
    // Carry the sub-nanosecond remainder so that long runs match the rate exactly.
    const double serialise_ns = bytes * ns_per_byte_ + carry_ns_;
    const int64_t whole_ns = static_cast<int64_t>(serialise_ns);
    carry_ns_ = serialise_ns - static_cast<double>(whole_ns);
    free_at_ns_ = start_ns + whole_ns;
    sent_ns = free_at_ns_;
    backlog_.push_back({free_at_ns_, bytes});
    backlog_bytes_ += bytes;
  }
  // Loss happens on the wire, after the packet has used its share of the link.
  if (params_.loss > 0 && std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < params_.loss) {
    return {Verdict::kDropLoss, 0};
  }
  int64_t deliver_ns = std::max(sent_ns, sent_ns + delay_ns_ + JitterNs());
  if (!params_.allow_reorder) deliver_ns = std::max(deliver_ns, last_deliver_ns_);
  last_deliver_ns_ = std::max(last_deliver_ns_, deliver_ns);
  return {Verdict::kDeliver, deliver_ns};
}

}  // namespace tributary::wan
