// `tributary-bench SCENARIO.toml`: runs Tributary and its baselines on one emulated WAN, in one
// invocation, on the same model, data and token budget, and reports tokens/s, compute
// utilisation, all-reduce time, bytes on the wire per peer, eval loss vs wall-clock and tokens,
// and the stall after a fault (docs/BENCHMARKS.md, "Training over the emulated WAN").
//
// Outputs: a Markdown table on stdout, benchmarks/results/wan_<scenario>.json, PNG plots next to
// it, and every process's log under the run directory. A progress line goes to stderr.
//
// Exit codes: 0 every system ran (a system a configured fault stopped still counts), 1 a system
// failed, 2 bad arguments or scenario, 3 missing privileges or programs, 130 interrupted.
#include <CLI/CLI.hpp>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "benchmarks/wan/wan_emulator.h"
#include "benchmarks/wanbench/plots.h"
#include "benchmarks/wanbench/report.h"
#include "benchmarks/wanbench/runner.h"
#include "benchmarks/wanbench/scenario.h"
#include "core/files.h"
#include "core/logging.h"

#include <fmt/format.h>

namespace tributary::wanbench {
namespace {

namespace fs = std::filesystem;

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop.store(true); }

struct Flags {
  std::string scenario;
  std::string out_dir = std::string(TRIBUTARY_SOURCE_DIR) + "/benchmarks/results";
  std::string run_dir;
  std::string data = std::string(TRIBUTARY_SOURCE_DIR) + "/data/moby-dick";
  std::string tributary = TRIBUTARY_BINARY;
  std::string gloo = TRIBUTARY_GLOO_DDP_BINARY;
  std::vector<std::string> systems;
  bool check = false;
  bool no_plots = false;
};

void Say(const std::string& line) {
  std::fprintf(stderr, "tributary-bench: %s\n", line.c_str());
  std::fflush(stderr);
}

int Fail(const Status& st, int code) {
  Say(st.ToString());
  return code;
}

std::string Stamp(const char* format) {
  char buf[64];
  std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof(buf), format, std::localtime(&now));
  return buf;
}

double LoadAverage() {
  double load[1] = {0};
  return ::getloadavg(load, 1) == 1 ? load[0] : -1;
}

Status Prerequisites(const Flags& f) {
  for (const auto& [what, path] : {std::pair{"tributary", f.tributary}, std::pair{"tributary-gloo-ddp", f.gloo}}) {
    if (::access(path.c_str(), X_OK) != 0) {
      return FailedPrecondition(std::string(what) + " binary not found at " + path +
                                " (build it: ninja -C <build> tributary tributary-gloo-ddp)");
    }
  }
  if (!fs::is_directory(f.data)) {
    return FailedPrecondition("corpus directory " + f.data + " is missing (run scripts/fetch_corpus.sh)");
  }
  return wan::WanEmulator::CheckPrerequisites();
}

