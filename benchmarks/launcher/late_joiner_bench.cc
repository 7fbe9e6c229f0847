// tributary_bench_late_joiner: how long a peer that joins a running job takes to become a
// contributor, as a function of model size.
//
// For each model size: the real `tributary` binary runs a coordinator (num_peers 3, min_peers 2)
// and two peers; once `--warm-rounds` rounds have committed, a third peer process is started.
// The timeline of that late peer is read from the log timestamps (spdlog, millisecond
// resolution) of its own log and the coordinator's, measured from the moment it was spawned:
//
//   up         its log's first line (process start, libtorch loaded, identity ready)
//   connected  handshake + Hello + HelloAck done
//   trainer    model built: "joined job ..."
//   synced     committed state fetched and verified: "synced round R (N bytes ...) in X s"
//   ready      the coordinator accepted its Ready: "peer late synced job ... at round R"
//   computed   it finished its first round: "round K attempt A: loss ..."
//   committed  the coordinator committed that round with it: "round K complete: 3 peers"
//
// Results: a Markdown table on stdout and JSON (--json).
#include <fmt/format.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "benchmarks/launcher/bench_util.h"
#include "core/clock.h"
#include "launcher/process.h"

#ifndef TRIBUTARY_SOURCE_DIR
#define TRIBUTARY_SOURCE_DIR "."
#endif

