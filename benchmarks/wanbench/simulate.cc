#include "benchmarks/wanbench/simulate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "benchmarks/common/bench_stats.h"
#include "benchmarks/wanbench/report.h"
#include "collectives/codec/codec.h"

namespace tributary::wanbench::sim {
namespace {

constexpr double kNever = -std::numeric_limits<double>::infinity();

// The link between projected peers a and b: scenario peer (a mod n) → (b mod n). Two projected
// peers of the same scenario peer have no link in the scenario; they get that peer's fastest
// outgoing rate (capped by its fastest incoming one), its mean delay and its worst loss.
wan::LinkParams LinkFor(const wan::WanConfig& net, int a, int b) {
  const int n = net.num_peers, ca = a % n, cb = b % n;
  if (ca != cb) return net.link(ca, cb);
  wan::LinkParams l;
  double up = 0, down = 0, delay = 0;
  bool up_unlimited = false, down_unlimited = false;
  for (int d = 0; d < n; ++d) {
    if (d == ca) continue;
    const auto& out = net.link(ca, d);
    const auto& in = net.link(d, ca);
    up_unlimited |= out.rate_mbit == 0;
    down_unlimited |= in.rate_mbit == 0;
    up = std::max(up, out.rate_mbit);
    down = std::max(down, in.rate_mbit);
    delay += (out.delay_ms + in.delay_ms) / 2;
    l.loss = std::max(l.loss, out.loss);
  }
  l.delay_ms = delay / (n - 1);
  if (up_unlimited && down_unlimited) {
    l.rate_mbit = 0;
  } else {
    l.rate_mbit = up_unlimited ? down : down_unlimited ? up : std::min(up, down);
  }
  return l;
}

// One TCP connection's congestion window between messages.
struct Connection {
  double cwnd = 0;               // bytes; 0 = not yet used (starts at the initial window)
  double last_active = kNever;   // when its last message ended
};

class Network {
 public:
  Network(const Inputs& in, int peers) : in_(in), peers_(peers) {}

  // Sends `bytes` from projected peer a to b starting at `now`; returns the seconds until the
  // last byte has arrived. The connection is keyed by its class of link (the pair of scenario
  // peers), so all ring edges of one class share one history, as they share one schedule.
  double Send(int a, int b, double bytes, double now, int channel) {
    const int n = in_.network.num_peers;
    const int ca = a % n, cb = b % n;
    const wan::LinkParams link = LinkFor(in_.network, a, b);
    const wan::LinkParams back = LinkFor(in_.network, b, a);
    Connection& c = connections_[{channel, ca, cb}];
    const TcpModel& t = in_.tcp;
    const double iw = t.initial_window_segments * t.mss_bytes;
    const double rate_mbit = link.rate_mbit > 0 ? link.rate_mbit : t.unshaped_rate_mbit;
    const double rate = rate_mbit * 1e6 / 8 * (t.mss_bytes / t.packet_bytes) * (1 - link.loss);
    const double rtt = (link.delay_ms + back.delay_ms) / 1000;
    const double buffer = static_cast<double>(in_.network.tcp_buffer_bytes > 0 ? in_.network.tcp_buffer_bytes
                                                                                 : t.default_send_buffer);
    const double cap = std::max(iw, t.window_share_of_buffer * buffer);
    if (c.cwnd == 0) c.cwnd = iw;
    if (t.slow_start_after_idle && c.last_active != kNever) {
      // Linux tcp_cwnd_restart: halve per RTO of idle time, not below the initial window.
      const double rto = rtt + t.rto_min_s;
      double idle = now - c.last_active;
      while ((idle -= rto) > 0 && c.cwnd > iw) c.cwnd = std::max(iw, c.cwnd / 2);
    }
    double remaining = bytes, elapsed = 0;
    while (remaining > 0) {
      if (c.cwnd / rtt >= rate || rtt == 0) {  // the window covers the pipe: stream at the rate
        elapsed += remaining / rate;
        remaining = 0;
        break;
      }
      const double window = std::min(c.cwnd, remaining);
      remaining -= window;
      if (remaining > 0) {
        elapsed += rtt;  // wait for the window's ACKs
      } else {
        elapsed += window / rate;
      }
      // Slow start: every ACKed byte grows the window while the window is what limits us.
      if (window >= c.cwnd / 2) c.cwnd = std::min(cap, c.cwnd + window);
    }
    elapsed += link.delay_ms / 1000;
    c.last_active = now + elapsed;
    return elapsed;
  }

