// tributary_bench_coordinator_load: one coordinator (the real `tributary coordinator` process)
// against ≥ 1000 simulated peers on this machine.
//
// Each simulated peer is a real TCP connection that runs the authenticated handshake
// (net::ClientHandshake, Ed25519 + X25519, then AEAD records) and sends a signed Hello as a peer
// of a job with num_peers 1024 and min_peers 1024, so no round ever starts. Then, per scenario:
//
//   admission  all peers connect from --admit-threads threads: handshakes + Hellos per second
//              and the latency of one admission (dial → HelloAck);
//   steady     every peer sends a Heartbeat each heartbeat_ms (phases spread evenly) for
//              --duration-s; meanwhile a StatusRequest is timed every --status-every-ms on a
//              persistent observer connection, and a full `tributary status` query (dial +
//              handshake + request) every fifth time. Coordinator CPU comes from
//              /proc/PID/stat; a peer wrongly declared dead shows as a coordinator log line
//              "gone from job ... silent for" and as its connection being closed;
//   burst      every peer sends --burst heartbeats back to back, then --burst-probes of them send
//              a StatusRequest behind their burst on the same connection. A connection is read in
//              order, so a reply means the coordinator has processed that peer's burst:
//              (peers × burst) / (time until the last probe reply) is a lower bound on the
//              heartbeats the coordinator processes per second when saturated.
//
// Results: a Markdown table on stdout and JSON (--json).
#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <random>
#include <thread>

#include "benchmarks/launcher/bench_util.h"
#include "core/clock.h"
#include "launcher/client.h"
#include "launcher/process.h"
#include "net/connection.h"
#include "net/frame.h"
#include "net/identity.h"
#include "net/io_thread.h"
#include "net/secure_channel.h"

#ifndef TRIBUTARY_SOURCE_DIR
#define TRIBUTARY_SOURCE_DIR "."
#endif

