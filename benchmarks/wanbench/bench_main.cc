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
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>

#include "benchmarks/common/bench_stats.h"
#include "benchmarks/wan/netns.h"
#include "benchmarks/wan/wan_emulator.h"
#include "benchmarks/wanbench/plots.h"
#include "benchmarks/wanbench/report.h"
#include "benchmarks/wanbench/runner.h"
#include "benchmarks/wanbench/scenario.h"
#include "benchmarks/wanbench/simulate.h"
#include "benchmarks/wanbench/subprocess.h"
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
  std::string watchdog;  // internal: the run id to remove once stdin reaches EOF
  // --simulate
  bool simulate = false;
  std::vector<int> sim_peers = {16, 64, 256, 1024, 10000};
  std::vector<int> group_sizes;
  std::vector<std::string> codecs = {"int8"};
  std::string from_run;
  double step_seconds = 0, round_overhead = -1;
  int64_t params = 0;
  bool independent_links = false;
};

void Say(const std::string& line) {
  std::fprintf(stderr, "tributary-bench: %s\n", line.c_str());
  std::fflush(stderr);
}

// SIGKILL cannot be caught, so the namespaces of a killed benchmark would stay behind. The
// watchdog is this program again (`--watchdog RUN_ID`), in its own session (Ctrl-C does not
// reach it), reading a pipe whose only writer is the benchmark: EOF means the benchmark is gone,
// however it ended, and it then removes that run's namespaces (CleanupRun checks the owner is
// really dead). Its children die with it already (PR_SET_PDEATHSIG, subprocess.h).
Status StartWatchdog(const std::string& run_id) {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return Internal("readlink /proc/self/exe failed");
  self[n] = 0;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Internal("pipe2 failed");
  std::string flag = "--watchdog", id = run_id;
  char* argv[] = {self, flag.data(), id.data(), nullptr};
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return Internal("fork failed");
  }
  if (pid == 0) {  // async-signal-safe calls only until exec
    ::setsid();
    ::dup2(fds[0], STDIN_FILENO);  // the duplicate is not close-on-exec; the write end is
    ::execv(self, argv);
    ::_exit(127);
  }
  ::close(fds[0]);
  (void)fds[1];  // kept open, close-on-exec, until this process ends
  return Status::Ok();
}

