// `tributary-wanem`: the WAN emulator as a program.
//   tributary-wanem --peers 4 --preset continent       emulate until Ctrl-C / SIGTERM
//   tributary-wanem --scenario links.toml               the same from a scenario file
//   tributary-wanem --peers 2 --preset home --validate  measure RTT and iperf3, print, exit
//   tributary-wanem --check                             say whether this machine can run it
//   tributary-wanem --cleanup RUN_ID [--force]          remove a dead run's namespaces
//   tributary-wanem --sweep                             remove every dead run's namespaces
//   tributary-wanem --list                              list runs and whether their owner lives
#include <CLI/CLI.hpp>
#include <signal.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <optional>

#include "benchmarks/wan/netns.h"
#include "benchmarks/wan/probe.h"
#include "benchmarks/wan/wan_config.h"
#include "benchmarks/wan/wan_emulator.h"
#include "core/logging.h"

namespace tributary::wan {
namespace {

struct Flags {
  int peers = -1;
  std::string preset;
  std::string scenario;
  std::string subnet;
  int mtu = -1;
  int64_t seed = -1;
  std::string prefix = "trib";
  std::optional<double> delay_ms, jitter_ms, rate_mbit, loss;
  std::optional<int64_t> queue_bytes, queue_packets;
  std::string jitter_distribution;
  bool reorder = false;
  bool no_realtime = false;
  int64_t tcp_buffer_bytes = -1;
  double stats_every = 0;
  double duration = 0;
  bool validate = false;
  int iperf_seconds = 8;
  int iperf_omit = 2;
  bool check = false;
  std::string cleanup;
  bool force = false;
  bool sweep = false;
  bool list = false;
};

int Fail(const Status& st) {
  std::fprintf(stderr, "tributary-wanem: %s\n", st.ToString().c_str());
  return st.code() == StatusCode::kFailedPrecondition ? 3 : 2;
}

// Preset or scenario, then the command-line overrides applied to every link.
Result<WanConfig> BuildConfig(const Flags& f) {
  WanConfig c;
  if (!f.scenario.empty()) {
    if (!f.preset.empty()) return InvalidArgument("give --preset or --scenario, not both");
    TRIB_ASSIGN_OR_RETURN(c, LoadScenarioFile(f.scenario));
    if (f.peers >= 0 && f.peers != c.num_peers) {
      return InvalidArgument("--peers " + std::to_string(f.peers) + " disagrees with the " +
                             std::to_string(c.num_peers) + " peers of " + f.scenario);
    }
  } else {
    TRIB_ASSIGN_OR_RETURN(c, PresetConfig(f.preset.empty() ? "lan" : f.preset,
                                          f.peers < 0 ? 2 : f.peers));
  }
  if (!f.subnet.empty()) c.subnet = f.subnet;
  if (f.mtu >= 0) c.mtu = f.mtu;
  if (f.seed >= 0) c.seed = static_cast<uint64_t>(f.seed);
  c.name_prefix = f.prefix;
  if (f.tcp_buffer_bytes >= 0) c.tcp_buffer_bytes = f.tcp_buffer_bytes;
  c.realtime = !f.no_realtime;
  c.handle_signals = false;  // main() waits for the signals itself and stops cleanly
  JitterDistribution dist = JitterDistribution::kUniform;
  if (f.jitter_distribution == "normal") {
    dist = JitterDistribution::kNormal;
  } else if (!f.jitter_distribution.empty() && f.jitter_distribution != "uniform") {
    return InvalidArgument("--jitter-distribution must be uniform or normal");
  }
  for (int i = 0; i < c.num_peers; ++i) {
    for (int j = 0; j < c.num_peers; ++j) {
      if (i == j) continue;
      LinkParams& l = c.link(i, j);
      if (f.delay_ms) l.delay_ms = *f.delay_ms;
      if (f.jitter_ms) l.jitter_ms = *f.jitter_ms;
      if (!f.jitter_distribution.empty()) l.jitter_distribution = dist;
      if (f.reorder) l.allow_reorder = true;
      if (f.rate_mbit) l.rate_mbit = *f.rate_mbit;
      if (f.loss) l.loss = *f.loss;
      if ((f.rate_mbit || f.delay_ms) && !f.queue_bytes) {
        l.queue_bytes = AutoQueueBytes(l.rate_mbit, l.delay_ms);
      }
      if (f.queue_bytes) l.queue_bytes = *f.queue_bytes;
      if (f.queue_packets) l.queue_packets = *f.queue_packets;
    }
  }
  TRIB_RETURN_IF_ERROR(ValidateConfig(c));
  return c;
}

void PrintBanner(const WanEmulator& wan, const Flags& f) {
  const WanConfig& c = wan.config();
  std::string source = !f.scenario.empty() ? "scenario " + f.scenario
                                           : "preset " + (f.preset.empty() ? "lan" : f.preset);
  std::printf("tributary-wanem: run %s, %d peers, %s (subnet %s, mtu %d)\n", wan.run_id().c_str(),
              c.num_peers, source.c_str(), c.subnet.c_str(), c.mtu);
  std::printf("%s", DescribeLinks(c).c_str());
  for (int i = 0; i < c.num_peers; ++i) {
    std::printf("  peer %d  namespace %s  address %s  interface %s\n", i,
                wan.Namespace(i).c_str(), wan.Address(i).c_str(), wan.InterfaceName().c_str());
  }
  std::printf("Run a command as a peer: ip netns exec %s <command>\n", wan.Namespace(0).c_str());
  std::printf("Stop with Ctrl-C or SIGTERM; the namespaces are removed on exit. After a kill -9: "
              "tributary-wanem --cleanup %s\n", wan.run_id().c_str());
}

void PrintStats(const WanEmulator& wan, const EmulatorStats& now, const EmulatorStats& before,
                double seconds) {
  const int n = wan.num_peers();
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      if (i == j) continue;
      const LinkStats& a = now.link(i, j, n);
      const LinkStats& b = before.link(i, j, n);
      if (a.packets == b.packets && a.dropped_loss == b.dropped_loss &&
          a.dropped_queue == b.dropped_queue) {
        continue;
      }
      std::printf("  %d -> %d: %.2f Mbit/s, %llu packets, dropped %llu (loss) %llu (queue)\n", i,
                  j, (a.bytes - b.bytes) * 8 / 1e6 / seconds,
                  static_cast<unsigned long long>(a.packets - b.packets),
                  static_cast<unsigned long long>(a.dropped_loss - b.dropped_loss),
                  static_cast<unsigned long long>(a.dropped_queue - b.dropped_queue));
    }
  }
  uint64_t tun_dropped = 0;
  for (size_t i = 0; i < now.tun_dropped.size() && i < before.tun_dropped.size(); ++i) {
    tun_dropped += now.tun_dropped[i] - before.tun_dropped[i];
  }
  std::printf("  dropped before the emulator read them (overload) %llu, unroutable %llu, "
              "buffer-exhausted %llu, write errors %llu\n",
              static_cast<unsigned long long>(tun_dropped),
              static_cast<unsigned long long>(now.unroutable),
              static_cast<unsigned long long>(now.buffer_exhausted),
              static_cast<unsigned long long>(now.write_errors));
  std::fflush(stdout);
}

