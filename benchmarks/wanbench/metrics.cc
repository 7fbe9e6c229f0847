#include "benchmarks/wanbench/metrics.h"

#include <algorithm>

#include "benchmarks/common/bench_stats.h"

namespace tributary::wanbench {
namespace {

// Cumulative bytes sent by every peer together at time t, interpolated between samples.
double WireAt(const std::vector<WireSample>& samples, double t) {
  auto total = [](const WireSample& s) {
    double sum = 0;
    for (uint64_t b : s.bytes_sent) sum += static_cast<double>(b);
    return sum;
  };
  if (samples.empty()) return 0;
  if (t <= samples.front().t) return total(samples.front());
  for (size_t i = 1; i < samples.size(); ++i) {
    if (samples[i].t >= t) {
      const double a = total(samples[i - 1]), b = total(samples[i]);
      const double span = samples[i].t - samples[i - 1].t;
      return span > 0 ? a + (b - a) * (t - samples[i - 1].t) / span : b;
    }
  }
  return total(samples.back());
}

using bench::Median;

template <typename F>
std::optional<double> Crossing(const SystemResult& r, double target, F x_of) {
  std::optional<std::pair<double, double>> prev;  // (x, loss)
  for (const auto& p : r.rounds) {
    if (!p.eval_loss) continue;
    const double x = x_of(p), loss = *p.eval_loss;
    if (loss <= target) {
      if (!prev) return x;
      const double span = prev->second - loss;
      return span > 0 ? prev->first + (x - prev->first) * (prev->second - target) / span : x;
    }
    prev = {x, loss};
  }
  return std::nullopt;
}

}  // namespace

void AttributeWireBytes(const std::vector<WireSample>& samples, SystemResult& r) {
  if (samples.empty() || r.peers.empty()) return;
  const double n = static_cast<double>(r.peers.size());
  double prev = WireAt(samples, 0.0);
  for (auto& p : r.rounds) {
    const double now = WireAt(samples, p.t_end);
    p.wire_bytes_per_peer = std::max(0.0, now - prev) / n;
    prev = now;
  }
  // Per-peer totals over the training window (set-up traffic before it is left out).
  const WireSample* first = &samples.front();
  for (const auto& s : samples) {
    if (s.t <= 0) first = &s;
  }
  const double end = r.rounds.empty() ? samples.back().t : r.rounds.back().t_end;
  const WireSample* last = &samples.back();
  for (const auto& s : samples) {
    if (s.t >= end) {
      last = &s;
      break;
    }
  }
  for (size_t i = 0; i < r.peers.size() && i < last->bytes_sent.size(); ++i) {
    const uint64_t a = i < first->bytes_sent.size() ? first->bytes_sent[i] : 0;
    r.peers[i].wire_bytes_sent = last->bytes_sent[i] >= a ? last->bytes_sent[i] - a : 0;
  }
}

void Finish(SystemResult& r) {
  uint64_t cum = 0;
  for (auto& p : r.rounds) {
    cum += p.tokens;
    p.cum_tokens = cum;
  }
  r.tokens = cum;
  if (!r.rounds.empty()) r.train_seconds = r.rounds.back().t_end;
  r.tokens_per_second = r.train_seconds > 0 ? static_cast<double>(r.tokens) / r.train_seconds : 0;
  const double n = r.peers.empty() ? 1.0 : static_cast<double>(r.peers.size());
  double compute = 0, comm = 0, app = 0, wire = 0;
  for (const auto& p : r.peers) {
    compute += p.compute_seconds;
    comm += p.comm_seconds;
    app += static_cast<double>(p.app_bytes_sent);
    wire += static_cast<double>(p.wire_bytes_sent);
  }
  r.compute_utilisation = r.train_seconds > 0 ? compute / n / r.train_seconds : 0;
  const double peer_steps = r.tokens_per_step ? static_cast<double>(r.tokens) / r.tokens_per_step : 0;
  r.compute_seconds_per_step = peer_steps > 0 ? compute / peer_steps : 0;
  r.comm_fraction = r.train_seconds > 0 ? comm / n / r.train_seconds : 0;
  r.allreduce_seconds_per_peer = comm / n;
  r.allreduce_seconds_per_round = r.rounds.empty() ? 0 : comm / n / static_cast<double>(r.rounds.size());
  r.app_bytes_per_peer = app / n;
  r.wire_bytes_per_peer = wire / n;
  r.final_eval_loss.reset();
  for (const auto& p : r.rounds) {
    if (p.eval_loss) r.final_eval_loss = p.eval_loss;
  }
}

double Normalise(std::vector<SystemResult>& results) {
  std::vector<double> speeds;
  for (const auto& r : results) {
    if (r.ok && r.compute_seconds_per_step > 0) speeds.push_back(r.compute_seconds_per_step);
  }
  const double reference = Median(speeds);
  for (auto& r : results) {
    if (r.peers.empty() || r.tokens_per_step == 0 || r.rounds.empty()) continue;
    const double steps_per_peer =
        static_cast<double>(r.tokens) / r.tokens_per_step / static_cast<double>(r.peers.size());
    const double compute_per_peer = r.compute_seconds_per_step * steps_per_peer;
    r.normalised_train_seconds = r.train_seconds - compute_per_peer + reference * steps_per_peer;
  }
  return reference;
}

FaultOutcome AssessFault(const SystemResult& r, int peer, double at) {
  FaultOutcome f;
  f.peer = peer;
  f.at = at;
  std::vector<double> before;
  std::optional<double> next_commit;
  for (const auto& p : r.rounds) {
    if (p.t_end <= at) {
      before.push_back(p.wall_seconds);
    } else if (!next_commit) {
      next_commit = p.t_end;
    }
  }
  if (!next_commit) {
    f.note = r.rounds.empty() || r.rounds.back().t_end < at ? "no round committed after the kill"
                                                             : "";
    return f;
  }
  f.recovered = true;
  f.recovery_s = *next_commit - at;
  // A round in progress at the kill would have needed a median round anyway; what is left
  // over is the stall.
  double prev_end = 0;
  for (const auto& p : r.rounds) {
    if (p.t_end <= at) prev_end = p.t_end;
  }
  const double expected_end = prev_end + Median(before.empty() ? std::vector<double>{0} : before);
  f.stall_s = std::max(0.0, *next_commit - std::max(expected_end, at));
  return f;
}

std::optional<double> TimeToLoss(const SystemResult& r, double target) {
  return Crossing(r, target, [](const RoundPoint& p) { return p.t_end; });
}

std::optional<double> TokensToLoss(const SystemResult& r, double target) {
  return Crossing(r, target, [](const RoundPoint& p) { return static_cast<double>(p.cum_tokens); });
}

nlohmann::json ToJson(const SystemResult& r) {
  auto opt = [](const std::optional<double>& v) -> nlohmann::json {
    return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
  };
  nlohmann::json rounds = nlohmann::json::array();
  for (const auto& p : r.rounds) {
    rounds.push_back({{"round", p.round},
                      {"t_end_s", p.t_end},
                      {"wall_s", p.wall_seconds},
                      {"peers", p.peers},
                      {"attempts", p.attempts},
                      {"tokens", p.tokens},
                      {"cum_tokens", p.cum_tokens},
                      {"train_loss", p.train_loss},
                      {"eval_loss", opt(p.eval_loss)},
                      {"compute_s", p.compute_seconds},
                      {"allreduce_s", p.comm_seconds},
                      {"app_bytes_per_peer", p.app_bytes_per_peer},
                      {"wire_bytes_per_peer", p.wire_bytes_per_peer}});
  }
  nlohmann::json peers = nlohmann::json::array();
  for (const auto& p : r.peers) {
    peers.push_back({{"compute_s", p.compute_seconds},
                     {"allreduce_s", p.comm_seconds},
                     {"app_bytes_sent", p.app_bytes_sent},
                     {"wire_bytes_sent", p.wire_bytes_sent},
                     {"process_cpu_s", p.process_cpu_seconds}});
  }
  nlohmann::json j = {{"system", r.name},
                      {"mode", r.mode},
                      {"steps_per_round", r.steps_per_round},
                      {"rounds_planned", r.rounds_planned},
                      {"ok", r.ok},
                      {"error", r.error},
                      {"setup_s", r.setup_seconds},
                      {"train_s", r.train_seconds},
                      {"tokens", r.tokens},
                      {"tokens_per_s", r.tokens_per_second},
                      {"compute_utilisation", r.compute_utilisation},
                      {"compute_s_per_step", r.compute_seconds_per_step},
                      {"normalised_train_s", r.normalised_train_seconds},
                      {"load_average_start", r.load_start},
                      {"load_average_end", r.load_end},
                      {"allreduce_fraction", r.comm_fraction},
                      {"allreduce_s_per_peer", r.allreduce_seconds_per_peer},
                      {"allreduce_s_per_round", r.allreduce_seconds_per_round},
                      {"app_bytes_per_peer", r.app_bytes_per_peer},
                      {"wire_bytes_per_peer", r.wire_bytes_per_peer},
                      {"final_eval_loss", opt(r.final_eval_loss)},
                      {"theta_identical_across_peers",
                       r.theta_identical ? nlohmann::json(*r.theta_identical) : nlohmann::json(nullptr)},
                      {"log_dir", r.log_dir},
                      {"peers", peers},
                      {"rounds", rounds}};
  if (r.fault) {
    j["fault"] = {{"kind", r.fault->kind},
                  {"peer", r.fault->peer},
                  {"at_s", r.fault->at},
                  {"recovered", r.fault->recovered},
                  {"recovery_s", opt(r.fault->recovery_s)},
                  {"stall_s", opt(r.fault->stall_s)},
                  {"note", r.fault->note}};
  }
  return j;
}

}  // namespace tributary::wanbench