namespace tributary::bench {
namespace {

using namespace std::chrono_literals;
using launcher::ChildProcess;

struct Size {
  int d_model = 0, n_layer = 0;
};

struct Config {
  std::string binary = TRIBUTARY_BINARY;
  std::string data = std::string(TRIBUTARY_SOURCE_DIR) + "/data/moby-dick";
  std::vector<std::string> sizes = {"64x2", "128x2", "256x3", "384x4"};
  int reps = 2;
  int warm_rounds = 3;
  int rounds = 40;
  int inner_steps = 4;
  int batch_size = 8;
  int context = 64;
  int n_head = 4;
  int eval_batches = 2;
  int gather_ms = 0;
  int liveness_timeout_ms = 0;  // 0 = the job default (5 × heartbeat)
  int round_timeout_ms = 60000;
  int timeout_s = 300;
  std::string work_dir = "/tmp/trib-bench-late";
  std::string json = std::string(TRIBUTARY_SOURCE_DIR) + "/benchmarks/results/late_joiner.json";
};

struct Run {
  Size size;
  int rep = 0;
  bool ok = false;
  std::string error;
  int64_t parameters = -1;
  int64_t state_bytes = -1;
  double round_period_s = 0;  // median commit-to-commit time before the join
  double up_s = -1, connected_s = -1, trainer_s = -1, synced_s = -1, ready_s = -1, computed_s = -1,
         committed_s = -1;      // since spawn
  double sync_transfer_s = -1;  // the peer's own "in X s" for its last sync
  int syncs = 0;                // state fetches before it became ready (> 1: the state moved on)
  int dropped = 0;              // times the coordinator dropped it before it contributed
  int joined_round = -1;        // first round it contributed to
  int rounds_waited = 0;        // rounds committed between spawn and that round
};

nlohmann::json ToJson(const Run& r) {
  return {{"d_model", r.size.d_model},
          {"n_layer", r.size.n_layer},
          {"rep", r.rep},
          {"ok", r.ok},
          {"error", r.error},
          {"parameters", r.parameters},
          {"state_bytes", r.state_bytes},
          {"round_period_s", r.round_period_s},
          {"up_s", r.up_s},
          {"connected_s", r.connected_s},
          {"trainer_ready_s", r.trainer_s},
          {"synced_s", r.synced_s},
          {"ready_s", r.ready_s},
          {"first_round_computed_s", r.computed_s},
          {"first_contribution_s", r.committed_s},
          {"sync_transfer_s", r.sync_transfer_s},
          {"syncs", r.syncs},
          {"dropped_by_coordinator", r.dropped},
          {"first_round", r.joined_round},
          {"rounds_committed_while_joining", r.rounds_waited}};
}

std::optional<double> Since(double spawn, const std::string& line) {
  auto t = LineTime(line);
  if (!t) return std::nullopt;
  double d = *t - spawn;
  if (d < -43200) d += 86400;  // past midnight
  return d;
}

Run Measure(const Config& c, Size size, int rep) {
  Run run;
  run.size = size;
  run.rep = rep;
  const std::string dir =
      fmt::format("{}/d{}-l{}-r{}", c.work_dir, size.d_model, size.n_layer, rep);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    std::ofstream toml(dir + "/job.toml");
    toml << "[job]\nname = \"late-joiner-bench\"\neval_batches = " << c.eval_batches << "\n";
  }
  const std::string coord_log = dir + "/coordinator.log";
  const std::vector<std::string> model = {
      "--job-file", dir + "/job.toml",         "--n-layer",    std::to_string(size.n_layer),
      "--n-head",   std::to_string(c.n_head),  "--d-model",    std::to_string(size.d_model),
      "--context",  std::to_string(c.context), "--batch-size", std::to_string(c.batch_size)};
  std::vector<std::string> argv = {c.binary,
                                   "coordinator",
                                   "--data",
                                   c.data,
                                   "--port-file",
                                   dir + "/port",
                                   "--peers",
                                   "3",
                                   "--min-peers",
                                   "2",
                                   "--gather-ms",
                                   std::to_string(c.gather_ms),
                                   "--rounds",
                                   std::to_string(c.rounds),
                                   "--inner-steps",
                                   std::to_string(c.inner_steps),
                                   "--mode",
                                   "diloco",
                                   "--round-timeout-ms",
                                   std::to_string(c.round_timeout_ms)};
  if (c.liveness_timeout_ms > 0) {
    argv.insert(argv.end(), {"--liveness-timeout-ms", std::to_string(c.liveness_timeout_ms)});
  }
  argv.insert(argv.end(), model.begin(), model.end());
  auto coordinator = ChildProcess::Spawn(argv, {}, coord_log);
  if (!coordinator.ok()) {
    run.error = coordinator.status().ToString();
    return run;
  }
  const Deadline give_up = DeadlineAfter(std::chrono::seconds(c.timeout_s));
  while (!FileExists(dir + "/port")) {
    if (Clock::now() > give_up || coordinator->Poll()) {
      run.error = "coordinator did not start";
      return run;
    }
    std::this_thread::sleep_for(20ms);
  }
  std::istringstream in(ReadFileOrEmpty(dir + "/port"));
  int port = 0;
  std::string job, key;
  in >> port >> job >> key;
  const std::map<std::string, std::string> env = {{"OPENBLAS_NUM_THREADS", "1"},
                                                  {"OMP_NUM_THREADS", "1"}};
  auto peer = [&](const std::string& name) {
    return ChildProcess::Spawn(
        {c.binary, "peer", "--coordinator", fmt::format("127.0.0.1:{}", port), "--job", job,
         "--name", name, "--data", c.data, "--coordinator-key", key},
        env, dir + "/" + name + ".log");
  };
  auto p0 = peer("p0");
  auto p1 = peer("p1");
  if (!p0.ok() || !p1.ok()) {
    run.error = "cannot start peers";
    return run;
  }
  static const std::regex round_re(R"(round (\d+) complete: (\d+) peers)");
  auto commits = [&] {
    std::vector<std::pair<double, std::smatch>> out;
    for (const auto& line : Lines(ReadFileOrEmpty(coord_log))) {
      std::smatch m;
      if (std::regex_search(line, m, round_re)) {
        if (auto t = LineTime(line)) out.emplace_back(*t, m);
      }
    }
    return out;
  };
  while (static_cast<int>(commits().size()) < c.warm_rounds) {
    if (Clock::now() > give_up || coordinator->Poll()) {
      run.error = "warm-up rounds did not commit";
      return run;
    }
    std::this_thread::sleep_for(50ms);
  }
  {
    auto before = commits();
    std::vector<double> gaps;
    for (size_t i = 1; i < before.size(); ++i)
      gaps.push_back(before[i].first - before[i - 1].first);
    run.round_period_s = Median(gaps);
  }
  const int committed_at_spawn = static_cast<int>(commits().size());
  const double spawn = NowOfDay();
  auto late = peer("late");
  if (!late.ok()) {
    run.error = "cannot start the late peer";
    return run;
  }
  const std::string late_log = dir + "/late.log";
  // Wait for the first round committed with 3 peers (the late one is the only possible third).
  for (;;) {
    bool found = false;
    for (auto& [t, m] : commits()) {
      if (std::stoi(m[2].str()) == 3) {
        run.joined_round = std::stoi(m[1].str());
        double d = t - spawn;
        if (d < -43200) d += 86400;
        run.committed_s = d;
        found = true;
        break;
      }
    }
    if (found) break;
    if (Clock::now() > give_up || coordinator->Poll() || late->Poll()) {
      run.error = late->Poll() ? "the late peer exited" : "the late peer never contributed";
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  const auto late_lines = Lines(ReadFileOrEmpty(late_log));
  const auto coord_lines = Lines(ReadFileOrEmpty(coord_log));
  if (!late_lines.empty()) {
    if (auto d = Since(spawn, late_lines.front())) run.up_s = *d;
  }
  auto at = [&](const std::vector<std::string>& lines, const std::regex& re, double& out) {
    if (auto hit = FindLine(lines, re)) {
      if (auto d = Since(spawn, hit->first)) out = *d;
      return hit;
    }
    return decltype(FindLine(lines, re))();
  };
  at(late_lines, std::regex("connected to coordinator"), run.connected_s);
  if (auto hit = at(late_lines, std::regex(R"(joined job .*: (\d+) parameters)"), run.trainer_s)) {
    run.parameters = std::stoll(hit->second[1].str());
  }
  static const std::regex synced_re(R"(synced round (\d+) \((\d+) bytes.* in ([0-9.]+) s)");
  for (const auto& line : late_lines) {
    std::smatch m;
    if (!std::regex_search(line, m, synced_re)) continue;
    const auto d = Since(spawn, line);
    if (!d || (run.committed_s >= 0 && *d > run.committed_s))
      continue;  // later re-syncs don't count
    ++run.syncs;
    run.state_bytes = std::stoll(m[2].str());
    run.sync_transfer_s = std::stod(m[3].str());
    run.synced_s = *d;
  }
  // Ready: the coordinator accepted its synced state, or it re-joined already holding it.
  at(coord_lines, std::regex(R"(peer late synced job|peer late \(.*joined job .* — ready)"),
     run.ready_s);
  at(late_lines, std::regex(R"(round \d+ attempt \d+: loss)"), run.computed_s);
  for (const auto& line : coord_lines) {
    if (line.find("peer late ") != std::string::npos &&
        line.find("gone from job") != std::string::npos) {
      if (run.committed_s < 0 || *Since(spawn, line) < run.committed_s) ++run.dropped;
    }
  }
  run.rounds_waited = run.joined_round >= 0 ? run.joined_round - committed_at_spawn : -1;
  run.ok = run.committed_s >= 0;
  std::cerr << fmt::format(
      "  d_model {} n_layer {} rep {}: {} params, state {} B, first contribution {:.2f} s{}\n",
      size.d_model, size.n_layer, rep, run.parameters, run.state_bytes, run.committed_s,
      run.error.empty() ? "" : " (" + run.error + ")");
  // Everything is SIGKILLed by the ChildProcess destructors; keep the logs for inspection.
  return run;
}

}  // namespace
}  // namespace tributary::bench

int main(int argc, char** argv) {
  using namespace tributary::bench;
  Config c;
  CLI::App app{"time for a late joiner to become a contributor, vs model size"};
  app.add_option("--binary", c.binary, "tributary executable")->capture_default_str();
  app.add_option("--data", c.data, "corpus directory")->capture_default_str();
  app.add_option("--sizes", c.sizes, "D_MODELxN_LAYER list")->delimiter(',')->capture_default_str();
  app.add_option("--reps", c.reps, "runs per size")->capture_default_str();
  app.add_option("--warm-rounds", c.warm_rounds, "rounds committed before the late peer starts")
      ->capture_default_str();
  app.add_option("--rounds", c.rounds, "job length (must outlast the join)")->capture_default_str();
  app.add_option("--inner-steps", c.inner_steps, "H")->capture_default_str();
  app.add_option("--batch-size", c.batch_size, "sequences per step")->capture_default_str();
  app.add_option("--context", c.context, "tokens per sequence")->capture_default_str();
  app.add_option("--eval-batches", c.eval_batches, "validation batches per round")
      ->capture_default_str();
  app.add_option("--gather-ms", c.gather_ms, "job gather window")->capture_default_str();
  app.add_option("--round-timeout-ms", c.round_timeout_ms, "job round deadline")
      ->capture_default_str();
  app.add_option("--liveness-timeout-ms", c.liveness_timeout_ms,
                 "job liveness timeout (0 = 5 × heartbeat)")
      ->capture_default_str();
  app.add_option("--timeout-s", c.timeout_s, "give up on one run after this long")
      ->capture_default_str();
  app.add_option("--work-dir", c.work_dir, "logs of every run go here")->capture_default_str();
  app.add_option("--json", c.json, "results file")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::string load_before = LoadAverages();
  std::vector<Run> runs;
  for (const std::string& s : c.sizes) {
    Size size;
    if (std::sscanf(s.c_str(), "%dx%d", &size.d_model, &size.n_layer) != 2) {
      std::cerr << "bad size " << s << " (want D_MODELxN_LAYER)\n";
      return 2;
    }
    for (int rep = 0; rep < c.reps; ++rep) runs.push_back(Measure(c, size, rep));
  }

  std::cout
      << "| d_model | n_layer | parameters | state bytes | round period s | up s | connected s | "
         "trainer ready s | synced s (transfer s) | syncs | ready s | first round computed s | "
         "first contribution s | rounds while joining | dropped as silent |\n"
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Run& r : runs) {
    std::cout << fmt::format(
        "| {} | {} | {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} ({:.3f}) | {} | "
        "{:.2f} | {:.2f} | {} | {} | {} |\n",
        r.size.d_model, r.size.n_layer, r.parameters, r.state_bytes, r.round_period_s, r.up_s,
        r.connected_s, r.trainer_s, r.synced_s, r.sync_transfer_s, r.syncs, r.ready_s, r.computed_s,
        r.ok ? fmt::format("{:.2f}", r.committed_s) : "FAILED: " + r.error, r.rounds_waited,
        r.dropped);
  }
  nlohmann::json out;
  out["benchmark"] = "late_joiner";
  out["host_cpus"] = std::thread::hardware_concurrency();
  out["loadavg_before"] = load_before;
  out["loadavg_after"] = LoadAverages();
  out["config"] = {{"warm_rounds", c.warm_rounds},
                   {"rounds", c.rounds},
                   {"inner_steps", c.inner_steps},
                   {"batch_size", c.batch_size},
                   {"context", c.context},
                   {"n_head", c.n_head},
                   {"eval_batches", c.eval_batches},
                   {"gather_ms", c.gather_ms},
                   {"round_timeout_ms", c.round_timeout_ms},
                   {"liveness_timeout_ms", c.liveness_timeout_ms},
                   {"num_peers", 3},
                   {"min_peers", 2},
                   {"mode", "diloco"},
                   {"data", c.data}};
  for (const Run& r : runs) out["runs"].push_back(ToJson(r));
  std::ofstream(c.json) << out.dump(2) << "\n";
  std::cerr << "wrote " << c.json << "\n";
  bool all_ok = true;
  for (const Run& r : runs) all_ok = all_ok && r.ok;
  return all_ok ? 0 : 1;
}
