// tributary_bench_wan_allreduce: our ring all-reduce on the emulated WAN (benchmarks/wan/),
// against single-stream iperf3 on the same link, and topology-ordered (TSP) rings against
// random rings on a heterogeneous link matrix. docs/BENCHMARKS.md has the commands and results.
//
// The launcher (root) starts a WanEmulator, runs iperf3 between peers 0 and 1, then runs one
// worker process per peer inside its namespace (`ip netns exec`). Workers meet through port
// files in a temp dir, form a mesh in the requested ring order and run a MeshCommunicator (the
// direct path below the threshold its link model derives from the configured RTT and iperf3's
// bandwidth, the ring above it; with --streams > 1 a ParallelRing instead), and time each size:
// a one-float all-reduce as a barrier, then the timed all-reduce. Each
// repetition's time is the slowest rank's. Results are checked against a float64 reference.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <thread>

#include "benchmarks/common/bench_stats.h"
#include "benchmarks/wan/probe.h"
#include "benchmarks/wan/wan_emulator.h"
#include "collectives/mesh_communicator.h"
#include "collectives/parallel_ring.h"
#include "collectives/topology.h"
#include "core/clock.h"
#include "core/files.h"
#include "core/logging.h"
#include "net/connection.h"
#include "net/io_thread.h"
#include "net/tcp_tuning.h"

#ifndef TRIBUTARY_SOURCE_DIR
#define TRIBUTARY_SOURCE_DIR "."
#endif

namespace tributary::bench {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

struct Config {
  // launcher
  std::vector<int> worlds{2, 4};
  std::vector<double> rtts_ms{50, 100};
  double rate_mbit = 100;
  std::vector<uint64_t> sizes{4096, 16ull << 20, 100ull << 20};
  int reps_small = 15, reps_mid = 7, reps_big = 5;
  int iperf_seconds = 12;
  bool iperf_bidir = true;
  bool heterogeneous = true;
  int hetero_reps = 3;
  uint64_t hetero_bytes = 16ull << 20;
  uint32_t streams = 1;
  int64_t tcp_buffer_bytes = 16 << 20;
  // Linux resets a connection's congestion window after an idle RTO (tcp_slow_start_after_idle
  // = 1, the default); the ring idles between all-reduces. false sets it to 0 in every peer.
  bool slow_start_after_idle = true;
  // Re-initialise each connection's congestion control before every repetition (experiment:
  // BBR's 10 s min-RTT window then never expires inside a call, so no ProbeRTT dip lands in one).
  bool restart_cc = false;
  // Idle time before each repetition's barrier, as between the rounds of a training job.
  int idle_ms = 0;
  // false: no one-float barrier before each repetition (the ranks then start where the previous
  // repetition left them, at most one hop apart; "from last start" still times them fairly).
  bool barrier = true;
  // Our connections' TCP congestion control (net/tcp_tuning.h) and iperf3's, so both run the same
  // algorithm; "" leaves the kernel's default to both.
  std::string tcp_congestion = net::kDefaultCongestionControl;
  std::string json_path;
  // worker
  bool worker = false;
  uint32_t rank = 0, world = 0;
  std::string dir, host;
  std::vector<uint32_t> order;  // ring rank k = peer order[k]
  std::vector<int> reps;        // per size
  double probe_seconds = 0;     // > 0: probe links (MeasureLinks) first and report them
  // The group's link as every worker is told it (0: unknown, the defaults apply).
  double link_rtt_ms = 0, link_mbit = 0;
  int64_t direct_max_bytes = -1;  // >= 0 overrides the model's threshold
  int64_t doubling_max_bytes = -1;  // >= 0 overrides the model's recursive-doubling threshold
  uint64_t segment_bytes = 0;     // > 0 overrides the ring's segment size
};

float InputValue(uint32_t rank, uint64_t i) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (rank + 1) * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 29;
  return static_cast<float>(x >> 40) * 0x1p-23f - 1.0f;
}