// Measures the 0 <-> 1 path: UDP RTT, then iperf3 in both directions.
int Validate(WanEmulator& wan, const Flags& f) {
  const WanConfig& c = wan.config();
  auto rtt = MeasureUdpRtt(wan, 0, 1, 30, Millis(20), Millis(3000));
  if (!rtt.ok()) return Fail(rtt.status());
  const double set_rtt = c.link(0, 1).delay_ms + c.link(1, 0).delay_ms;
  std::printf("RTT 0<->1: set %.2f ms, measured min %.2f / median %.2f / p90 %.2f / max %.2f ms "
              "(%d/%d echoes)\n",
              set_rtt, rtt->min_ms, rtt->median_ms, rtt->p90_ms, rtt->max_ms, rtt->received,
              rtt->sent);
  for (auto [from, to] : {std::pair{0, 1}, std::pair{1, 0}}) {
    const EmulatorStats before = wan.Stats();
    const auto start = Clock::now();
    auto r = RunIperf3(wan, to, from, f.iperf_seconds, f.iperf_omit);
    const double secs = SecondsSince(start);
    if (!r.ok()) return Fail(r.status());
    const EmulatorStats after = wan.Stats();
    const LinkStats& a = after.link(from, to, c.num_peers);
    const LinkStats& b = before.link(from, to, c.num_peers);
    const double rate = c.link(from, to).rate_mbit;
    char setting[96] = "unshaped";
    if (rate > 0) {
      // TCP goodput can reach rate × (MTU − 52) / MTU: 20 B IPv4 + 32 B TCP with timestamps.
      std::snprintf(setting, sizeof(setting), "%.6g Mbit/s (TCP goodput at most %.2f)", rate,
                    rate * (c.mtu - 52) / c.mtu);
    }
    std::printf("iperf3 %d->%d: set %s, loss %.3g %%; measured %.2f Mbit/s receiver, %lld "
                "retransmits; emulator carried %.2f Mbit/s of IP over %.1f s, dropped %llu (loss) "
                "%llu (queue) %llu (overload)\n",
                from, to, setting, c.link(from, to).loss * 100, r->receiver_mbit,
                static_cast<long long>(r->retransmits), (a.bytes - b.bytes) * 8 / 1e6 / secs, secs,
                static_cast<unsigned long long>(a.dropped_loss - b.dropped_loss),
                static_cast<unsigned long long>(a.dropped_queue - b.dropped_queue),
                static_cast<unsigned long long>(after.tun_dropped[static_cast<size_t>(from)] -
                                                before.tun_dropped[static_cast<size_t>(from)]));
    std::fflush(stdout);
  }
  return 0;
}