  // For fast-forwarding through repeats: the windows, and moving every connection's clock.
  std::vector<double> Windows() const {
    std::vector<double> w;
    for (const auto& [key, c] : connections_) w.push_back(c.cwnd);
    return w;
  }
  void Shift(double dt) {
    for (auto& [key, c] : connections_) {
      if (c.last_active != kNever) c.last_active += dt;
    }
  }

 private:
  const Inputs& in_;
  int peers_;
  std::map<std::tuple<int, int, int>, Connection> connections_;
};

int IntPow(int base, int exp) {
  int64_t r = 1;
  for (int i = 0; i < exp; ++i) r = std::min<int64_t>(r * base, int64_t{1} << 30);
  return static_cast<int>(r);
}

// The members of one representative group per distinct class pattern at stage s: peers whose
// base-g digits other than digit s are those of `first`.
std::vector<std::vector<int>> StageGroups(int peers, int g, int stage, int classes) {
  const int stride = IntPow(g, stage);
  std::vector<std::vector<int>> groups;
  std::set<std::vector<int>> patterns;
  // Groups are identified by their lowest member; a handful is enough to see every pattern of
  // scenario peers that occurs (they repeat with period lcm(classes, ...)).
  for (int first = 0; first < peers && groups.size() < 64; ++first) {
    if ((first / stride) % g != 0) continue;
    std::vector<int> members;
    for (int m = 0; m < g; ++m) {
      const int64_t k = first + int64_t{m} * stride;
      if (k >= peers) break;
      members.push_back(static_cast<int>(k));
    }
    if (members.size() < 2) continue;
    std::vector<int> pattern;
    for (int k : members) pattern.push_back(k % classes);
    if (patterns.insert(pattern).second) groups.push_back(std::move(members));
  }
  return groups;
}

uint64_t ShardPayloadBytes(const collectives::codec::Codec& codec, uint64_t numel, int g, int j) {
  const uint64_t base = numel / static_cast<uint64_t>(g), extra = numel % static_cast<uint64_t>(g);
  const uint64_t shard = base + (static_cast<uint64_t>(j) < extra ? 1 : 0);
  if (shard == 0) return 0;
  auto bytes = codec.MaxPayloadBytes(shard);
  return bytes.ok() ? *bytes : 4 * shard;
}

struct AllreduceCost {
  double seconds = 0;
  double bytes_per_peer = 0;
};

class Simulator {
 public:
  Simulator(const Inputs& in, const SystemModel& sys, int peers, int g,
            const collectives::codec::Codec* codec)
      : in_(in), sys_(sys), peers_(peers), g_(g), codec_(codec), net_(in, peers) {
    stages_ = 1;
    if (sys.algorithm != Algorithm::kGlooRing) {
      int64_t covered = g;
      while (covered < peers) {
        covered *= g;
        ++stages_;
      }
    }
  }

  int stages() const { return stages_; }
  Network& network() { return net_; }