std::string PortFile(const std::string& dir, uint32_t r) { return dir + "/port." + std::to_string(r); }

Status WorkerMain(const Config& c) {
  InitLogging("wan-worker-" + std::to_string(c.rank), "warn");
  net::SetPreferredCongestionControl(c.tcp_congestion);
  net::IoThread io("bench-io");
  TRIB_ASSIGN_OR_RETURN(auto listener, net::Listener::Bind(io.context(), c.host, 0));
  TRIB_RETURN_IF_ERROR(WriteFileAtomically(PortFile(c.dir, c.rank), c.host + " " + std::to_string(listener->port())));
  std::vector<collectives::RingMember> peers(c.world);
  const Deadline setup = DeadlineAfter(Millis(120000));
  for (uint32_t r = 0; r < c.world; ++r) {
    while (true) {
      auto text = ReadWholeFile(PortFile(c.dir, r));
      if (text.ok()) {
        std::istringstream in(*text);
        int port = 0;
        in >> peers[r].host >> port;
        peers[r].port = static_cast<uint16_t>(port);
        peers[r].name = "peer-" + std::to_string(r);
        break;
      }
      if (Clock::now() > setup) return DeadlineExceeded("no port file of rank " + std::to_string(r));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  json out;
  if (c.probe_seconds > 0) {
    std::vector<collectives::RingMember> members = peers;
    for (uint32_t r = 0; r < c.world; ++r) members[r].rank = r;
    collectives::ProbeOptions po;
    po.seconds = c.probe_seconds;
    po.deadline = DeadlineAfter(Millis(120000));
    const auto t0 = Clock::now();
    TRIB_ASSIGN_OR_RETURN(auto row, collectives::MeasureLinks(io, *listener, c.rank, members, "wan", 0, 0,
                                                              nullptr, po));
    out["probe_seconds"] = SecondsSince(t0);
    json links = json::array();
    for (const auto& e : row) links.push_back({e.rtt_seconds, e.bytes_per_second});
    out["links"] = links;
  }
  // Ring members in ring order.
  std::vector<collectives::RingMember> members;
  uint32_t my_ring_rank = 0;
  for (uint32_t k = 0; k < c.world; ++k) {
    members.push_back(peers[c.order[k]]);
    members.back().rank = k;
    if (c.order[k] == c.rank) my_ring_rank = k;
  }
  // One stream: a mesh and the communicator a deployment runs. Several: the ParallelRing.
  std::unique_ptr<collectives::ParallelRing> rings;
  std::unique_ptr<collectives::MeshCommunicator> comm;
  if (c.streams > 1) {
    TRIB_ASSIGN_OR_RETURN(rings, collectives::ParallelRing::Form(io, *listener, my_ring_rank, members, "wan", 1, 0,
                                                                 nullptr, DeadlineAfter(Millis(120000)), c.streams));
  } else {
    TRIB_ASSIGN_OR_RETURN(auto mesh, collectives::Mesh::Form(io, *listener, my_ring_rank, members, "wan", 1,
                                                             DeadlineAfter(Millis(120000))));
    collectives::MeshCommunicator::Options options;
    if (c.link_mbit > 0) options.link = collectives::LinkEstimate{.rtt_seconds = c.link_rtt_ms / 1e3, .bytes_per_second = c.link_mbit * 1e6 / 8};
    if (c.direct_max_bytes >= 0) options.direct_max_bytes = static_cast<size_t>(c.direct_max_bytes);
    if (c.doubling_max_bytes >= 0) options.doubling_max_bytes = static_cast<size_t>(c.doubling_max_bytes);
    options.segment_bytes = c.segment_bytes;
    comm = std::make_unique<collectives::MeshCommunicator>(std::move(mesh), options);
    out["direct_max_bytes"] = comm->direct_max_bytes();
    out["doubling_max_bytes"] = comm->doubling_max_bytes();
    out["segment_bytes"] = comm->segment_bytes();
  }
  const auto allreduce = [&](std::span<float> v, const std::string& tag) -> Status {
    const Deadline deadline = DeadlineAfter(Millis(600000));
    if (rings) return collectives::ParallelRingAllreduce(*rings, v, {.tag = tag, .deadline = deadline}).status();
    return comm->Allreduce(v, {.tag = tag, .deadline = deadline}).status();
  };
  json sizes = json::array();
  uint64_t call = 0;
  for (size_t s = 0; s < c.sizes.size(); ++s) {
    const uint64_t n = c.sizes[s] / sizeof(float);
    std::vector<float> data(n);
    std::vector<double> times;
    std::vector<double> starts, ends;  // steady clock, shared by every namespace of this host
    double max_err = 0;
    std::string path = "ring";
    for (int it = 0; it < 1 + c.reps[s]; ++it) {
      for (uint64_t i = 0; i < n; ++i) data[i] = InputValue(c.rank, i);
      if (c.restart_cc && comm) {
        for (uint32_t r = 0; r < c.world; ++r) {
          if (r != comm->mesh().rank() && comm->mesh().peer(r)) {
            TRIB_RETURN_IF_ERROR(comm->mesh().peer(r)->RestartCongestionControl());
          }
        }
      }
      if (c.idle_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(c.idle_ms));
      float token = 1;
      if (c.barrier || it == 0) TRIB_RETURN_IF_ERROR(allreduce({&token, 1}, "b" + std::to_string(call++)));
      const auto t0 = Clock::now();
      TRIB_RETURN_IF_ERROR(allreduce(data, "a" + std::to_string(call++)));
      if (it > 0) {
        const auto t1 = Clock::now();
        times.push_back(std::chrono::duration<double>(t1 - t0).count());
        starts.push_back(std::chrono::duration<double>(t0.time_since_epoch()).count());
        ends.push_back(std::chrono::duration<double>(t1.time_since_epoch()).count());
      }
      if (comm) path = std::string(collectives::PathName(comm->last_path()));
      if (it == 0) {
        for (uint64_t i = 0; i < n; i += std::max<uint64_t>(1, n / 4096)) {
          double ref = 0;
          for (uint32_t r = 0; r < c.world; ++r) ref += InputValue(r, i);
          max_err = std::max(max_err, std::fabs(data[i] - ref));
        }
      }
    }
    sizes.push_back({{"bytes", c.sizes[s]}, {"seconds", times}, {"starts", starts}, {"ends", ends},
                     {"max_abs_err_vs_fp64", max_err}, {"path", path}});
  }
  out["sizes"] = sizes;
  out["bytes_sent"] = rings ? rings->bytes_sent() : comm->mesh().bytes_sent();
  return WriteFileAtomically(c.dir + "/result." + std::to_string(c.rank), out.dump());
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

std::string Join(const std::vector<uint32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

// Runs one worker per peer in its namespace; returns their result documents by rank.
Result<std::vector<json>> RunWorkers(const Config& c, const wan::WanEmulator& wan, const std::vector<uint32_t>& order,
                                     const std::vector<uint64_t>& sizes, const std::vector<int>& reps,
                                     double probe_seconds, double link_rtt_ms = 0, double link_mbit = 0) {
  const std::string dir = fs::temp_directory_path() / ("trib-wanbench-" + std::to_string(::getpid()) + "-" +
                                                       std::to_string(Clock::now().time_since_epoch().count()));
  fs::create_directories(dir);
  std::string size_list, rep_list;
  for (size_t i = 0; i < sizes.size(); ++i) {
    size_list += (i ? "," : "") + std::to_string(sizes[i]);
    rep_list += (i ? "," : "") + std::to_string(reps[i]);
  }
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::vector<pid_t> pids;
  const int world = wan.num_peers();
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> argv = wan.ExecPrefix(r);
    for (std::string a : {self, std::string("--worker"), std::string("--rank"), std::to_string(r),
                          std::string("--world"), std::to_string(world), std::string("--dir"), dir,
                          std::string("--host"), wan.Address(r), std::string("--order"), Join(order),
                          std::string("--sizes"), size_list, std::string("--reps-each"), rep_list,
                          std::string("--streams"), std::to_string(c.streams), std::string("--probe-seconds"),
                          fmt::format("{}", probe_seconds), std::string("--link-rtt-ms"), fmt::format("{}", link_rtt_ms),
                          std::string("--link-mbit"), fmt::format("{}", link_mbit), std::string("--direct-max-bytes"),
                          std::to_string(c.direct_max_bytes), std::string("--doubling-max-bytes"),
                          std::to_string(c.doubling_max_bytes), std::string("--segment-bytes"),
                          std::to_string(c.segment_bytes), std::string("--tcp-congestion"), c.tcp_congestion}) {
      argv.push_back(a);
    }
    if (c.restart_cc) argv.push_back("--restart-cc");
    if (c.idle_ms > 0) argv.insert(argv.end(), {"--idle-ms", std::to_string(c.idle_ms)});
    if (!c.barrier) argv.insert(argv.end(), {"--barrier", "false"});
    const pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
    if (pid < 0) return IoError("fork failed");
    pids.push_back(pid);
  }
  bool ok = true;
  for (pid_t pid : pids) {
    int st = 0;
    waitpid(pid, &st, 0);
    ok = ok && WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }
  std::vector<json> out;
  for (int r = 0; r < world && ok; ++r) {
    auto text = ReadWholeFile(dir + "/result." + std::to_string(r));
    if (!text.ok()) return text.status();
    out.push_back(json::parse(*text));
  }
  fs::remove_all(dir);
  if (!ok) return Internal("a worker failed (its log is on stderr)");
  return out;
}

// Per size: the slowest rank's time of each repetition.
std::vector<std::vector<double>> SlowestRank(const std::vector<json>& docs, size_t sizes) {
  std::vector<std::vector<double>> out(sizes);
  for (size_t s = 0; s < sizes; ++s) {
    for (const json& d : docs) {
      const auto t = d["sizes"][s]["seconds"].get<std::vector<double>>();
      if (out[s].empty()) out[s].assign(t.size(), 0);
      for (size_t i = 0; i < t.size(); ++i) out[s][i] = std::max(out[s][i], t[i]);
    }
  }
  return out;
}

// Per size: from the moment the last rank started a repetition to the moment the last rank
// finished it. All ranks run on this host, so their steady clocks agree; unlike SlowestRank this
// does not count the start skew a barrier leaves (a barrier releases ranks up to one hop apart,
// and a skew of one hop can persist from repetition to repetition at 2 peers).
std::vector<std::vector<double>> FromLastStart(const std::vector<json>& docs, size_t sizes) {
  std::vector<std::vector<double>> out(sizes);
  for (size_t s = 0; s < sizes; ++s) {
    std::vector<double> last_start, last_end;
    for (const json& d : docs) {
      const auto st = d["sizes"][s]["starts"].get<std::vector<double>>();
      const auto en = d["sizes"][s]["ends"].get<std::vector<double>>();
      if (last_start.empty()) {
        last_start.assign(st.size(), 0);
        last_end.assign(en.size(), 0);
      }
      for (size_t i = 0; i < st.size(); ++i) {
        last_start[i] = std::max(last_start[i], st[i]);
        last_end[i] = std::max(last_end[i], en[i]);
      }
    }
    for (size_t i = 0; i < last_start.size(); ++i) out[s].push_back(last_end[i] - last_start[i]);
  }
  return out;
}

wan::WanConfig UniformConfig(int peers, double rate_mbit, double rtt_ms, int64_t tcp_buffer) {
  wan::PeerProfile p;
  p.up_mbit = p.down_mbit = rate_mbit;
  p.rtt_ms = rtt_ms;
  wan::WanConfig config = wan::MeshConfig(std::vector<wan::PeerProfile>(static_cast<size_t>(peers), p));
  config.tcp_buffer_bytes = tcp_buffer;
  return config;
}


int Launcher(const Config& c) {
  InitLogging("wanbench", "info");
  if (Status s = wan::WanEmulator::CheckPrerequisites(); !s.ok()) {
    std::cerr << s.ToString() << "\n";
    return 3;
  }
  json doc = {{"benchmark", "allreduce_wan"}, {"loadavg_before", LoadAverages()}, {"streams", c.streams},
              {"slow_start_after_idle", c.slow_start_after_idle}, {"restart_cc", c.restart_cc}, {"idle_ms", c.idle_ms}, {"barrier", c.barrier},
              {"tcp_congestion", c.tcp_congestion}, {"kernel_default_congestion", net::KernelDefaultCongestionControl()},
              {"rate_mbit", c.rate_mbit}, {"tcp_buffer_bytes", c.tcp_buffer_bytes}};
  json rows = json::array();
  std::vector<std::string> table;
  for (double rtt : c.rtts_ms) {
    for (int world : c.worlds) {
      auto wan = wan::WanEmulator::Start(UniformConfig(world, c.rate_mbit, rtt, c.tcp_buffer_bytes));
      if (!wan.ok()) {
        spdlog::error("{}", wan.status().ToString());
        return 1;
      }
      if (!c.slow_start_after_idle) {
        for (int p = 0; p < world; ++p) {
          std::vector<std::string> argv = (*wan)->ExecPrefix(p);
          argv.insert(argv.end(), {"sysctl", "-q", "-w", "net.ipv4.tcp_slow_start_after_idle=0"});
          auto set = wan::RunCommand(argv, DeadlineAfter(Millis(10000)));
          if (!set.ok() || set->exit_code != 0) {
            spdlog::error("could not set tcp_slow_start_after_idle in peer {}", p);
            return 1;
          }
        }
      }
      auto iperf = wan::RunIperf3(**wan, 1, 0, c.iperf_seconds, 3, 5201, c.tcp_congestion);
      if (!iperf.ok()) {
        spdlog::error("iperf3: {}", iperf.status().ToString());
        return 1;
      }
      // Two peers load both directions of their link at once, so each direction's data shares
      // it with the other's ACKs; iperf3 --bidir measures TCP's rate in that setting too.
      std::optional<double> bidir_mbit;
      if (world == 2 && c.iperf_bidir) {
        auto both = wan::RunIperf3(**wan, 1, 0, c.iperf_seconds, 3, 5201, c.tcp_congestion, true);
        if (!both.ok()) {
          spdlog::error("iperf3 --bidir: {}", both.status().ToString());
          return 1;
        }
        bidir_mbit = std::min(both->receiver_mbit, both->reverse_receiver_mbit);
      }
      std::vector<uint32_t> order(static_cast<size_t>(world));
      std::iota(order.begin(), order.end(), 0u);
      std::vector<int> reps;
      for (uint64_t b : c.sizes) reps.push_back(b < (1 << 20) ? c.reps_small : b < (64 << 20) ? c.reps_mid : c.reps_big);
      // The workers' link model gets what a deployment would know: the RTT and iperf3's rate.
      auto docs = RunWorkers(c, **wan, order, c.sizes, reps, 0, rtt, iperf->receiver_mbit);
      if (!docs.ok()) {
        spdlog::error("world {} rtt {}: {}", world, rtt, docs.status().ToString());
        return 1;
      }
      const auto times = SlowestRank(*docs, c.sizes.size());
      const auto from_last = FromLastStart(*docs, c.sizes.size());
      const double link_Bps = iperf->receiver_mbit * 1e6 / 8;
      for (size_t s = 0; s < c.sizes.size(); ++s) {
        const double med = Quantile(times[s], 0.5), p90 = Quantile(times[s], 0.9);
        // Bus bandwidth: what each rank pushed through its link (2(N-1)/N of the tensor).
        const double bus_Bps = 2.0 * (world - 1) / world * static_cast<double>(c.sizes[s]) / med;
        const double err = (*docs)[0]["sizes"][s]["max_abs_err_vs_fp64"].get<double>();
        const double last = Quantile(from_last[s], 0.5);
        const double last_bus_Bps = 2.0 * (world - 1) / world * static_cast<double>(c.sizes[s]) / last;
        json row = {{"world", world}, {"rtt_ms", rtt}, {"bytes", c.sizes[s]}, {"seconds", times[s]},
                    {"median_s", med}, {"p90_s", p90}, {"p90_over_median", p90 / med},
                    {"iperf3_mbit", iperf->receiver_mbit}, {"bus_mbit", bus_Bps * 8 / 1e6},
                    {"of_iperf3", bus_Bps / link_Bps}, {"round_trips", med / (rtt / 1e3)},
                    {"path", (*docs)[0]["sizes"][s].value("path", std::string("ring"))},
                    {"segment_bytes", (*docs)[0].value("segment_bytes", uint64_t{0})},
                    {"from_last_start_s", from_last[s]}, {"from_last_start_median_s", last},
                    {"from_last_start_p90_over_median", Quantile(from_last[s], 0.9) / last},
                    {"from_last_start_of_iperf3", last_bus_Bps / link_Bps},
                    {"max_abs_err_vs_fp64", err}};
        std::string of_bidir = "–";
        if (bidir_mbit) {
          row["iperf3_bidir_mbit"] = *bidir_mbit;  // the slower direction
          row["of_iperf3_bidir"] = bus_Bps * 8 / 1e6 / *bidir_mbit;
          of_bidir = fmt::format("{:.1f} %", 100 * bus_Bps * 8 / 1e6 / *bidir_mbit);
        }
        rows.push_back(row);
        table.push_back(fmt::format("| {} | {:g} | {} | {} | {:.1f} | {:.3f} | {:.2f} | {:.1f} | {:.1f} | {:.1f} % | {} | {:.1f} ({:.2f} RTT, {:.1f} %) | {:.2f} |",
                                    world, rtt, c.sizes[s] >= (1 << 20) ? fmt::format("{} MiB", c.sizes[s] >> 20)
                                                                        : fmt::format("{} KiB", c.sizes[s] >> 10),
                                    row["path"].get<std::string>(),
                                    med * 1e3, p90 / med, med / (rtt / 1e3), iperf->receiver_mbit,
                                    bus_Bps * 8 / 1e6, 100 * bus_Bps / link_Bps, of_bidir, last * 1e3, last / (rtt / 1e3),
                                    100 * last_bus_Bps / link_Bps, err));
      }
    }
  }
  doc["uniform"] = rows;
  std::cout << "| peers | RTT ms | size | path | median ms | p90/median | RTTs | iperf3 Mbit/s | ours bus Mbit/s | of iperf3 "
               "| of iperf3 --bidir | from last start: median ms (RTTs, of iperf3) | max err vs fp64 |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : table) std::cout << r << "\n";

  if (c.heterogeneous) {
    // Two regions {0, 2} and {1, 3}: 100 Mbit/s, 10 ms inside; across, 20 Mbit/s and 80 ms RTT
    // except the fast 2 -> 1 and 3 -> 0 (100 Mbit/s): one ring crosses only on fast links.
    const int n = 4;
    wan::WanConfig config = UniformConfig(n, 100, 10, c.tcp_buffer_bytes);
    collectives::LinkMatrix truth(n);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        if (i == j) continue;
        wan::LinkParams& l = config.link(i, j);
        const bool same = i % 2 == j % 2, fast_cross = (i == 2 && j == 1) || (i == 3 && j == 0);
        l.rate_mbit = same || fast_cross ? 100 : 20;
        l.delay_ms = same ? 5 : 40;
        l.queue_bytes = wan::AutoQueueBytes(l.rate_mbit, l.delay_ms);
        truth.at(i, j) = {2 * l.delay_ms / 1e3, l.rate_mbit * 1e6 / 8 * 0.95};
      }
    }
    auto wan = wan::WanEmulator::Start(config);
    if (!wan.ok()) {
      spdlog::error("{}", wan.status().ToString());
      return 1;
    }
    // First run probes the links (as a real group would), then the TSP ring over the probed
    // matrix, the identity ring and seeded random rings.
    std::vector<uint32_t> identity{0, 1, 2, 3};
    auto probed = RunWorkers(c, **wan, identity, {c.hetero_bytes}, {c.hetero_reps}, 1.0);
    if (!probed.ok()) {
      spdlog::error("heterogeneous: {}", probed.status().ToString());
      return 1;
    }
    collectives::LinkMatrix measured(n);
    double probe_s = 0;
    for (int i = 0; i < n; ++i) {
      probe_s = std::max(probe_s, (*probed)[i]["probe_seconds"].get<double>());
      for (int j = 0; j < n; ++j) {
        if (i == j) continue;
        measured.at(i, j) = {(*probed)[i]["links"][j][0].get<double>(), (*probed)[i]["links"][j][1].get<double>()};
      }
    }
    auto tsp = collectives::OrderRing(measured, static_cast<double>(c.hetero_bytes));
    if (!tsp.ok()) {
      spdlog::error("{}", tsp.status().ToString());
      return 1;
    }
    std::vector<std::vector<uint32_t>> orders{tsp->order, identity};
    std::mt19937 rng(7);
    for (int k = 0; k < 2; ++k) {
      std::vector<uint32_t> p = identity;
      std::shuffle(p.begin() + 1, p.end(), rng);
      orders.push_back(p);
    }
    json het = json::array();
    std::cout << "\nHeterogeneous 4 peers (probe took " << fmt::format("{:.1f}", probe_s)
              << " s), " << (c.hetero_bytes >> 20) << " MiB:\n"
              << "| ring | predicted s (true matrix) | predicted s (probed) | measured median s | p90/median |\n|---|---|---|---|---|\n";
    const double probed_identity_median = Quantile(SlowestRank(*probed, 1)[0], 0.5);
    for (size_t k = 0; k < orders.size(); ++k) {
      auto docs = RunWorkers(c, **wan, orders[k], {c.hetero_bytes}, {c.hetero_reps}, 0);
      if (!docs.ok()) {
        spdlog::error("ring {}: {}", Join(orders[k]), docs.status().ToString());
        return 1;
      }
      const auto t = SlowestRank(*docs, 1)[0];
      const double pred = collectives::PredictRingSeconds(truth, orders[k], static_cast<double>(c.hetero_bytes));
      const double pred_probed = collectives::PredictRingSeconds(measured, orders[k], static_cast<double>(c.hetero_bytes));
      const std::string label = (k == 0 ? "TSP " : k == 1 ? "identity " : "random ") + Join(orders[k]);
      het.push_back({{"ring", label}, {"order", orders[k]}, {"predicted_s", pred}, {"predicted_probed_s", pred_probed},
                     {"seconds", t}, {"median_s", Quantile(t, 0.5)}, {"p90_over_median", Quantile(t, 0.9) / Quantile(t, 0.5)}});
      std::cout << fmt::format("| {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |\n", label, pred, pred_probed,
                               Quantile(t, 0.5), Quantile(t, 0.9) / Quantile(t, 0.5));
    }
    json m = json::array();
    for (int i = 0; i < n; ++i) {
      json row = json::array();
      for (int j = 0; j < n; ++j) row.push_back({measured.at(i, j).rtt_seconds, measured.at(i, j).bytes_per_second});
      m.push_back(row);
    }
    doc["heterogeneous"] = {{"bytes", c.hetero_bytes}, {"probe_seconds", probe_s}, {"probed_matrix", m},
                            {"identity_median_during_probe_run_s", probed_identity_median}, {"rings", het}};
  }
  doc["loadavg_after"] = LoadAverages();
  std::cout << "Load average before: " << doc["loadavg_before"].get<std::string>()
            << ", after: " << doc["loadavg_after"].get<std::string>() << "\n";
  Status written = WriteFileAtomically(c.json_path, doc.dump(2) + "\n");
  if (!written.ok()) {
    spdlog::error("{}", written.ToString());
    return 1;
  }
  spdlog::info("wrote {}", c.json_path);
  return 0;
}

}  // namespace
}  // namespace tributary::bench