int Serve(const Flags& f) {
  // Blocked before any thread starts, so every thread inherits the mask and only the sigwait
  // below ever sees these signals: Ctrl-C becomes an orderly Stop().
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&signals, sig);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto config = BuildConfig(f);
  if (!config.ok()) return Fail(config.status());
  auto wan = WanEmulator::Start(*config);
  if (!wan.ok()) return Fail(wan.status());
  PrintBanner(**wan, f);
  if (f.validate) {
    const int rc = Validate(**wan, f);
    (*wan)->Stop();
    return rc;
  }
  std::printf("ready\n");
  std::fflush(stdout);

  const auto start = Clock::now();
  EmulatorStats last = (*wan)->Stats();
  auto last_time = start;
  int received = 0;
  for (;;) {
    double wait = 3600;
    if (f.stats_every > 0) wait = std::min(wait, f.stats_every);
    if (f.duration > 0) wait = std::min(wait, std::max(0.0, f.duration - SecondsSince(start)));
    timespec ts{static_cast<time_t>(wait), static_cast<long>((wait - static_cast<time_t>(wait)) * 1e9)};
    received = sigtimedwait(&signals, nullptr, &ts);
    if (received > 0) break;
    if (f.duration > 0 && SecondsSince(start) >= f.duration) break;
    if (f.stats_every > 0) {
      EmulatorStats now = (*wan)->Stats();
      PrintStats(**wan, now, last, SecondsSince(last_time));
      last = now;
      last_time = Clock::now();
    }
  }
  EmulatorStats zero;
  zero.links.resize(last.links.size());
  zero.tun_dropped.assign(static_cast<size_t>((*wan)->num_peers()), 0);
  const EmulatorStats total = (*wan)->Stats();
  (*wan)->Stop();
  std::printf("tributary-wanem: %s; removed the namespaces of %s. Totals:\n",
              received > 0 ? strsignal(received) : "duration reached", (*wan)->run_id().c_str());
  PrintStats(**wan, total, zero, SecondsSince(start));
  return 0;
}