namespace tributary::bench {
namespace {

using namespace std::chrono_literals;
using launcher::ChildProcess;
using net::Connection;
namespace v1 = ::tributary::v1;

struct Config {
  std::string binary = TRIBUTARY_BINARY;
  std::string data = std::string(TRIBUTARY_SOURCE_DIR) + "/data/moby-dick";
  int peers = 1000;
  std::vector<int> heartbeat_ms = {1000, 100};
  int liveness_ms = 0;  // 0 = the job default (5 × heartbeat)
  int duration_s = 40;
  int admit_threads = 8;
  int status_every_ms = 500;
  int burst = 100;
  int burst_probes = 16;
  std::string work_dir = "/tmp/trib-bench-coordinator";
  std::string json =
      std::string(TRIBUTARY_SOURCE_DIR) + "/benchmarks/results/coordinator_load.json";
};

struct SimPeer {
  net::Identity identity = net::Identity::Generate();
  std::shared_ptr<Connection> conn;
  double admit_s = 0;
  std::atomic<bool> closed{false};
  std::atomic<double> closed_at{0};
  std::string close_reason;  // written once, before `closed` is set
  std::atomic<int> status_replies{0};
  std::atomic<double> last_reply_at{0};
};

struct Scenario {
  int heartbeat_ms = 0;
  int liveness_ms = 0;
  int peers = 0;
  int admitted = 0;
  int admission_failures = 0;
  std::string first_admission_error;
  double admission_s = 0;
  double admission_rate = 0;  // handshakes + Hellos per second
  double admit_p50_ms = 0, admit_p99_ms = 0, admit_max_ms = 0;
  double admission_cpu_s = 0;
  double steady_s = 0;
  uint64_t heartbeats_sent = 0, heartbeats_failed = 0;
  double heartbeat_rate = 0;  // sent per second, all peers
  double steady_cpu_pct = 0;  // coordinator, % of one core
  double cpu_us_per_heartbeat = 0;
  std::vector<double> status_ms, query_ms;
  int status_peers_min = -1;  // peers listed in status replies
  double burst_s = 0;
  uint64_t burst_messages = 0;
  int burst_probe_replies = 0;
  double burst_rate = 0;
  double burst_cpu_pct = 0;
  double burst_cpu_us_per_heartbeat =
      0;                          // coordinator CPU per burst message (+ the scheduled ones)
  int closed_by_coordinator = 0;  // connections the coordinator closed during the run
  int silent_lines = 0;           // "gone from job ... silent for" in its log
  int gone_lines = 0;
  int reject_lines = 0;
  long rss_kb = 0, fds = 0, threads = 0;
  double generator_cpu_pct = 0;
  std::string error;
};

double SteadySeconds(Clock::time_point since) { return SecondsSince(since); }

// Keeps reading `p`'s connection: records status replies and the moment it is closed.
void ReadLoop(SimPeer* p, Clock::time_point t0) {
  auto conn = p->conn;
  conn->AsyncReceive([p, t0, conn](Result<v1::Envelope> message) {
    if (!message.ok() || message->has_error()) {
      if (!p->closed.load()) {
        p->close_reason = message.ok() ? message->error().message() : message.status().ToString();
        p->closed_at = SteadySeconds(t0);
        p->closed = true;
      }
      if (!message.ok()) return;
    } else if (message->has_status_reply()) {
      p->last_reply_at = SteadySeconds(t0);
      p->status_replies++;
    }
    ReadLoop(p, t0);
  });
}

Scenario RunScenario(const Config& c, int heartbeat_ms) {
  Scenario sc;
  sc.heartbeat_ms = heartbeat_ms;
  sc.liveness_ms = c.liveness_ms ? c.liveness_ms : 5 * heartbeat_ms;
  sc.peers = c.peers;
  const std::string dir = fmt::format("{}/hb{}", c.work_dir, heartbeat_ms);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string log = dir + "/coordinator.log";
  std::vector<std::string> argv = {c.binary,
                                   "coordinator",
                                   "--data",
                                   c.data,
                                   "--port-file",
                                   dir + "/port",
                                   "--peers",
                                   "1024",
                                   "--min-peers",
                                   "1024",
                                   "--rounds",
                                   "1",
                                   "--heartbeat-ms",
                                   std::to_string(heartbeat_ms),
                                   "--liveness-timeout-ms",
                                   std::to_string(sc.liveness_ms),
                                   "--round-timeout-ms",
                                   "60000"};
  auto coordinator = ChildProcess::Spawn(argv, {}, log);
  if (!coordinator.ok()) {
    sc.error = coordinator.status().ToString();
    return sc;
  }
  const pid_t pid = coordinator->pid();
  const Deadline start_by = DeadlineAfter(30s);
  while (!FileExists(dir + "/port")) {
    if (Clock::now() > start_by || coordinator->Poll()) {
      sc.error = "coordinator did not start: " + ReadFileOrEmpty(log);
      return sc;
    }
    std::this_thread::sleep_for(20ms);
  }
  std::istringstream in(ReadFileOrEmpty(dir + "/port"));
  int port = 0;
  std::string job, key_hex;
  in >> port >> job >> key_hex;
  auto key = net::KeyFromHex(key_hex);
  if (!key.ok()) {
    sc.error = "bad coordinator key";
    return sc;
  }

  const auto t0 = Clock::now();
  const double self_cpu0 = ProcessCpuSeconds(getpid());
  // ---------------------------------------------------------------- admission
  std::vector<std::unique_ptr<SimPeer>> peers(c.peers);
  for (auto& p : peers) p = std::make_unique<SimPeer>();
  std::atomic<uint64_t> sent{0}, send_failed{0};  // outlive `io`: its handlers count into them
  // Every Connection must be gone before its io_context: see Teardown below.
  auto io = std::make_unique<net::IoThread>("load-io");
  std::atomic<int> admitted{0}, failed{0};
  std::mutex error_mu;

  // Heartbeats start as soon as a peer is admitted (as a real peer's do): otherwise the first
  // peers admitted would look silent while the others are still being admitted.
  v1::Envelope beat = net::MakeEnvelope(job);
  beat.mutable_heartbeat()->set_committed_rounds(0);
  auto frame = std::make_shared<const std::string>(*net::EncodeFrame(beat));
  auto on_sent = [&send_failed](Status st) {
    if (!st.ok()) send_failed++;
  };
  std::mutex admitted_mu;
  std::vector<SimPeer*> newly_admitted;
  std::atomic<bool> stop_beats{false};
  std::thread beater([&] {
    using Due = std::pair<Clock::time_point, SimPeer*>;
    std::priority_queue<Due, std::vector<Due>, std::greater<>> schedule;
    const Millis interval(heartbeat_ms);
    while (!stop_beats.load()) {
      const auto now = Clock::now();
      {
        std::lock_guard<std::mutex> lock(admitted_mu);
        for (SimPeer* p : newly_admitted)
          schedule.push({now + interval, p});  // Hello counts as seen
        newly_admitted.clear();
      }
      while (!schedule.empty() && schedule.top().first <= now) {
        auto [due, p] = schedule.top();
        schedule.pop();
        if (p->closed.load()) continue;
        p->conn->AsyncSend(frame, {}, on_sent);
        sent++;
        schedule.push({due + interval, p});
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  const double cpu_before_admission = ProcessCpuSeconds(pid);
  const auto admission_start = Clock::now();
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < c.admit_threads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = t; i < c.peers; i += c.admit_threads) {
          SimPeer& p = *peers[i];
          const auto begin = Clock::now();
          const Deadline deadline = DeadlineAfter(30s);
          auto fail = [&](const Status& st) {
            failed++;
            std::lock_guard<std::mutex> lock(error_mu);
            if (sc.first_admission_error.empty()) sc.first_admission_error = st.ToString();
          };
          auto conn =
              Connection::Dial(io->context(), "127.0.0.1", static_cast<uint16_t>(port), deadline);
          if (!conn.ok()) {
            fail(conn.status());
            continue;
          }
          auto hs =
              net::ClientHandshake(**conn, p.identity, "tributary-coordinator", *key, deadline);
          if (!hs.ok()) {
            fail(hs.status());
            continue;
          }
          v1::Envelope hello = net::MakeEnvelope(job);
          v1::Hello* h = hello.mutable_hello();
          h->set_role(v1::ROLE_PEER);
          h->set_peer_name(fmt::format("sim-{:04d}", i));
          h->set_listen_port(9);  // never dialled: no round starts
          h->mutable_hardware()->set_cpu_model("simulated");
          h->mutable_hardware()->set_cpu_cores(1);
          net::SignEnvelope(p.identity, hello);
          if (Status st = (*conn)->Send(hello, deadline); !st.ok()) {
            fail(st);
            continue;
          }
          auto ack = (*conn)->Receive(deadline);
          if (!ack.ok()) {
            fail(ack.status());
            continue;
          }
          if (!ack->has_hello_ack()) {
            fail(Aborted("answered with " + net::PayloadName(*ack) +
                         (ack->has_error() ? ": " + ack->error().message() : "")));
            continue;
          }
          p.admit_s = SecondsSince(begin);
          p.conn = *conn;
          ReadLoop(&p, t0);
          admitted++;
          std::lock_guard<std::mutex> lock(admitted_mu);
          newly_admitted.push_back(&p);
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  sc.admission_s = SecondsSince(admission_start);
  sc.admission_cpu_s = ProcessCpuSeconds(pid) - cpu_before_admission;
  sc.admitted = admitted.load();
  sc.admission_failures = failed.load();
  sc.admission_rate = sc.admitted / sc.admission_s;
  {
    std::vector<double> ms;
    for (auto& p : peers) {
      if (p->conn) ms.push_back(p->admit_s * 1000);
    }
    sc.admit_p50_ms = Percentile(ms, 50);
    sc.admit_p99_ms = Percentile(ms, 99);
    sc.admit_max_ms = Percentile(ms, 100);
  }
  std::vector<SimPeer*> live;
  for (auto& p : peers) {
    if (p->conn) live.push_back(p.get());
  }
  std::cerr << fmt::format(
      "  heartbeat {} ms: admitted {}/{} in {:.2f} s ({:.0f}/s), {} failed{}\n", heartbeat_ms,
      sc.admitted, c.peers, sc.admission_s, sc.admission_rate, sc.admission_failures,
      sc.first_admission_error.empty() ? "" : " (" + sc.first_admission_error + ")");
  auto stop_beater = [&] {
    stop_beats = true;
    if (beater.joinable()) beater.join();
  };
  std::shared_ptr<Connection> observer;
  // Sockets must not outlive their io_context: close and release every connection, then stop
  // the io thread (which destroys the handlers still holding connections).
  auto teardown = [&] {
    stop_beater();
    for (auto& p : peers) {
      if (p->conn) p->conn->Close();
      p->conn.reset();
    }
    if (observer) observer->Close();
    observer.reset();
    io.reset();
  };
  if (live.empty()) {
    teardown();
    sc.error = "no peer admitted: " + sc.first_admission_error;
    return sc;
  }

  // Persistent observer connection for StatusRequest latency.
  net::Identity observer_id = net::Identity::Generate();
  {
    const Deadline deadline = DeadlineAfter(10s);
    auto conn = Connection::Dial(io->context(), "127.0.0.1", static_cast<uint16_t>(port), deadline);
    if (conn.ok() &&
        net::ClientHandshake(**conn, observer_id, "tributary-coordinator", *key, deadline).ok()) {
      v1::Envelope hello = net::MakeEnvelope(job);
      hello.mutable_hello()->set_role(v1::ROLE_OBSERVER);
      net::SignEnvelope(observer_id, hello);
      if ((*conn)->Send(hello, deadline).ok()) observer = *conn;
    }
  }

  // ---------------------------------------------------------------- steady heartbeats
  std::atomic<bool> stop_probe{false};
  std::mutex probe_mu;
  std::thread prober([&] {
    int n = 0;
    const launcher::CoordinatorAddress address{"127.0.0.1", static_cast<uint16_t>(port), *key};
    while (!stop_probe.load()) {
      std::this_thread::sleep_for(Millis(c.status_every_ms));
      if (stop_probe.load()) break;
      if (observer && !observer->closed()) {
        v1::Envelope request = net::MakeEnvelope("");
        request.mutable_status_request();
        const auto begin = Clock::now();
        auto deadline = DeadlineAfter(10s);
        if (observer->Send(request, deadline).ok()) {
          auto reply = observer->Receive(deadline);
          const double ms = SecondsSince(begin) * 1000;
          std::lock_guard<std::mutex> lock(probe_mu);
          if (reply.ok() && reply->has_status_reply()) {
            sc.status_ms.push_back(ms);
            int listed =
                reply->status_reply().jobs_size() ? reply->status_reply().jobs(0).peers_size() : 0;
            sc.status_peers_min =
                sc.status_peers_min < 0 ? listed : std::min(sc.status_peers_min, listed);
          }
        }
      }
      if (++n % 5 == 0) {
        const auto begin = Clock::now();
        auto reply = launcher::QueryStatus(address, net::Identity::Generate());
        std::lock_guard<std::mutex> lock(probe_mu);
        if (reply.ok()) sc.query_ms.push_back(SecondsSince(begin) * 1000);
      }
    }
  });

  const double steady_cpu0 = ProcessCpuSeconds(pid);
  const uint64_t sent0 = sent.load();
  const auto steady_start = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(c.duration_s));
  sc.steady_s = SecondsSince(steady_start);
  const double steady_cpu = ProcessCpuSeconds(pid) - steady_cpu0;
  sc.heartbeats_sent = sent.load() - sent0;
  sc.heartbeat_rate = sc.heartbeats_sent / sc.steady_s;
  sc.steady_cpu_pct = 100 * steady_cpu / sc.steady_s;
  sc.cpu_us_per_heartbeat = sc.heartbeats_sent ? 1e6 * steady_cpu / sc.heartbeats_sent : 0;
  stop_probe = true;
  prober.join();

  // ---------------------------------------------------------------- burst
  {
    // Probes spread over the send order, the last peer sent to first.
    std::vector<SimPeer*> probes;
    const size_t stride = std::max<size_t>(1, live.size() / std::max(1, c.burst_probes));
    for (size_t k = 0; static_cast<int>(k) < c.burst_probes && k * stride < live.size(); ++k) {
      probes.push_back(live[live.size() - 1 - k * stride]);
    }
    std::vector<int> replies_before;
    for (SimPeer* p : probes) replies_before.push_back(p->status_replies.load());
    v1::Envelope request = net::MakeEnvelope("");
    request.mutable_status_request();
    auto status_frame = std::make_shared<const std::string>(*net::EncodeFrame(request));
    const double cpu0 = ProcessCpuSeconds(pid);
    const double burst_start = SteadySeconds(t0);
    uint64_t messages = 0;
    for (int b = 0; b < c.burst; ++b) {
      for (SimPeer* p : live) {
        if (p->closed.load()) continue;
        p->conn->AsyncSend(frame, {}, on_sent);
        ++messages;
      }
    }
    for (SimPeer* p : probes) p->conn->AsyncSend(status_frame, {}, on_sent);
    const Deadline deadline = DeadlineAfter(60s);
    for (;;) {
      int done = 0;
      for (size_t i = 0; i < probes.size(); ++i)
        done += probes[i]->status_replies.load() > replies_before[i];
      sc.burst_probe_replies = done;
      if (done == static_cast<int>(probes.size()) || Clock::now() > deadline) break;
      std::this_thread::sleep_for(1ms);
    }
    double last = burst_start;
    for (SimPeer* p : probes) last = std::max(last, p->last_reply_at.load());
    sc.burst_s = last - burst_start;
    sc.burst_messages = messages;
    sc.burst_rate = sc.burst_s > 0 ? messages / sc.burst_s : 0;
    const double burst_cpu = ProcessCpuSeconds(pid) - cpu0;
    sc.burst_cpu_pct = sc.burst_s > 0 ? 100 * burst_cpu / sc.burst_s : 0;
    sc.burst_cpu_us_per_heartbeat = messages ? 1e6 * burst_cpu / messages : 0;
  }
  std::this_thread::sleep_for(
      Millis(std::max(2 * sc.liveness_ms, 2000)));  // let the sweep see the aftermath
  stop_beats = true;
  beater.join();
  sc.heartbeats_failed = send_failed.load();
  sc.rss_kb = ProcessStatusKb(pid, "VmRSS");
  sc.threads = ProcessStatusKb(pid, "Threads");
  sc.fds = OpenFds(pid);
  sc.generator_cpu_pct = 100 * (ProcessCpuSeconds(getpid()) - self_cpu0) / SecondsSince(t0);
  for (SimPeer* p : live) sc.closed_by_coordinator += p->closed.load();
  coordinator->Signal(SIGKILL);
  (void)coordinator->Wait(DeadlineAfter(10s));
  for (const auto& line : Lines(ReadFileOrEmpty(log))) {
    if (line.find("gone from job") != std::string::npos) {
      ++sc.gone_lines;
      if (line.find("silent for") != std::string::npos) ++sc.silent_lines;
    }
    if (line.find("rejecting") != std::string::npos) ++sc.reject_lines;
  }
  teardown();
  std::cerr << fmt::format(
      "  heartbeat {} ms: {:.0f} heartbeats/s at {:.1f}% CPU, burst {:.0f}/s, {} closed, {} "
      "silent\n",
      heartbeat_ms, sc.heartbeat_rate, sc.steady_cpu_pct, sc.burst_rate, sc.closed_by_coordinator,
      sc.silent_lines);
  return sc;
}

nlohmann::json ToJson(const Scenario& s) {
  return {{"heartbeat_ms", s.heartbeat_ms},
          {"liveness_timeout_ms", s.liveness_ms},
          {"peers", s.peers},
          {"admitted", s.admitted},
          {"admission_failures", s.admission_failures},
          {"first_admission_error", s.first_admission_error},
          {"admission_s", s.admission_s},
          {"admissions_per_s", s.admission_rate},
          {"admission_latency_ms",
           {{"p50", s.admit_p50_ms}, {"p99", s.admit_p99_ms}, {"max", s.admit_max_ms}}},
          {"admission_coordinator_cpu_s", s.admission_cpu_s},
          {"steady_s", s.steady_s},
          {"heartbeats_sent", s.heartbeats_sent},
          {"heartbeat_send_failures", s.heartbeats_failed},
          {"heartbeats_per_s", s.heartbeat_rate},
          {"steady_coordinator_cpu_pct", s.steady_cpu_pct},
          {"coordinator_cpu_us_per_heartbeat", s.cpu_us_per_heartbeat},
          {"status_request_ms",
           {{"count", s.status_ms.size()},
            {"p50", Percentile(s.status_ms, 50)},
            {"p99", Percentile(s.status_ms, 99)},
            {"max", Percentile(s.status_ms, 100)}}},
          {"status_query_with_handshake_ms",
           {{"count", s.query_ms.size()},
            {"p50", Percentile(s.query_ms, 50)},
            {"max", Percentile(s.query_ms, 100)}}},
          {"status_peers_listed_min", s.status_peers_min},
          {"burst_messages", s.burst_messages},
          {"burst_probe_replies", s.burst_probe_replies},
          {"burst_s", s.burst_s},
          {"burst_heartbeats_per_s", s.burst_rate},
          {"burst_coordinator_cpu_pct", s.burst_cpu_pct},
          {"burst_coordinator_cpu_us_per_heartbeat", s.burst_cpu_us_per_heartbeat},
          {"admission_coordinator_cpu_ms_per_peer",
           s.admitted ? 1e3 * s.admission_cpu_s / s.admitted : 0},
          {"closed_by_coordinator", s.closed_by_coordinator},
          {"silent_drops_logged", s.silent_lines},
          {"gone_lines_logged", s.gone_lines},
          {"reject_lines_logged", s.reject_lines},
          {"coordinator_rss_kb", s.rss_kb},
          {"coordinator_fds", s.fds},
          {"coordinator_threads", s.threads},
          {"generator_cpu_pct", s.generator_cpu_pct},
          {"error", s.error}};
}

}  // namespace
}  // namespace tributary::bench

int main(int argc, char** argv) {
  using namespace tributary::bench;
  Config c;
  CLI::App app{"coordinator admission / heartbeat / liveness load with simulated peers"};
  app.add_option("--binary", c.binary, "tributary executable")->capture_default_str();
  app.add_option("--data", c.data, "corpus directory (the job's digest)")->capture_default_str();
  app.add_option("--peers", c.peers, "simulated peers (≤ 1024, the job's num_peers cap)")
      ->capture_default_str();
  app.add_option("--heartbeat-ms", c.heartbeat_ms, "one scenario per interval")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--liveness-ms", c.liveness_ms, "0 = 5 × heartbeat")->capture_default_str();
  app.add_option("--duration-s", c.duration_s, "steady heartbeat phase")->capture_default_str();
  app.add_option("--admit-threads", c.admit_threads, "concurrent admissions")
      ->capture_default_str();
  app.add_option("--status-every-ms", c.status_every_ms, "StatusRequest period")
      ->capture_default_str();
  app.add_option("--burst", c.burst, "back-to-back heartbeats per peer in the burst phase")
      ->capture_default_str();
  app.add_option("--burst-probes", c.burst_probes,
                 "peers that time a StatusRequest behind their burst")
      ->capture_default_str();
  app.add_option("--work-dir", c.work_dir, "coordinator logs go here")->capture_default_str();
  app.add_option("--json", c.json, "results file")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const rlim_t fd_limit = RaiseFdLimit();
  if (fd_limit < static_cast<rlim_t>(c.peers) * 2 + 64) {
    std::cerr << "open-file limit " << fd_limit << " is too low for " << c.peers << " peers\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  const std::string load_before = LoadAverages();
  std::vector<Scenario> scenarios;
  for (int hb : c.heartbeat_ms) scenarios.push_back(RunScenario(c, hb));

  std::cout
      << "| heartbeat ms | liveness ms | peers admitted | admissions/s | admit p50 / p99 ms | "
         "coordinator CPU ms/admission | heartbeats/s | coordinator CPU % | CPU µs/heartbeat | "
         "StatusRequest p50 / p99 / max ms | status incl. handshake p50 ms | "
         "burst heartbeats/s (CPU %, µs/heartbeat) | wrongly declared dead |\n"
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Scenario& s : scenarios) {
    if (!s.error.empty()) {
      std::cout << fmt::format("| {} | {} | FAILED: {} |\n", s.heartbeat_ms, s.liveness_ms,
                               s.error);
      continue;
    }
    std::cout << fmt::format(
        "| {} | {} | {}/{} | {:.0f} | {:.1f} / {:.1f} | {:.2f} | {:.0f} | {:.1f} | {:.1f} | {:.1f} "
        "/ {:.1f} / {:.1f} | {:.1f} | "
        "{:.0f} ({:.0f} %, {:.1f}) | {} (closed {}, silent {}) |\n",
        s.heartbeat_ms, s.liveness_ms, s.admitted, s.peers, s.admission_rate, s.admit_p50_ms,
        s.admit_p99_ms, s.admitted ? 1e3 * s.admission_cpu_s / s.admitted : 0.0, s.heartbeat_rate,
        s.steady_cpu_pct, s.cpu_us_per_heartbeat, Percentile(s.status_ms, 50),
        Percentile(s.status_ms, 99), Percentile(s.status_ms, 100), Percentile(s.query_ms, 50),
        s.burst_rate, s.burst_cpu_pct, s.burst_cpu_us_per_heartbeat,
        std::max(s.closed_by_coordinator, s.silent_lines) > 0 ? "YES" : "none",
        s.closed_by_coordinator, s.silent_lines);
  }
  nlohmann::json out;
  out["benchmark"] = "coordinator_load";
  out["host_cpus"] = std::thread::hardware_concurrency();
  out["fd_limit"] = static_cast<uint64_t>(fd_limit);
  out["loadavg_before"] = load_before;
  out["loadavg_after"] = LoadAverages();
  out["config"] = {{"peers", c.peers},
                   {"duration_s", c.duration_s},
                   {"admit_threads", c.admit_threads},
                   {"status_every_ms", c.status_every_ms},
                   {"burst", c.burst},
                   {"burst_probes", c.burst_probes},
                   {"num_peers", 1024},
                   {"min_peers", 1024}};
  for (const Scenario& s : scenarios) out["scenarios"].push_back(ToJson(s));
  std::ofstream(c.json) << out.dump(2) << "\n";
  std::cerr << "wrote " << c.json << "\n";
  bool ok = true;
  for (const Scenario& s : scenarios) ok = ok && s.error.empty() && s.admitted == s.peers;
  return ok ? 0 : 1;
}