int main(int argc, char** argv) {
  tributary::bench::Config c;
  c.json_path = std::string(TRIBUTARY_SOURCE_DIR) + "/benchmarks/results/allreduce_wan.json";
  CLI::App app("All-reduce on the emulated WAN vs iperf3; TSP ring vs random rings");
  app.add_option("--worlds", c.worlds)->delimiter(',');
  app.add_option("--rtts-ms", c.rtts_ms)->delimiter(',');
  app.add_option("--rate-mbit", c.rate_mbit);
  app.add_option("--sizes", c.sizes, "bytes")->delimiter(',');
  app.add_option("--reps-small", c.reps_small);
  app.add_option("--reps-mid", c.reps_mid);
  app.add_option("--reps-big", c.reps_big);
  app.add_option("--iperf-seconds", c.iperf_seconds);
  app.add_option("--iperf-bidir", c.iperf_bidir,
                 "at 2 peers, also measure iperf3 --bidir (both directions at once) and compare with it");
  app.add_option("--heterogeneous", c.heterogeneous);
  app.add_option("--hetero-reps", c.hetero_reps);
  app.add_option("--hetero-bytes", c.hetero_bytes);
  app.add_option("--streams", c.streams, "TCP streams per ring edge");
  app.add_option("--tcp-buffer-bytes", c.tcp_buffer_bytes);
  app.add_option("--slow-start-after-idle", c.slow_start_after_idle,
                 "false: net.ipv4.tcp_slow_start_after_idle=0 in every peer");
  app.add_option("--barrier", c.barrier, "false: no barrier before each repetition");
  app.add_option("--idle-ms", c.idle_ms,
                 "idle time before each repetition (ms), as between a training job's rounds");
  app.add_flag("--restart-cc", c.restart_cc,
               "re-initialise each connection's congestion control before every repetition");
  app.add_option("--tcp-congestion", c.tcp_congestion,
                 "TCP congestion control of the workers' connections and of iperf3 (\"\" = the kernel's default)")
      ->capture_default_str();
  app.add_option("--json", c.json_path);
  app.add_flag("--worker", c.worker);
  app.add_option("--rank", c.rank);
  app.add_option("--world", c.world);
  app.add_option("--dir", c.dir);
  app.add_option("--host", c.host);
  app.add_option("--order", c.order)->delimiter(',');
  app.add_option("--reps-each", c.reps)->delimiter(',');
  app.add_option("--probe-seconds", c.probe_seconds);
  app.add_option("--link-rtt-ms", c.link_rtt_ms);
  app.add_option("--link-mbit", c.link_mbit);
  app.add_option("--direct-max-bytes", c.direct_max_bytes, "override the direct path's threshold (bytes)");
  app.add_option("--doubling-max-bytes", c.doubling_max_bytes,
                 "override the recursive-doubling threshold (bytes; 0: never)");
  app.add_option("--segment-bytes", c.segment_bytes, "override the ring's segment size (bytes)");
  CLI11_PARSE(app, argc, argv);
  if (c.worker) {
    tributary::Status s = tributary::bench::WorkerMain(c);
    if (!s.ok()) {
      std::cerr << "worker " << c.rank << ": " << s.ToString() << "\n";
      return 1;
    }
    return 0;
  }
  return tributary::bench::Launcher(c);
}