int List(const std::string& prefix) {
  std::map<std::string, std::vector<std::string>> runs;
  std::map<std::string, pid_t> pids;
  for (const auto& name : ListNamedNetns()) {
    auto parsed = ParseNamespaceName(name);
    if (!parsed || parsed->prefix != prefix) continue;
    runs[parsed->run_id].push_back(name);
    pids[parsed->run_id] = parsed->pid;
  }
  if (runs.empty()) std::printf("no %s-* namespaces\n", prefix.c_str());
  for (const auto& [run, names] : runs) {
    const std::string state = RunOwnerAlive(run, pids[run])
                                  ? "running"
                                  : "GONE (remove with: tributary-wanem --cleanup " + run + ")";
    std::printf("%s: %zu namespace(s), owner pid %d %s\n", run.c_str(), names.size(), pids[run],
                state.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace tributary::wan

int main(int argc, char** argv) {
  using namespace tributary::wan;
  tributary::InitLogging("wanem", "info");
  Flags f;
  CLI::App app{"tributary-wanem: user-space WAN link emulator (network namespaces + TUN)"};
  app.add_option("--peers", f.peers, "number of peers (default 2)");
  app.add_option("--preset", f.preset, "lan, continent, transatlantic or home (default lan)");
  app.add_option("--scenario", f.scenario, "TOML scenario (see docs/WAN_EMULATOR.md)");
  app.add_option("--subnet", f.subnet, "peer subnet, peer i gets host i+1 (default 10.77.0.0/24)");
  app.add_option("--mtu", f.mtu, "MTU of every peer interface (default 1500)");
  app.add_option("--seed", f.seed, "seed of the loss and jitter draws");
  app.add_option("--prefix", f.prefix, "namespace name prefix (default trib)");
  app.add_option("--delay-ms", f.delay_ms, "override: one-way delay of every link");
  app.add_option("--jitter-ms", f.jitter_ms, "override: jitter of every link");
  app.add_option("--jitter-distribution", f.jitter_distribution, "uniform or normal");
  app.add_flag("--reorder", f.reorder, "let jitter reorder packets");
  app.add_option("--rate-mbit", f.rate_mbit, "override: rate of every link (0 = unshaped)");
  app.add_option("--loss", f.loss, "override: loss probability of every link");
  app.add_option("--queue-bytes", f.queue_bytes, "override: drop-tail queue in bytes (0 = none)");
  app.add_option("--queue-packets", f.queue_packets, "override: drop-tail queue in packets");
  app.add_option("--tcp-buffer-bytes", f.tcp_buffer_bytes,
                 "TCP autotuning maximum (tcp_rmem/tcp_wmem) in every peer (default: kernel's)");
  app.add_flag("--no-realtime", f.no_realtime, "do not run the forwarding thread as SCHED_FIFO");
  app.add_option("--stats-every", f.stats_every, "print per-link statistics every N seconds");
  app.add_option("--duration", f.duration, "stop after N seconds (default: at Ctrl-C)");
  app.add_flag("--validate", f.validate, "measure RTT and iperf3 between peers 0 and 1, then exit");
  app.add_option("--iperf-seconds", f.iperf_seconds, "iperf3 duration for --validate (default 8)");
  app.add_option("--iperf-omit", f.iperf_omit, "iperf3 seconds omitted (slow start, default 2)");
  app.add_flag("--check", f.check, "check privileges and devices, then exit");
  app.add_option("--cleanup", f.cleanup, "remove the namespaces of run RUN_ID if its owner is dead");
  app.add_flag("--force", f.force, "with --cleanup: remove even if the owner still runs");
  app.add_flag("--sweep", f.sweep, "remove the namespaces of every dead run with --prefix");
  app.add_flag("--list", f.list, "list runs with --prefix and whether their owner runs");
  CLI11_PARSE(app, argc, argv);

  if (f.check) {
    tributary::Status st = WanEmulator::CheckPrerequisites();
    if (!st.ok()) return Fail(st);
    std::printf("ok: this process can create network namespaces and TUN devices\n");
    return 0;
  }
  if (f.list) return List(f.prefix);
  if (!f.cleanup.empty() || f.sweep) {
    if (geteuid() != 0) {
      return Fail(tributary::FailedPrecondition("cleaning up namespaces needs root"));
    }
    CleanupReport r = f.sweep ? SweepStaleRuns(f.prefix) : CleanupRun(f.cleanup, f.force);
    std::printf("%s\n", r.Summary().c_str());
    if (!r.owner_alive.empty() && !f.sweep) {
      std::fprintf(stderr, "tributary-wanem: run %s is still running; stop it, or add --force\n",
                   f.cleanup.c_str());
      return 1;
    }
    return r.failed.empty() ? 0 : 1;
  }
  return Serve(f);
}
