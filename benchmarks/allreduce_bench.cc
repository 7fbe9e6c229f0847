// tributary_bench_allreduce: launcher and entry point. See allreduce_bench.h.
#include "benchmarks/allreduce_bench.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <thread>

#include "core/clock.h"
#include "core/files.h"
#include "core/logging.h"

#ifndef TRIBUTARY_SOURCE_DIR
#define TRIBUTARY_SOURCE_DIR "."
#endif

namespace tributary::bench {

using namespace std::chrono_literals;

nlohmann::json ToJson(const SizeResult& r) {
  return {{"bytes", r.bytes},
          {"ours_s", r.ours_s},
          {"ours_path", r.ours_path},
          {"ring_s", r.ring_s},
          {"ring_cpu_s", r.ring_cpu_s},
          {"gloo_s", r.gloo_s},
          {"gloo_chunked_s", r.gloo_chunked_s},
          {"max_abs_diff_ours_vs_gloo", r.max_abs_diff_ours_vs_gloo},
          {"max_abs_err_ours_vs_fp64", r.max_abs_err_ours_vs_fp64},
          {"ours_bit_identical", r.ours_bit_identical},
          {"gloo_bit_identical", r.gloo_bit_identical},
          {"ok", r.ok},
          {"ours_cpu_s", r.ours_cpu_s},
          {"gloo_cpu_s", r.gloo_cpu_s},
          {"gloo_chunked_cpu_s", r.gloo_chunked_cpu_s}};
}

Result<SizeResult> SizeResultFromJson(const nlohmann::json& j) {
  try {
    SizeResult r;
    r.bytes = j.at("bytes").get<uint64_t>();
    r.ours_s = j.at("ours_s").get<std::vector<double>>();
    r.ours_path = j.value("ours_path", std::string("ring"));
    r.ring_s = j.value("ring_s", std::vector<double>{});
    r.ring_cpu_s = j.value("ring_cpu_s", 0.0);
    r.gloo_s = j.at("gloo_s").get<std::vector<double>>();
    r.gloo_chunked_s = j.at("gloo_chunked_s").get<std::vector<double>>();
    r.max_abs_diff_ours_vs_gloo = j.at("max_abs_diff_ours_vs_gloo").get<double>();
    r.max_abs_err_ours_vs_fp64 = j.at("max_abs_err_ours_vs_fp64").get<double>();
    r.ours_bit_identical = j.at("ours_bit_identical").get<bool>();
    r.gloo_bit_identical = j.at("gloo_bit_identical").get<bool>();
    r.ok = j.at("ok").get<bool>();
    r.ours_cpu_s = j.value("ours_cpu_s", 0.0);
    r.gloo_cpu_s = j.value("gloo_cpu_s", 0.0);
    r.gloo_chunked_cpu_s = j.value("gloo_chunked_cpu_s", 0.0);
    return r;
  } catch (const std::exception& e) {
    return Corruption(std::string("bad worker result: ") + e.what());
  }
}

namespace {

constexpr double kMiB = 1 << 20;

// This binary, by its real path (so that `ps` shows what the workers are).
std::string SelfPath() {
  std::error_code ec;
  auto path = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "/proc/self/exe" : path.string();
}

std::vector<std::string> WorkerArgs(const BenchConfig& c, uint32_t world, uint32_t rank,
                                    const std::string& dir) {
  auto join = [](const auto& values) {
    std::string out;
    for (const auto& v : values) out += (out.empty() ? "" : ",") + fmt::format("{}", v);
    return out;
  };
  return {SelfPath(),        "--worker",
          "--rank",          std::to_string(rank),
          "--world",         std::to_string(world),
          "--dir",           dir,
          "--sizes-mib",     join(c.sizes_mib),
          "--reps",          std::to_string(c.reps),
          "--small-reps",    std::to_string(c.small_reps),
          "--small-mib",     fmt::format("{}", c.small_mib),
          "--big-reps",      std::to_string(c.big_reps),
          "--big-mib",       fmt::format("{}", c.big_mib),
          "--warmup",        std::to_string(c.warmup),
          "--segment-bytes", std::to_string(c.segment_bytes),
          "--timeout-s",     std::to_string(c.timeout_s),
          "--gloo-chunked",  c.gloo_chunked ? "true" : "false",
          "--direct-max-bytes", std::to_string(c.direct_max_bytes),
          "--doubling-max-bytes", std::to_string(c.doubling_max_bytes)};
}

Result<pid_t> Spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return IoError("fork failed");
  if (pid == 0) {
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Waits for every worker. Once one fails or the deadline passes, the rest are killed: they would
// otherwise sit in a collective that can no longer complete.
Status WaitAll(std::vector<pid_t> pids, Deadline deadline) {
  Status outcome;
  while (!pids.empty()) {
    for (auto it = pids.begin(); it != pids.end();) {
      int wstatus = 0;
      if (waitpid(*it, &wstatus, WNOHANG) == 0) {
        ++it;
        continue;
      }
      if (!(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) && outcome.ok()) {
        const std::string how = WIFSIGNALED(wstatus)
                                    ? "was killed by signal " + std::to_string(WTERMSIG(wstatus))
                                    : "exited with " + std::to_string(WEXITSTATUS(wstatus));
        outcome =
            Internal("worker pid " + std::to_string(*it) + " " + how + " (its log above says why)");
      }
      it = pids.erase(it);
    }
    if (pids.empty()) break;
    if (!outcome.ok() || Clock::now() >= deadline) {
      for (pid_t pid : pids) kill(pid, SIGKILL);
      for (pid_t pid : pids) waitpid(pid, nullptr, 0);
      return outcome.ok() ? DeadlineExceeded("workers did not finish in time; killed") : outcome;
    }
    std::this_thread::sleep_for(20ms);
  }
  return outcome;
}

Result<std::vector<SizeResult>> RunWorld(const BenchConfig& config, uint32_t world) {
  std::string dir = "/tmp/tributary-bench-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) return IoError("mkdtemp failed");
  TRIB_RETURN_IF_ERROR(MakeDirectories(dir + "/gloo"));
  std::vector<pid_t> pids;
  Status spawned;
  for (uint32_t r = 0; r < world && spawned.ok(); ++r) {
    auto pid = Spawn(WorkerArgs(config, world, r, dir));
    if (pid.ok()) {
      pids.push_back(*pid);
    } else {
      spawned = pid.status();
    }
  }
  Status waited = WaitAll(pids, DeadlineAfter(std::chrono::seconds(config.timeout_s)));
  auto text = ReadWholeFile(dir + "/results.json");
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  TRIB_RETURN_IF_ERROR(spawned);
  TRIB_RETURN_IF_ERROR(waited);
  if (!text.ok()) return text.status();
  std::vector<SizeResult> out;
  try {
    const nlohmann::json doc = nlohmann::json::parse(*text);
    for (const auto& j : doc.at("sizes")) {
      TRIB_ASSIGN_OR_RETURN(SizeResult r, SizeResultFromJson(j));
      out.push_back(std::move(r));
    }
  } catch (const std::exception& e) {
    return Corruption(std::string("bad results.json: ") + e.what());
  }
  return out;
}

std::string TableRow(uint32_t world, const SizeResult& r, const std::string& spread) {
  const double ours = Median(r.ours_s), gloo = Median(r.gloo_s), mib = r.bytes / kMiB;
  const double ring = r.ring_s.empty() ? 0 : Median(r.ring_s);
  std::string chunked = "–";
  if (!r.gloo_chunked_s.empty()) {
    const double c = Median(r.gloo_chunked_s);
    chunked = fmt::format("{:.2f} ({:.2f})", c * 1e3, c / ours);
  }
  const std::string size = r.bytes >= kMiB ? fmt::format("{:g} MiB", mib)
                                           : fmt::format("{:g} KiB", r.bytes / 1024.0);
  // CPU cost: ns of CPU (all ranks together) per byte of the tensor reduced.
  const double bytes = static_cast<double>(r.bytes);
  return fmt::format(
      "| {} | {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.0f} | {:.2f} | {} | {:.2f} | {} | {:.2f} | {:.2f} | {} |",
      world, size, r.ours_path, ours * 1e3, ring * 1e3, gloo * 1e3, mib / ours, gloo / ours,
      spread, gloo / ring, chunked, r.ours_cpu_s / bytes * 1e9, r.gloo_cpu_s / bytes * 1e9,
      r.ok ? "ok" : "FAILED");
}

// One cell measured in several runs: every run's repetitions pooled (the row's medians), the
// CPU cost averaged, and each run's own gloo/ours ratio of medians kept (the spread over runs).
struct Cell {
  SizeResult pooled;
  std::vector<double> run_ratios;  // Median(gloo_s) / Median(ours_s) of each run
};

void AddRun(Cell& cell, const SizeResult& run) {
  SizeResult& p = cell.pooled;
  const size_t runs_before = cell.run_ratios.size();
  if (runs_before == 0) {
    p = run;
  } else {
    auto append = [](std::vector<double>& to, const std::vector<double>& from) {
      to.insert(to.end(), from.begin(), from.end());
    };
    append(p.ours_s, run.ours_s);
    append(p.ring_s, run.ring_s);
    append(p.gloo_s, run.gloo_s);
    append(p.gloo_chunked_s, run.gloo_chunked_s);
    p.max_abs_diff_ours_vs_gloo = std::max(p.max_abs_diff_ours_vs_gloo, run.max_abs_diff_ours_vs_gloo);
    p.max_abs_err_ours_vs_fp64 = std::max(p.max_abs_err_ours_vs_fp64, run.max_abs_err_ours_vs_fp64);
    p.ours_bit_identical = p.ours_bit_identical && run.ours_bit_identical;
    p.gloo_bit_identical = p.gloo_bit_identical && run.gloo_bit_identical;
    p.ok = p.ok && run.ok;
    // The path is a function of size and options, so runs agree; name both if one day they do not.
    if (("/" + p.ours_path + "/").find("/" + run.ours_path + "/") == std::string::npos) {
      p.ours_path += "/" + run.ours_path;
    }
    const double n = static_cast<double>(runs_before);
    auto mean = [n](double so_far, double next) { return (so_far * n + next) / (n + 1); };
    p.ours_cpu_s = mean(p.ours_cpu_s, run.ours_cpu_s);
    p.ring_cpu_s = mean(p.ring_cpu_s, run.ring_cpu_s);
    p.gloo_cpu_s = mean(p.gloo_cpu_s, run.gloo_cpu_s);
    p.gloo_chunked_cpu_s = mean(p.gloo_chunked_cpu_s, run.gloo_chunked_cpu_s);
  }
  cell.run_ratios.push_back(Median(run.gloo_s) / Median(run.ours_s));
}

// "0.93 [0.81–1.12]" over runs, or "–" for a single run.
std::string RatioSpread(const std::vector<double>& ratios) {
  if (ratios.size() < 2) return "–";
  const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());
  return fmt::format("{:.2f} [{:.2f}–{:.2f}]", Median(ratios), *lo, *hi);
}

}  // namespace

int RunLauncher(const BenchConfig& config) {
  InitLogging("bench", "info");
  const std::string load_before = LoadAverages();
  nlohmann::json results = nlohmann::json::array();
  std::vector<std::string> rows;
  bool all_ok = true;
  for (uint32_t world : config.worlds) {
    std::vector<Cell> cells;
    for (uint32_t run = 0; run < config.runs; ++run) {
      auto sizes = RunWorld(config, world);
      if (!sizes.ok()) {
        spdlog::error("world {} run {}: {}", world, run + 1, sizes.status().ToString());
        all_ok = false;
        continue;
      }
      cells.resize(sizes->size());
      for (size_t i = 0; i < sizes->size(); ++i) AddRun(cells[i], (*sizes)[i]);
      if (config.runs > 1) spdlog::info("world {}: run {} of {} done", world, run + 1, config.runs);
    }
    for (const Cell& cell : cells) {
      const SizeResult& r = cell.pooled;
      rows.push_back(TableRow(world, r, RatioSpread(cell.run_ratios)));
      all_ok = all_ok && r.ok;
      nlohmann::json j = ToJson(r);
      j["world"] = world;
      j["runs"] = cell.run_ratios.size();
      j["gloo_over_ours_per_run"] = cell.run_ratios;
      if (cell.run_ratios.size() > 1) j["gloo_over_ours_median_over_runs"] = Median(cell.run_ratios);
      j["ours_median_s"] = Median(r.ours_s);
      if (!r.ring_s.empty()) j["ring_median_s"] = Median(r.ring_s);
      j["gloo_median_s"] = Median(r.gloo_s);
      // The fastest repetition: what each algorithm achieves when the (shared) machine lets it.
      j["ours_min_s"] = *std::min_element(r.ours_s.begin(), r.ours_s.end());
      j["gloo_min_s"] = *std::min_element(r.gloo_s.begin(), r.gloo_s.end());
      if (!r.gloo_chunked_s.empty()) j["gloo_chunked_median_s"] = Median(r.gloo_chunked_s);
      j["ours_cpu_ns_per_byte"] = r.ours_cpu_s / static_cast<double>(r.bytes) * 1e9;
      j["gloo_cpu_ns_per_byte"] = r.gloo_cpu_s / static_cast<double>(r.bytes) * 1e9;
      j["gloo_chunked_cpu_ns_per_byte"] = r.gloo_chunked_cpu_s / static_cast<double>(r.bytes) * 1e9;
      results.push_back(j);
    }
  }
  std::cout << "| world | size | ours path | ours ms | ring ms | gloo ms | ours algbw MiB/s | "
               "gloo/ours time | gloo/ours per run: median [min–max] | gloo/ring time | gloo chunked ms (time/ours) | ours CPU ns/B | "
               "gloo CPU ns/B | sums agree |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& row : rows) std::cout << row << "\n";
  std::cout
      << "\nMedian of per-repetition times (pooled over every run); each repetition's time is the "
         "slowest rank's, "
         "from a Gloo barrier to the end of its all-reduce. \"ours\" is MeshCommunicator (the "
         "path it picked); \"ring\" is RingAllreduce over the same mesh. "
         "algbw = size / time. CPU ns/B = CPU "
         "time (getrusage, user + system, all threads) of all ranks together for one all-reduce, "
         "per byte of the tensor. \"gloo\" "
         "is gloo::AllreduceRing<float>; \"gloo chunked\" is gloo::AllreduceRingChunked<float>. "
         "Runs: " << config.runs << " (fresh worker processes and connections each); the per-run "
         "column is each run's ratio of medians.\n";
  const std::string load_after = LoadAverages();
  std::cout << "Load average (1/5/15 min) before: " << load_before << ", after: " << load_after
            << ", on " << std::thread::hardware_concurrency() << " CPUs.\n";

  nlohmann::json doc = {{"benchmark", "allreduce_loopback"},
                        {"ours", "tributary MeshCommunicator (direct path below its threshold, recursive doubling up to the next at power-of-two worlds >= 4, else RingAllreduce over the mesh)"},
                        {"ring", "tributary RingAllreduce (pipelined reduce-scatter + all-gather) over the same mesh"},
                        {"gloo", "gloo 0.5.0 AllreduceRing<float>, TCP transport"},
                        {"gloo_chunked", "gloo 0.5.0 AllreduceRingChunked<float>, TCP transport"},
                        {"host_cpus", std::thread::hardware_concurrency()},
                        {"loadavg_before", load_before},
                        {"loadavg_after", load_after},
                        {"segment_bytes", config.segment_bytes},
                        {"runs", config.runs},
                        {"warmup", config.warmup},
                        {"reps", config.reps},
                        {"small_reps", config.small_reps},
                        {"small_mib", config.small_mib},
                        {"big_reps", config.big_reps},
                        {"big_mib", config.big_mib},
                        {"results", results}};
  const std::filesystem::path path(config.json_path);
  if (path.has_parent_path()) (void)MakeDirectories(path.parent_path().string());
  Status written = WriteFileAtomically(config.json_path, doc.dump(2) + "\n");
  if (!written.ok()) {
    spdlog::error("{}", written.ToString());
    return 1;
  }
  spdlog::info("wrote {}", config.json_path);
  return all_ok ? 0 : 1;
}

}  // namespace tributary::bench