  AllreduceCost Allreduce(double now) {
    AllreduceCost cost;
    const double fp32 = 4.0 * static_cast<double>(in_.numel);
    const int classes = in_.network.num_peers;
    if (sys_.algorithm == Algorithm::kGlooRing) {
      // Gloo's ring: N−1 phases, each passing the whole buffer to the right neighbour.
      const auto edges = RingEdges(Iota(peers_), classes);
      Phases(peers_ - 1, cost.seconds, [&](double at) {
        double slowest = 0;
        for (const auto& [a, b] : edges) slowest = std::max(slowest, net_.Send(a, b, fp32, now + at, 1));
        return slowest;
      });
      cost.bytes_per_peer = fp32 * (peers_ - 1);
      return cost;
    }
    for (int stage = 0; stage < stages_; ++stage) {
      double stage_seconds = 0;
      for (const auto& members : StageGroups(peers_, g_, stage, classes)) {
        const int size = static_cast<int>(members.size());
        double t = 0;
        if (sys_.algorithm == Algorithm::kRing) {
          const double chunk = fp32 / size;
          const auto edges = RingEdges(members, classes);
          Phases(2 * (size - 1), t, [&](double at) {
            double slowest = 0;
            for (const auto& [a, b] : edges) slowest = std::max(slowest, net_.Send(a, b, chunk, now + cost.seconds + at, 2));
            return slowest;
          });
          if (stage_seconds == 0) cost.bytes_per_peer += 2.0 * (size - 1) / size * fp32;
        } else {
          // Butterfly: all pairs at once, reduce-scatter then all-gather. Pairs of the same
          // two scenario peers share one history, so one representative pair each is sent.
          const double shard = static_cast<double>(ShardPayloadBytes(*codec_, in_.numel, size, 0));
          const double bytes_out = shard * (size - 1);
          std::map<int, std::vector<int>> by_class;
          for (int k : members) {
            auto& reps = by_class[k % classes];
            if (reps.size() < 2) reps.push_back(k);
          }
          for (int phase = 0; phase < 2; ++phase) {
            double slowest = 0;
            for (const auto& [ca, from] : by_class) {
              for (const auto& [cb, to] : by_class) {
                if (ca == cb && from.size() < 2) continue;
                const int a = from[0], b = ca == cb ? from[1] : to[0];
                double d = net_.Send(a, b, shard, now + cost.seconds + t, 3);
                if (in_.shared_uplink) {
                  const wan::LinkParams l = LinkFor(in_.network, a, b);
                  const double rate_mbit = l.rate_mbit > 0 ? l.rate_mbit : in_.tcp.unshaped_rate_mbit;
                  const double rate = rate_mbit * 1e6 / 8 * (in_.tcp.mss_bytes / in_.tcp.packet_bytes);
                  d = std::max(d, bytes_out / rate + l.delay_ms / 1000);
                }
                slowest = std::max(slowest, d);
              }
            }
            t += slowest;
          }
          if (stage_seconds == 0) cost.bytes_per_peer += 2 * bytes_out;
        }
        stage_seconds = std::max(stage_seconds, t);
      }
      cost.seconds += stage_seconds;
    }
    return cost;
  }

 private:
  // Runs `count` lock-step phases from time t (advancing it). Once a phase takes exactly as long
  // as the one before and leaves every window as it found it, the state repeats: the remaining
  // phases are that phase again, so they are added at once (10,000-peer rings stay fast).
  template <typename Phase>
  void Phases(int count, double& t, Phase&& phase) {
    double previous = -1;
    for (int k = 0; k < count; ++k) {
      const std::vector<double> before = net_.Windows();
      const double d = phase(t);
      t += d;
      if (d == previous && net_.Windows() == before) {
        const double rest = static_cast<double>(count - 1 - k) * d;
        t += rest;
        net_.Shift(rest);
        return;
      }
      previous = d;
    }
  }