int RunWatchdog(const std::string& run_id) {
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  char buf[64];
  while (::read(STDIN_FILENO, buf, sizeof(buf)) != 0) {
    if (errno != EINTR) break;
  }
  // The pipe closes early in the owner's exit, before it is a zombie: give it a moment to be
  // recognisably gone, so CleanupRun's owner check does not keep the namespaces.
  wan::CleanupReport report = wan::CleanupRun(run_id, /*force=*/false);
  for (int i = 0; i < 100 && !report.owner_alive.empty(); ++i) {
    ::usleep(50 * 1000);
    report = wan::CleanupRun(run_id, /*force=*/false);
  }
  if (!report.removed.empty()) {
    std::fprintf(stderr, "tributary-bench watchdog: the benchmark ended without cleaning up; %s\n",
                 report.Summary().c_str());
  }
  return report.failed.empty() ? 0 : 1;
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

using bench::LoadAverage1Min;

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

// Plot of the projection: tokens/s per peer against peers (log scale), a line per system and
// group size. Data and script go to the run directory, for redrawing by hand.
Result<std::string> PlotSimulation(const std::string& prefix, const std::string& title, const std::string& dir,
                                   const std::vector<sim::Projection>& rows) {
  std::map<std::string, std::string> series;
  for (const auto& p : rows) {
    const std::string key = p.system + (p.group_size < p.peers ? " (groups of " + std::to_string(p.group_size) + ")" : "");
    series[key] += fmt::format("{} {:.3f} {:.4f}\n", p.peers, p.tokens_per_s / p.peers, p.compute_utilisation);
  }
  TRIB_RETURN_IF_ERROR(MakeDirectories(dir));
  std::string script = fmt::format(
      "set terminal pngcairo size 1000,600\nset output '{}_sim.png'\nset title '{}: projected tokens/s per peer'\n"
      "set logscale x\nset logscale y\nset xlabel 'peers'\nset ylabel 'tokens/s per peer'\nset key outside right\n"
      "set grid\nplot ",
      prefix, title);
  int i = 0;
  for (const auto& [name, data] : series) {
    const std::string file = dir + "/series" + std::to_string(i) + ".dat";
    TRIB_RETURN_IF_ERROR(WriteFileAtomically(file, data));
    script += fmt::format("{}'{}' using 1:2 with linespoints title '{}'", i++ ? ", " : "", file, name);
  }
  script += "\n";
  TRIB_RETURN_IF_ERROR(WriteFileAtomically(dir + "/sim.gp", script));
  TRIB_ASSIGN_OR_RETURN(Subprocess gnuplot, Subprocess::Start({"gnuplot", dir + "/sim.gp"}, dir + "/gnuplot.log"));
  auto code = gnuplot.Wait(DeadlineAfter(Millis(60000)));
  if (!code.ok() || *code != 0) return IoError("gnuplot failed; see " + dir + "/gnuplot.log");
  return prefix + "_sim.png";
}

// --simulate: no namespaces, no processes; seconds. Docs: docs/BENCHMARKS.md "Simulation mode".
int Simulate(const Flags& f, const BenchScenario& s, const std::string& command) {
  std::string run_path = f.from_run;
  if (run_path.empty() && FileExists(f.out_dir + "/wan_" + s.name + ".json")) run_path = f.out_dir + "/wan_" + s.name + ".json";
  sim::RunCalibration cal;
  nlohmann::json out = {{"scenario", s.name}, {"command", command}};
  std::string validation;
  if (!run_path.empty()) {
    auto text = ReadWholeFile(run_path);
    if (!text.ok()) return Fail(text.status(), 2);
    auto run = nlohmann::json::parse(*text, nullptr, false);
    if (run.is_discarded()) return Fail(InvalidArgument("simulate: " + run_path + " is not JSON"), 2);
    auto calibrated = sim::CalibrateFromRun(s, run);
    if (!calibrated.ok()) return Fail(InvalidArgument(run_path + ": " + calibrated.status().message()), 2);
    cal = *calibrated;
    auto rows = sim::Validate(cal, run);
    if (!rows.ok()) return Fail(rows.status(), 2);
    validation = sim::ValidationTable(*rows);
    out["calibration_run"] = run_path;
    for (const auto& v : *rows) out["validation"].push_back(sim::ToJson(v));
  } else {
    cal.inputs.network = s.network;
    cal.inputs.tokens_per_step = s.tokens_per_step();
    cal.inputs.steps_per_peer = s.steps_per_peer;
    for (const auto& system : s.systems) {
      auto m = sim::ModelFor(s, system.name);
      if (!m.ok()) return Fail(m.status(), 2);
      cal.systems.push_back(*m);
    }
    if (f.params <= 0 || f.step_seconds <= 0) {
      return Fail(InvalidArgument("simulate: no run of " + s.name + " in " + f.out_dir +
                                  "; give --from-run RUN.json, or --params N and --step-seconds S"), 2);
    }
    cal.notes.push_back("no run: per-round overhead " + std::to_string(std::max(0.0, f.round_overhead)) + " s (--round-overhead-s)");
  }
  if (f.params > 0) cal.inputs.numel = static_cast<uint64_t>(f.params);
  // The emulator's links are independent (validation above); a real peer's links share its uplink.
  cal.inputs.shared_uplink = !f.independent_links;
  // One compute speed for every projected system: the run's median (the cores were shared, so
  // each system's own speed says more about the load than the system), or --step-seconds.
  const double step = f.step_seconds > 0 ? f.step_seconds : cal.reference_compute_s_per_step;
  std::vector<sim::SystemModel> systems;
  for (auto m : cal.systems) {
    m.compute_s_per_step = step;
    m.peer_compute_s_per_step.clear();  // projected peers all run at the reference speed
    if (f.round_overhead >= 0) m.round_overhead_s = f.round_overhead;
    systems.push_back(m);
    if (!m.diloco) continue;
    for (const auto& codec : f.codecs) {
      auto variant = sim::ModelFor(s, m.name + "+" + codec);
      if (!variant.ok()) return Fail(variant.status(), 2);
      variant->compute_s_per_step = m.compute_s_per_step;
      variant->round_overhead_s = m.round_overhead_s;
      systems.push_back(*variant);
    }
  }
  std::vector<int> groups = {0};
  for (int g : f.group_sizes) groups.push_back(g);
  std::vector<sim::Projection> rows;
  for (int peers : f.sim_peers) {
    for (const auto& m : systems) {
      for (int g : groups) {
        if (g != 0 && (g >= peers || m.algorithm == sim::Algorithm::kGlooRing)) continue;
        auto p = sim::Project(cal.inputs, m, peers, g);
        if (!p.ok()) return Fail(p.status(), 2);
        rows.push_back(*p);
        out["projections"].push_back(sim::ToJson(*p));
      }
    }
  }
  out["inputs"] = {{"parameters", cal.inputs.numel},
                   {"compute_s_per_step", step},
                   {"tokens_per_step_per_peer", cal.inputs.tokens_per_step},
                   {"steps_per_peer", cal.inputs.steps_per_peer},
                   {"shared_uplink", cal.inputs.shared_uplink},
                   {"notes", cal.notes}};
  for (const auto& m : systems) out["inputs"]["round_overhead_s"][m.name] = m.round_overhead_s;
  std::printf("### %s: simulation (%llu parameters, %.3f s compute per step, %llu steps per peer)\n\n", s.name.c_str(),
              static_cast<unsigned long long>(cal.inputs.numel), step,
              static_cast<unsigned long long>(cal.inputs.steps_per_peer));
  for (const auto& note : cal.notes) std::printf("- %s\n", note.c_str());
  if (!validation.empty()) {
    std::printf("\nThe run's own systems at %d peers, inputs from %s (each system's own compute s/step):\n\n%s",
                s.peers(), run_path.c_str(), validation.c_str());
  }
  std::printf("\nProjection:\n\n%s", sim::ProjectionTable(rows).c_str());
  std::fflush(stdout);
  const std::string prefix = f.out_dir + "/wan_" + s.name;
  if (Status st = MakeDirectories(f.out_dir); !st.ok()) return Fail(st, 3);
  if (!f.no_plots) {
    const std::string dir = f.run_dir.empty() ? "runs/sim-" + s.name + "-" + Stamp("%Y%m%d-%H%M%S") : f.run_dir;
    auto png = PlotSimulation(prefix, s.name, dir, rows);
    if (png.ok()) {
      out["plot"] = *png;
    } else {
      Say("no plot: " + png.status().ToString());
    }
  }
  if (Status st = WriteFileAtomically(prefix + "_sim.json", out.dump(2) + "\n"); !st.ok()) return Fail(st, 1);
  Say("simulation in " + prefix + "_sim.json");
  return 0;
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
  if (f.simulate) return Simulate(f, s, command);
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
  info.load_before = LoadAverage1Min();
  info.cpus = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  info.run_dir = fs::absolute(run_dir).string();

  wan::WanConfig config = s.network;
  config.name_prefix = "tbench";
  config.handle_signals = false;
  auto wan = wan::WanEmulator::Start(config);
  if (!wan.ok()) return Fail(wan.status(), 3);
  if (Status st = StartWatchdog((*wan)->run_id()); !st.ok()) {
    Say("no watchdog (" + st.message() + "): after a SIGKILL run tributary-wanem --sweep --prefix tbench");
  }
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
  info.load_after = LoadAverage1Min();
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
  auto* scenario = app.add_option("scenario", f.scenario, "scenario TOML (benchmarks/scenarios/*.toml)");
  app.add_option("--watchdog", f.watchdog, "internal: remove this run's namespaces at EOF on stdin")
      ->group("");
  app.add_option("--out-dir", f.out_dir, "JSON and plots go here")->capture_default_str();
  app.add_option("--run-dir", f.run_dir, "process logs go here (default runs/bench-<scenario>-<time>)");
  app.add_option("--data", f.data, "corpus directory")->capture_default_str();
  app.add_option("--tributary", f.tributary, "the tributary binary")->capture_default_str();
  app.add_option("--gloo-ddp", f.gloo, "the tributary-gloo-ddp binary")->capture_default_str();
  app.add_option("--systems", f.systems, "run only these systems of the scenario")->delimiter(',');
  app.add_flag("--check", f.check, "parse the scenario, print the plan, run nothing");
  app.add_flag("--no-plots", f.no_plots, "skip gnuplot");
  app.add_flag("--simulate", f.simulate, "project the scenario to more peers with the round model (no namespaces)");
  app.add_option("--peers", f.sim_peers, "simulate: peer counts")->delimiter(',')->capture_default_str();
  app.add_option("--group-size", f.group_sizes, "simulate: also average in groups of these sizes")->delimiter(',');
  app.add_option("--codecs", f.codecs, "simulate: DiLoCo variants over the butterfly with these codecs")
      ->delimiter(',')->capture_default_str();
  app.add_option("--from-run", f.from_run, "simulate: calibrate on this run's JSON (default: <out-dir>/wan_<scenario>.json)");
  app.add_option("--step-seconds", f.step_seconds, "simulate: compute seconds per step (default: the run's median)");
  app.add_option("--round-overhead-s", f.round_overhead, "simulate: seconds per round outside compute and all-reduce");
  app.add_option("--params", f.params, "simulate: model parameters (default: from the run's bytes)");
  app.add_flag("--independent-links", f.independent_links,
               "simulate: project with independent links as in the emulator (default: a peer's links share its uplink)");
  CLI11_PARSE(app, argc, argv);
  if (!f.watchdog.empty()) return RunWatchdog(f.watchdog);
  if (scenario->count() == 0) {
    std::fprintf(stderr, "tributary-bench: a scenario file is required\n%s", app.help().c_str());
    return 2;
  }
  return Main(argc, argv, f);
}