int main(int argc, char** argv) {
  using tributary::bench::BenchConfig;
  BenchConfig config;
  config.json_path =
      std::string(TRIBUTARY_SOURCE_DIR) + "/benchmarks/results/allreduce_loopback.json";
  bool worker = false;
  CLI::App app("All-reduce benchmark: tributary's ring vs Gloo's AllreduceRing on loopback");
  app.add_option("--worlds", config.worlds, "world sizes, e.g. 2,4")->delimiter(',');
  app.add_option("--sizes-mib", config.sizes_mib, "tensor sizes in MiB")->delimiter(',');
  app.add_option("--reps", config.reps, "timed repetitions per size")->check(CLI::Range(1, 1000));
  app.add_option("--big-reps", config.big_reps, "timed repetitions for sizes >= --big-mib")
      ->check(CLI::Range(1, 1000));
  app.add_option("--big-mib", config.big_mib);
  app.add_option("--small-reps", config.small_reps, "timed repetitions for sizes <= --small-mib")
      ->check(CLI::Range(1, 10000));
  app.add_option("--small-mib", config.small_mib);
  app.add_option("--warmup", config.warmup, "untimed repetitions first");
  app.add_option("--segment-bytes", config.segment_bytes, "our ring's segment size");
  app.add_option("--timeout-s", config.timeout_s, "per world size");
  app.add_option("--json", config.json_path, "where to write the JSON results");
  app.add_option("--gloo-chunked", config.gloo_chunked, "also time AllreduceRingChunked");
  app.add_option("--direct-max-bytes", config.direct_max_bytes,
                 "largest tensor ours sends by the direct path (default: the link model's threshold)");
  app.add_option("--doubling-max-bytes", config.doubling_max_bytes,
                 "largest tensor ours sends by recursive doubling at power-of-two worlds >= 4 "
                 "(default: the link model's threshold; 0: never)");
  app.add_option("--runs", config.runs, "fresh sets of worker processes per world size")
      ->check(CLI::Range(1, 100));
  app.add_flag("--worker", worker, "internal: run one rank");
  app.add_option("--rank", config.rank);
  app.add_option("--world", config.world);
  app.add_option("--dir", config.dir);
  CLI11_PARSE(app, argc, argv);
  return worker ? tributary::bench::RunWorker(config) : tributary::bench::RunLauncher(config);
}