  static std::vector<int> Iota(int n) {
    std::vector<int> v(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
    return v;
  }
  // Ring edges of these members in order, one per distinct pair of scenario peers.
  static std::vector<std::pair<int, int>> RingEdges(const std::vector<int>& members, int classes) {
    std::vector<std::pair<int, int>> edges;
    std::set<std::pair<int, int>> seen;
    for (size_t i = 0; i < members.size(); ++i) {
      const int a = members[i], b = members[(i + 1) % members.size()];
      if (seen.insert({a % classes, b % classes}).second) edges.emplace_back(a, b);
    }
    return edges;
  }

  const Inputs& in_;
  const SystemModel& sys_;
  int peers_, g_, stages_ = 1;
  const collectives::codec::Codec* codec_;
  Network net_;
};

using bench::Median;

}  // namespace

Result<SystemModel> ModelFor(const BenchScenario& scenario, const std::string& full_name) {
  SystemModel m;
  m.name = full_name;
  std::string name = full_name, codec;
  if (const auto plus = full_name.find('+'); plus != std::string::npos) {
    name = full_name.substr(0, plus);
    codec = full_name.substr(plus + 1);
  }
  if (name == "tributary-ddp" || name == "gloo-ddp") {
    m.diloco = false;
    m.steps_per_round = scenario.ddp_steps_per_round;
    m.algorithm = name == "gloo-ddp" ? Algorithm::kGlooRing : Algorithm::kRing;
  } else if (name == "tributary-diloco" || name.rfind("tributary-diloco-h", 0) == 0) {
    m.diloco = true;
    m.steps_per_round = scenario.h;
    if (name != "tributary-diloco") {
      const std::string digits = name.substr(std::string("tributary-diloco-h").size());
      if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos ||
          std::stoul(digits) == 0) {
        return InvalidArgument("simulate: bad system name '" + full_name + "'");
      }
      m.steps_per_round = static_cast<uint32_t>(std::stoul(digits));
    }
    m.algorithm = Algorithm::kRing;
  } else {
    return InvalidArgument("simulate: unknown system '" + full_name +
                           "' (known: tributary-ddp, tributary-diloco, tributary-diloco-h<N>, gloo-ddp, "
                           "each Tributary one with +<codec>)");
  }
  if (!codec.empty()) {
    if (name == "gloo-ddp") return InvalidArgument("simulate: gloo-ddp has no codecs ('" + full_name + "')");
    auto made = collectives::codec::MakeCodec(codec);
    if (!made.ok()) return InvalidArgument("simulate: '" + full_name + "': " + made.status().message());
    m.codec = (*made)->name();
    if (m.codec != "fp32") m.algorithm = Algorithm::kButterfly;
  }
  return m;
}

Result<Projection> Project(const Inputs& in, const SystemModel& sys, int peers, int group_size) {
  if (peers < 2) return InvalidArgument(fmt::format("simulate: {} peers; at least 2", peers));
  if (group_size == 0 || group_size > peers) group_size = peers;
  if (group_size < 2) return InvalidArgument(fmt::format("simulate: group size {}; at least 2", group_size));
  if (sys.algorithm == Algorithm::kGlooRing) group_size = peers;  // Gloo has no groups
  if (!(sys.compute_s_per_step > 0)) return InvalidArgument("simulate: " + sys.name + " has no compute time per step");
  if (in.numel == 0) return InvalidArgument("simulate: the model size (parameters) is unknown");
  if (in.network.num_peers < 1 || in.network.links.size() != static_cast<size_t>(in.network.num_peers) * in.network.num_peers) {
    return InvalidArgument("simulate: the scenario has no link matrix");
  }
  if (sys.steps_per_round == 0 || in.steps_per_peer % sys.steps_per_round != 0) {
    return InvalidArgument(fmt::format("simulate: {} steps per round do not divide the budget of {} steps",
                                       sys.steps_per_round, in.steps_per_peer));
  }
  std::unique_ptr<collectives::codec::Codec> codec;
  if (sys.algorithm == Algorithm::kButterfly) {
    auto made = collectives::codec::MakeCodec(sys.codec);
    if (!made.ok()) return made.status();
    codec = std::move(*made);
  }
  Simulator sim(in, sys, peers, group_size, codec.get());
  Projection p;
  p.system = sys.name;
  p.peers = peers;
  p.group_size = group_size;
  p.stages = sim.stages();
  p.rounds = in.steps_per_peer / sys.steps_per_round;
  // Every peer computes at its own speed; an all-reduce starts when the slowest is done.
  double slowest_step = sys.compute_s_per_step, mean_step = sys.compute_s_per_step;
  if (!sys.peer_compute_s_per_step.empty()) {
    const auto& v = sys.peer_compute_s_per_step;
    slowest_step = mean_step = 0;
    for (int k = 0; k < peers; ++k) {
      const double c = v[static_cast<size_t>(k) % v.size()];
      slowest_step = std::max(slowest_step, c);
      mean_step += c / peers;
    }
  }
  const uint32_t syncs = sys.diloco ? 1 : sys.steps_per_round;
  const uint32_t steps_per_sync = sys.diloco ? sys.steps_per_round : 1;
  double t = 0, allreduce = 0, compute = 0, bytes = 0;
  // Fast-forward: a sync (or a round) that repeats the previous one exactly, windows included,
  // repeats for good.
  Network& net = sim.network();
  double previous_round = -1;
  for (uint64_t r = 0; r < p.rounds; ++r) {
    const std::vector<double> round_windows = net.Windows();
    const double round_start = t, round_allreduce = allreduce, round_bytes = bytes;
    double previous_sync = -1;
    for (uint32_t k = 0; k < syncs; ++k) {
      const std::vector<double> windows = net.Windows();
      t += steps_per_sync * slowest_step;
      compute += steps_per_sync * mean_step;
      const AllreduceCost c = sim.Allreduce(t);
      t += c.seconds;
      allreduce += c.seconds;
      bytes += c.bytes_per_peer;
      if (c.seconds == previous_sync && net.Windows() == windows) {
        const double rest = static_cast<double>(syncs - 1 - k);
        t += rest * (steps_per_sync * slowest_step + c.seconds);
        net.Shift(rest * (steps_per_sync * slowest_step + c.seconds));
        compute += rest * steps_per_sync * mean_step;
        allreduce += rest * c.seconds;
        bytes += rest * c.bytes_per_peer;
        break;
      }
      previous_sync = c.seconds;
    }
    t += sys.round_overhead_s;
    const double round_seconds = t - round_start;
    if (round_seconds == previous_round && net.Windows() == round_windows) {
      const double rest = static_cast<double>(p.rounds - 1 - r);
      t += rest * round_seconds;
      net.Shift(rest * round_seconds);
      compute += rest * syncs * steps_per_sync * mean_step;
      allreduce += rest * (allreduce - round_allreduce);
      bytes += rest * (bytes - round_bytes);
      break;
    }
    previous_round = round_seconds;
  }
  p.train_s = t;
  p.round_s = t / static_cast<double>(p.rounds);
  p.allreduce_s_per_round = allreduce / static_cast<double>(p.rounds);
  p.compute_utilisation = compute / t;
  p.tokens_per_s = static_cast<double>(in.steps_per_peer * in.tokens_per_step) * peers / t;
  p.payload_bytes_per_peer = bytes;
  p.byte_ratio = bytes > 0 && sys.algorithm == Algorithm::kButterfly
                     ? (codec ? static_cast<double>(ShardPayloadBytes(*codec, in.numel, group_size, 0)) /
                                    (4.0 * static_cast<double>(in.numel / static_cast<uint64_t>(group_size)))
                              : 1)
                     : 1;
  return p;
}

Result<RunCalibration> CalibrateFromRun(const BenchScenario& scenario, const nlohmann::json& run) {
  RunCalibration cal;
  cal.inputs.network = scenario.network;
  cal.inputs.tokens_per_step = scenario.tokens_per_step();
  cal.inputs.steps_per_peer = scenario.steps_per_peer;
  if (!run.is_object() || !run.contains("systems") || !run["systems"].is_array()) {
    return InvalidArgument("simulate: the run JSON has no 'systems' array (is it a tributary-bench result?)");
  }
  if (run.contains("network") && run["network"].value("peers", 0) != scenario.peers()) {
    return InvalidArgument(fmt::format("simulate: the run had {} peers, the scenario has {}",
                                       run["network"].value("peers", 0), scenario.peers()));
  }
  const int n = scenario.peers();
  double tributary_ddp_overhead = -1;
  for (const auto& s : run["systems"]) {
    if (!s.value("ok", false) || s.contains("fault")) continue;
    const std::string name = s.value("system", "");
    auto model = ModelFor(scenario, name);
    if (!model.ok()) continue;
    model->steps_per_round = s.value("steps_per_round", model->steps_per_round);
    model->compute_s_per_step = s.value("compute_s_per_step", 0.0);
    for (const auto& peer : s.value("peers", nlohmann::json::array())) {
      model->peer_compute_s_per_step.push_back(peer.value("compute_s", 0.0) / static_cast<double>(scenario.steps_per_peer));
    }
    std::vector<double> other;
    const auto& rounds = s["rounds"];
    for (size_t i = rounds.size() > 1 ? 1 : 0; i < rounds.size(); ++i) {
      other.push_back(rounds[i].value("wall_s", 0.0) - rounds[i].value("compute_s", 0.0) -
                      rounds[i].value("allreduce_s", 0.0));
    }
    model->round_overhead_s = std::max(0.0, Median(other));
    if (name == "tributary-ddp") tributary_ddp_overhead = model->round_overhead_s;
    // The gradient's size from what the processes sent (frames add < 0.1 %).
    const double app = s.value("app_bytes_per_peer", 0.0);
    const double steps = static_cast<double>(scenario.steps_per_peer);
    if (cal.inputs.numel == 0 && app > 0) {
      double fp32 = 0;
      if (name == "gloo-ddp") fp32 = app / steps / (n - 1);
      if (name == "tributary-ddp") fp32 = app / steps / (2.0 * (n - 1) / n);
      if (fp32 > 0) {
        cal.inputs.numel = static_cast<uint64_t>(std::llround(fp32 / 4));
        cal.notes.push_back(fmt::format("model size {} parameters, from the bytes {} sent", cal.inputs.numel, name));
      }
    }
    cal.systems.push_back(*model);
  }
  if (cal.inputs.numel == 0) {
    return InvalidArgument("simulate: the run has no completed DDP system to read the gradient size from");
  }
  // Gloo's ranks 1.. wait for rank 0's evaluation inside their next all-reduce, so its
  // measured overhead misses most of the evaluation; the same evaluation costs Tributary DDP
  // its whole "other" time.
  for (auto& m : cal.systems) {
    if (m.algorithm == Algorithm::kGlooRing && tributary_ddp_overhead >= 0) {
      m.round_overhead_s = tributary_ddp_overhead;
      cal.notes.push_back("gloo-ddp's per-round overhead (evaluation) taken from tributary-ddp");
    }
  }
  cal.reference_compute_s_per_step = run.value("reference_compute_s_per_step", 0.0);
  return cal;
}

Result<std::vector<ValidationRow>> Validate(const RunCalibration& cal, const nlohmann::json& run) {
  std::vector<ValidationRow> rows;
  for (const auto& m : cal.systems) {
    for (const auto& s : run["systems"]) {
      if (s.value("system", "") != m.name) continue;
      TRIB_ASSIGN_OR_RETURN(Projection p, Project(cal.inputs, m, cal.inputs.network.num_peers, 0));
      ValidationRow v;
      v.system = m.name;
      v.measured_train_s = s.value("train_s", 0.0);
      v.predicted_train_s = p.train_s;
      v.measured_allreduce_s = s.value("allreduce_s_per_round", 0.0);
      v.predicted_allreduce_s = p.allreduce_s_per_round;
      v.measured_bytes = s.value("app_bytes_per_peer", 0.0);
      v.predicted_bytes = p.payload_bytes_per_peer;
      rows.push_back(v);
    }
  }
  if (rows.empty()) return InvalidArgument("simulate: no completed system of the run can be modelled");
  return rows;
}

std::string ValidationTable(const std::vector<ValidationRow>& rows) {
  std::string out =
      "| system | train s measured | predicted | error | all-reduce s/round measured | predicted | error | "
      "bytes/peer measured | predicted | error |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& v : rows) {
    out += fmt::format("| {} | {:.1f} | {:.1f} | {:+.1f} % | {:.3f} | {:.3f} | {:+.1f} % | {} | {} | {:+.1f} % |\n",
                       v.system, v.measured_train_s, v.predicted_train_s, 100 * v.train_error(),
                       v.measured_allreduce_s, v.predicted_allreduce_s, 100 * v.allreduce_error(),
                       HumanBytes(v.measured_bytes), HumanBytes(v.predicted_bytes), 100 * v.bytes_error());
  }
  return out;
}