int Main(int argc, char** argv, Flags& f) {
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  InitLogging("bench", "warn");
  auto loaded = LoadBenchScenarioFile(f.scenario);
  if (!loaded.ok()) return Fail(loaded.status(), 2);
  BenchScenario s = *loaded;
  if (!f.systems.empty()) {
    std::vector<SystemSpec> chosen;
    for (const auto& name : f.systems) {
      auto it = std::find_if(s.systems.begin(), s.systems.end(), [&](const SystemSpec& x) { return x.name == name; });
      if (it == s.systems.end()) return Fail(InvalidArgument("--systems: '" + name + "' is not in " + f.scenario), 2);
      chosen.push_back(*it);
    }
    s.systems = chosen;
  }
  if (f.check) {
    std::printf("%s\n%s", DescribeScenario(s).c_str(), wan::DescribeLinks(s.network).c_str());
    for (const auto& system : s.systems) {
      const v1::JobSpec spec = SpecFor(s, system);
      std::printf("%s: %u rounds × %u steps, min_peers %u, gather_ms %u\n", system.name.c_str(),
                  spec.rounds(), spec.inner_steps(), spec.min_peers(), spec.gather_ms());
    }
    return 0;
  }
  Say(DescribeScenario(s));
  if (Status st = Prerequisites(f); !st.ok()) return Fail(st, 3);

  const std::string run_dir = f.run_dir.empty() ? "runs/bench-" + s.name + "-" + Stamp("%Y%m%d-%H%M%S") : f.run_dir;
  if (Status st = MakeDirectories(run_dir); !st.ok()) return Fail(st, 3);
  if (Status st = MakeDirectories(f.out_dir); !st.ok()) return Fail(st, 3);
  const std::string job_file = fs::absolute(run_dir + "/job.toml").string();
  if (Status st = WriteFileAtomically(job_file, s.job_toml); !st.ok()) return Fail(st, 3);

  // Our own handlers: an interrupted run stops its processes, then the emulator, in order.
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);

  RunInfo info;
  info.command = command;
  info.started_at = Stamp("%Y-%m-%dT%H:%M:%S%z");
  info.load_before = LoadAverage();
  info.cpus = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  info.run_dir = fs::absolute(run_dir).string();

  wan::WanConfig config = s.network;
  config.name_prefix = "tbench";
  config.handle_signals = false;
  auto wan = wan::WanEmulator::Start(config);
  if (!wan.ok()) return Fail(wan.status(), 3);
  Say("network " + (*wan)->run_id() + " up; logs in " + info.run_dir);

  RunnerOptions options;
  options.tributary_binary = fs::absolute(f.tributary).string();
  options.gloo_binary = fs::absolute(f.gloo).string();
  options.corpus_dir = fs::absolute(f.data).string();
  options.run_dir = info.run_dir;
  options.job_file = job_file;
  options.stop = &g_stop;
  options.count = static_cast<int>(s.systems.size());
  std::vector<SystemResult> results;
  bool failed = false;
  for (size_t i = 0; i < s.systems.size(); ++i) {
    options.index = static_cast<int>(i);
    auto result = RunSystem(**wan, s, s.systems[i], options);
    if (!result.ok()) {
      (*wan)->Stop();
      if (result.status().code() == StatusCode::kAborted) {
        Say("interrupted: processes stopped, namespaces removed");
        return 130;
      }
      return Fail(result.status(), 3);
    }
    const SystemResult& r = *result;
    Say(r.name + (r.ok ? ": ok" : ": FAILED: " + r.error) + ", " + std::to_string(r.rounds.size()) + " rounds in " +
        fmt::format("{:.1f} s", r.train_seconds));
    if (!r.ok && !s.FaultFor(r.name)) failed = true;
    results.push_back(r);
  }
  (*wan)->Stop();
  info.load_after = LoadAverage();
  info.reference_compute_s_per_step = Normalise(results);

  const std::string prefix = f.out_dir + "/wan_" + s.name;
  if (!f.no_plots) {
    PlotRequest plot{s.name + " (" + std::to_string(s.peers()) + " peers)", info.run_dir, prefix};
    auto plots = DrawPlots(plot, results);
    if (plots.ok()) {
      info.plots = *plots;
    } else {
      Say("no plots: " + plots.status().ToString());
    }
  }
  const std::string json_path = prefix + ".json";
  if (Status st = WriteFileAtomically(json_path, ReportJson(s, results, info).dump(2) + "\n"); !st.ok()) {
    return Fail(st, 1);
  }
  const std::string table = MarkdownReport(s, results);
  (void)WriteFileAtomically(info.run_dir + "/report.md", table);
  std::printf("%s\n", table.c_str());
  std::fflush(stdout);
  Say("results in " + json_path + (info.plots.empty() ? "" : " and " + std::to_string(info.plots.size()) + " plots beside it"));
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace tributary::wanbench

int main(int argc, char** argv) {
  using namespace tributary::wanbench;
  Flags f;
  CLI::App app{"Run one WAN scenario for Tributary and its baselines (docs/BENCHMARKS.md)"};
  app.add_option("scenario", f.scenario, "scenario TOML (benchmarks/scenarios/*.toml)")->required();
  app.add_option("--out-dir", f.out_dir, "JSON and plots go here")->capture_default_str();
  app.add_option("--run-dir", f.run_dir, "process logs go here (default runs/bench-<scenario>-<time>)");
  app.add_option("--data", f.data, "corpus directory")->capture_default_str();
  app.add_option("--tributary", f.tributary, "the tributary binary")->capture_default_str();
  app.add_option("--gloo-ddp", f.gloo, "the tributary-gloo-ddp binary")->capture_default_str();
  app.add_option("--systems", f.systems, "run only these systems of the scenario")->delimiter(',');
  app.add_flag("--check", f.check, "parse the scenario, print the plan, run nothing");
  app.add_flag("--no-plots", f.no_plots, "skip gnuplot");
  CLI11_PARSE(app, argc, argv);
  return Main(argc, argv, f);
}