std::string ProjectionTable(const std::vector<Projection>& rows) {
  std::string out =
      "| peers | group | stages | system | rounds | round s | all-reduce s/round | compute util | tokens/s | "
      "tokens/s per peer | sent/peer |\n|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& p : rows) {
    out += fmt::format("| {} | {} | {} | {} | {} | {:.2f} | {:.3f} | {:.0f} % | {:.0f} | {:.0f} | {} |\n", p.peers,
                       p.group_size, p.stages, p.system, p.rounds, p.round_s, p.allreduce_s_per_round,
                       100 * p.compute_utilisation, p.tokens_per_s, p.tokens_per_s / p.peers,
                       HumanBytes(p.payload_bytes_per_peer));
  }
  return out;
}

nlohmann::json ToJson(const Projection& p) {
  return {{"system", p.system},
          {"peers", p.peers},
          {"group_size", p.group_size},
          {"stages", p.stages},
          {"rounds", p.rounds},
          {"train_s", p.train_s},
          {"round_s", p.round_s},
          {"allreduce_s_per_round", p.allreduce_s_per_round},
          {"compute_utilisation", p.compute_utilisation},
          {"tokens_per_s", p.tokens_per_s},
          {"payload_bytes_per_peer", p.payload_bytes_per_peer},
          {"codec_byte_ratio", p.byte_ratio}};
}

nlohmann::json ToJson(const ValidationRow& v) {
  return {{"system", v.system},
          {"measured_train_s", v.measured_train_s},
          {"predicted_train_s", v.predicted_train_s},
          {"train_error", v.train_error()},
          {"measured_allreduce_s_per_round", v.measured_allreduce_s},
          {"predicted_allreduce_s_per_round", v.predicted_allreduce_s},
          {"allreduce_error", v.allreduce_error()},
          {"measured_app_bytes_per_peer", v.measured_bytes},
          {"predicted_app_bytes_per_peer", v.predicted_bytes},
          {"bytes_error", v.bytes_error()}};
}

}  // namespace tributary::wanbench::sim
