#include "benchmarks/wanbench/runner.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "benchmarks/common/bench_stats.h"
#include "benchmarks/wanbench/log_parse.h"
#include "benchmarks/wanbench/report.h"
#include "benchmarks/wanbench/subprocess.h"
#include "core/files.h"
#include "runtime/job_spec.h"

namespace tributary::wanbench {
namespace {

using namespace std::chrono_literals;

constexpr auto kPoll = 200ms;

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

using bench::LoadAverage1Min;

// Same single-threaded compute on every process, as the demo does: bit-reproducible and fair.
const std::map<std::string, std::string> kEnv = {{"OPENBLAS_NUM_THREADS", "1"}, {"OMP_NUM_THREADS", "1"}};

std::vector<std::string> InNamespace(const wan::WanEmulator& wan, int peer, std::vector<std::string> argv) {
  std::vector<std::string> full = wan.ExecPrefix(peer);
  full.insert(full.end(), argv.begin(), argv.end());
  return full;
}

std::string ReadOrEmpty(const std::string& path) {
  auto text = ReadWholeFile(path);
  return text.ok() ? *text : std::string();
}

// The live status line on stderr: rewritten in place on a terminal, one line per change otherwise.
class Progress {
 public:
  Progress(const RunnerOptions& o, const SystemSpec& s, uint32_t rounds)
      : prefix_(fmt::format("[{}/{}] {}", o.index + 1, o.count, s.name)), rounds_(rounds),
        tty_(::isatty(STDERR_FILENO)) {}
  void Update(const std::string& phase, uint64_t round_done, std::optional<double> eval, double seconds,
              double wire_per_peer) {
    const std::string line = fmt::format(
        "{} | {} | round {}/{} | eval loss {} | {:.0f} s | wire {}/peer", prefix_, phase, round_done,
        rounds_, eval ? fmt::format("{:.4f}", *eval) : "  -   ", seconds, HumanBytes(wire_per_peer));
    if (tty_) {
      std::fprintf(stderr, "\r%s\033[K", line.c_str());
    } else if (round_done != last_round_ || phase != last_phase_) {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    last_round_ = round_done;
    last_phase_ = phase;
    std::fflush(stderr);
  }
  void Done() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  std::string prefix_;
  uint32_t rounds_;
  bool tty_;
  uint64_t last_round_ = UINT64_MAX;
  std::string last_phase_;
};

// Everything a system run shares: its processes, the wire samples, the fault, the deadline.
class Run {
 public:
  Run(wan::WanEmulator& wan, const BenchScenario& s, const SystemSpec& system, const RunnerOptions& o)
      : wan_(wan), s_(s), system_(system), o_(o), spec_(SpecFor(s, system)),
        progress_(o, system, spec_.rounds()), fault_(s.FaultFor(system.name)) {
    dir_ = o.run_dir + "/" + system.name;
    result_.name = system.name;
    result_.mode = runtime::ModeName(spec_.mode());
    result_.steps_per_round = system.steps_per_round;
    result_.rounds_planned = spec_.rounds();
    result_.tokens_per_step = s.tokens_per_step();
    result_.log_dir = dir_;
    result_.peers.resize(static_cast<size_t>(s.peers()));
  }

  Result<SystemResult> Go() {
    TRIB_RETURN_IF_ERROR(MakeDirectories(dir_));
    launch_ = UnixNow();
    result_.load_start = LoadAverage1Min();
    Status st = system_.tributary() ? RunTributary() : RunGloo();
    progress_.Done();
    StopAll();
    RestoreLinks();  // the next system gets the scenario's network again
    result_.load_end = LoadAverage1Min();
    for (size_t i = 0; i < peers_.size() && i < result_.peers.size(); ++i) {
      result_.peers[i].process_cpu_seconds = peers_[i].cpu_seconds().value_or(0);
    }
    if (!st.ok() && st.code() == StatusCode::kAborted) return st;  // interrupted
    if (!st.ok()) result_.error = st.message();
    if (system_.tributary()) {
      CollectTributary();
    } else {
      CollectGloo();
    }
    result_.ok = st.ok() && result_.rounds.size() == spec_.rounds();
    if (st.ok() && !result_.ok) {
      result_.error = fmt::format("only {} of {} rounds completed", result_.rounds.size(), spec_.rounds());
    }
    return result_;
  }

 private:
  std::vector<std::string> JobFlags() const {
    std::vector<std::string> flags = {
        "--job-file", o_.job_file, "--mode", runtime::ModeName(spec_.mode()),
        "--rounds", std::to_string(spec_.rounds()), "--inner-steps", std::to_string(spec_.inner_steps()),
        "--peers", std::to_string(spec_.num_peers()), "--seed", std::to_string(spec_.seed())};
    if (!system_.codec.empty()) flags.insert(flags.end(), {"--codec", system_.codec});
    if (spec_.eval_every() > 1) flags.insert(flags.end(), {"--eval-every", std::to_string(spec_.eval_every())});
    if (spec_.async_apply_step() > 0) {
      flags.insert(flags.end(), {"--async-apply-step", std::to_string(spec_.async_apply_step())});
    }
    if (spec_.async_apply_when_ready()) flags.push_back("--async-apply-when-ready");
    return flags;
  }

  // ------------------------------------------------------------------ the poll loop
  // Called every kPoll while the system runs: interruption, deadline, wire samples, the fault.
  Status Tick(std::optional<double> all_joined_unix) {
    if (o_.stop && o_.stop->load()) return Aborted("interrupted");
    const double now = UnixNow();
    if (now - launch_ > s_.timeout_seconds) {
      return DeadlineExceeded(fmt::format("timed out after {:.0f} s (timeout_seconds)", s_.timeout_seconds));
    }
    Sample(now);
    if (fault_ && !killed_at_ && all_joined_unix && now >= *all_joined_unix + fault_->at_seconds) {
      if (fault_->kind == FaultKind::kKill) {
        peers_[static_cast<size_t>(fault_->peer)].Kill();
      } else {
        TRIB_RETURN_IF_ERROR(CutLinks());
      }
      killed_at_ = now;
    }
    if (cut_ && fault_->duration_seconds > 0 && now >= *killed_at_ + fault_->duration_seconds) {
      RestoreLinks();
    }
    return Status::Ok();
  }

  // A link cut: every packet to and from the peer is lost on the wire (loss = 1), so its TCP
  // connections stall and retransmit, as when a home router loses its uplink. Nobody is told.
  Status CutLinks() {
    for (int j = 0; j < s_.peers(); ++j) {
      if (j == fault_->peer) continue;
      for (auto [from, to] : {std::pair{fault_->peer, j}, std::pair{j, fault_->peer}}) {
        wan::LinkParams cut = s_.network.link(from, to);
        cut.loss = 1.0;
        TRIB_RETURN_IF_ERROR(wan_.UpdateLink(from, to, cut));
      }
    }
    cut_ = true;
    return Status::Ok();
  }

  void RestoreLinks() {
    if (!cut_) return;
    for (int j = 0; j < s_.peers(); ++j) {
      if (j == fault_->peer) continue;
      (void)wan_.UpdateLink(fault_->peer, j, s_.network.link(fault_->peer, j));
      (void)wan_.UpdateLink(j, fault_->peer, s_.network.link(j, fault_->peer));
    }
    cut_ = false;
  }

  void Sample(double now) {
    const wan::EmulatorStats stats = wan_.Stats();
    const int n = s_.peers();
    WireSample w;
    w.t = now;
    w.bytes_sent.assign(static_cast<size_t>(n), 0);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        if (i != j) w.bytes_sent[static_cast<size_t>(i)] += stats.link(i, j, n).bytes;
      }
    }
    samples_.push_back(std::move(w));
  }

  double WirePerPeerSoFar() const {
    if (samples_.size() < 2) return 0;
    double sum = 0;
    for (size_t i = 0; i < samples_.back().bytes_sent.size(); ++i) {
      sum += static_cast<double>(samples_.back().bytes_sent[i] - samples_.front().bytes_sent[i]);
    }
    return sum / s_.peers();
  }

  void StopAll() {
    for (auto& p : peers_) p.Kill();
    if (coordinator_) coordinator_->Kill();
  }

  std::string FaultPhase() const {
    return fault_->kind == FaultKind::kCut ? "training (peer cut off)" : "training (peer killed)";
  }

  bool Killed(size_t peer) const { return killed_at_ && fault_ && static_cast<size_t>(fault_->peer) == peer; }

  // ------------------------------------------------------------------ Tributary
  Status RunTributary() {
    const std::string port_file = dir_ + "/coordinator.port";
    std::vector<std::string> argv = {o_.tributary_binary, "coordinator"};
    for (auto& f : JobFlags()) argv.push_back(f);
    for (auto& f : std::vector<std::string>{"--min-peers", std::to_string(spec_.min_peers()),
                                            "--gather-ms", std::to_string(spec_.gather_ms()),
                                            "--host", wan_.Address(0), "--port", "0",
                                            "--port-file", port_file, "--data", o_.corpus_dir}) {
      argv.push_back(f);
    }
    TRIB_ASSIGN_OR_RETURN(Subprocess coordinator,
                          Subprocess::Start(InNamespace(wan_, 0, argv), dir_ + "/coordinator.log", kEnv));
    coordinator_.emplace(std::move(coordinator));
    // "PORT JOB_ID KEY" once it listens.
    std::string port, job, key;
    for (;;) {
      TRIB_RETURN_IF_ERROR(Tick(std::nullopt));
      std::istringstream in(ReadOrEmpty(port_file));
      if (in >> port >> job >> key) break;
      if (auto code = coordinator_->Poll()) {
        return Unavailable(fmt::format("the coordinator exited with {} before listening; see {}/coordinator.log",
                                       *code, dir_));
      }
      progress_.Update("starting coordinator", 0, std::nullopt, UnixNow() - launch_, 0);
      std::this_thread::sleep_for(kPoll);
    }
    for (int i = 0; i < s_.peers(); ++i) {
      std::vector<std::string> peer = {o_.tributary_binary, "peer",
                                       "--coordinator", wan_.Address(0) + ":" + port,
                                       "--job", job, "--coordinator-key", key,
                                       "--name", "p" + std::to_string(i),
                                       "--listen-host", wan_.Address(i),
                                       "--data", o_.corpus_dir, "--threads", "1"};
      TRIB_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Start(InNamespace(wan_, i, peer),
                                                            dir_ + "/p" + std::to_string(i) + ".log", kEnv));
      peers_.push_back(std::move(p));
    }
    std::optional<double> all_joined;
    int ticks = 0;
    for (;;) {
      TRIB_RETURN_IF_ERROR(Tick(all_joined));
      if (ticks++ % 5 == 0) {  // the log is re-read once a second
        const CoordinatorLog log = ParseCoordinatorLog(ReadOrEmpty(dir_ + "/coordinator.log"));
        if (!all_joined && static_cast<int>(log.joins.size()) >= s_.peers()) {
          all_joined = UnixTimeOf(log.joins[static_cast<size_t>(s_.peers() - 1)], launch_);
        }
        std::optional<double> eval;
        if (!log.commits.empty()) eval = log.commits.back().eval_loss;
        progress_.Update(all_joined ? (killed_at_ ? FaultPhase() : "training") : "joining",
                         log.commits.size(), eval, UnixNow() - launch_, WirePerPeerSoFar());
      }
      if (auto code = coordinator_->Poll()) {
        if (*code != 0) {
          return Unavailable(fmt::format("the coordinator exited with {}; see {}/coordinator.log", *code, dir_));
        }
        break;
      }
      for (size_t i = 0; i < peers_.size(); ++i) {
        auto code = peers_[i].Poll();
        // With no fault configured the job needs every peer: a dead one stalls it for good.
        if (code && *code != 0 && !Killed(i) && !fault_) {
          return Unavailable(fmt::format("peer p{} exited with {}; see {}/p{}.log", i, *code, dir_, i));
        }
      }
      std::this_thread::sleep_for(kPoll);
    }
    // Peers leave after JobDone; give them a moment to say so in their logs.
    const Deadline grace = DeadlineAfter(20s);
    for (auto& p : peers_) (void)p.Wait(grace);
    return Status::Ok();
  }

  void CollectTributary() {
    const CoordinatorLog log = ParseCoordinatorLog(ReadOrEmpty(dir_ + "/coordinator.log"));
    if (log.commits.empty()) return;
    const CommitLine& first = log.commits.front();
    const double start = UnixTimeOf(first.seconds_of_day, launch_) - first.wall_seconds;
    result_.setup_seconds = start - launch_;
    // Per peer and round: the sums over attempts (a retried round did its work twice).
    std::vector<std::map<uint64_t, AttemptLine>> per_peer(static_cast<size_t>(s_.peers()));
    for (int i = 0; i < s_.peers(); ++i) {
      for (const AttemptLine& a : ParsePeerLog(ReadOrEmpty(dir_ + "/p" + std::to_string(i) + ".log"))) {
        AttemptLine& sum = per_peer[static_cast<size_t>(i)][a.round];
        sum.round = a.round;
        sum.compute_seconds += a.compute_seconds;
        sum.comm_seconds += a.comm_seconds;
        sum.bytes_sent += a.bytes_sent;
        PeerTotals& t = result_.peers[static_cast<size_t>(i)];
        t.compute_seconds += a.compute_seconds;
        t.comm_seconds += a.comm_seconds;
        t.app_bytes_sent += a.bytes_sent;
      }
    }
    for (const CommitLine& c : log.commits) {
      RoundPoint p;
      p.round = c.round;
      p.t_end = UnixTimeOf(c.seconds_of_day, launch_) - start;
      p.wall_seconds = c.wall_seconds;
      p.peers = c.peers;
      p.attempts = c.attempts;
      p.tokens = uint64_t{c.peers} * s_.tokens_per_step() * system_.steps_per_round;
      p.train_loss = c.train_loss;
      p.eval_loss = c.eval_loss;
      int reporting = 0;
      for (const auto& rounds : per_peer) {
        auto it = rounds.find(c.round);
        if (it == rounds.end()) continue;
        ++reporting;
        p.compute_seconds += it->second.compute_seconds;
        p.comm_seconds += it->second.comm_seconds;
        p.app_bytes_per_peer += static_cast<double>(it->second.bytes_sent);
      }
      if (reporting > 0) {
        p.compute_seconds /= reporting;
        p.comm_seconds /= reporting;
        p.app_bytes_per_peer /= reporting;
      }
      result_.rounds.push_back(p);
    }
    Finalise(start);
  }

  // ------------------------------------------------------------------ Gloo
  std::string RankFile(int i) const { return dir_ + "/rank" + std::to_string(i) + ".jsonl"; }

  static std::vector<nlohmann::json> ReadLines(const std::string& path) {
    std::vector<nlohmann::json> out;
    std::istringstream in(ReadOrEmpty(path));
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded()) out.push_back(std::move(j));
    }
    return out;
  }

  Status RunGloo() {
    const std::string store = dir_ + "/store";
    TRIB_RETURN_IF_ERROR(MakeDirectories(store));
    const int op_timeout = static_cast<int>(std::min(300.0, s_.timeout_seconds));
    for (int i = 0; i < s_.peers(); ++i) {
      std::vector<std::string> argv = {o_.gloo_binary, "--rank", std::to_string(i),
                                       "--world", std::to_string(s_.peers()), "--host", wan_.Address(i),
                                       "--store", store, "--out", RankFile(i), "--data", o_.corpus_dir,
                                       "--threads", "1", "--timeout-s", std::to_string(op_timeout)};
      argv.insert(argv.end(), {"--job-file", o_.job_file, "--mode", "ddp",
                               "--rounds", std::to_string(spec_.rounds()),
                               "--inner-steps", std::to_string(spec_.inner_steps()),
                               "--seed", std::to_string(spec_.seed())});
      TRIB_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Start(InNamespace(wan_, i, argv),
                                                            dir_ + "/rank" + std::to_string(i) + ".log", kEnv));
      peers_.push_back(std::move(p));
    }
    std::optional<double> all_joined;
    std::optional<Deadline> give_up_at;
    int ticks = 0;
    for (;;) {
      TRIB_RETURN_IF_ERROR(Tick(all_joined));
      if (ticks++ % 5 == 0) {
        const auto lines = ReadLines(RankFile(0));
        uint64_t rounds = 0;
        std::optional<double> eval;
        for (const auto& j : lines) {
          if (j.value("event", "") == "start") all_joined = j.value("t", 0.0);
          if (j.value("event", "") == "round") {
            ++rounds;
            if (j.contains("eval_loss")) eval = j["eval_loss"].get<double>();
          }
        }
        progress_.Update(all_joined ? (killed_at_ ? FaultPhase() : "training") : "joining",
                         rounds, eval, UnixNow() - launch_, WirePerPeerSoFar());
      }
      bool all_done = true;
      std::optional<std::string> failure;
      for (size_t i = 0; i < peers_.size(); ++i) {
        auto code = peers_[i].Poll();
        if (!code) {
          all_done = false;
        } else if (*code != 0 && !Killed(i) && !failure) {
          failure = fmt::format("rank {} exited with {}; see {}/rank{}.log", i, *code, dir_, i);
        }
      }
      if (killed_at_ && !failure) {
        // Gloo has no membership: after a rank dies the others can only fail.
        for (size_t i = 0; i < peers_.size(); ++i) {
          if (Killed(i) && fault_->kind == FaultKind::kKill) {
            failure = fmt::format("rank {} was killed; Gloo cannot continue without it", i);
          }
        }
      }
      if (all_done) {
        if (failure) return Unavailable(*failure);
        return Status::Ok();
      }
      if (failure) {
        // Let the survivors notice and exit on their own (their logs show how), then stop them.
        if (!give_up_at) give_up_at = DeadlineAfter(30s);
        if (Clock::now() >= *give_up_at) return Unavailable(*failure + " (the others were stopped 30 s later)");
      }
      std::this_thread::sleep_for(kPoll);
    }
  }

  void CollectGloo() {
    const int n = s_.peers();
    std::vector<std::vector<nlohmann::json>> ranks(static_cast<size_t>(n));
    double start = 0;
    for (int i = 0; i < n; ++i) {
      ranks[static_cast<size_t>(i)] = ReadLines(RankFile(i));
      for (const auto& j : ranks[static_cast<size_t>(i)]) {
        if (j.value("event", "") == "start") start = std::max(start, j.value("t", 0.0));
        if (j.value("event", "") == "done" && i == 0) result_.theta_identical = j.value("theta_identical", false);
        if (j.value("event", "") != "round") continue;
        PeerTotals& t = result_.peers[static_cast<size_t>(i)];
        t.compute_seconds += j.value("compute_s", 0.0);
        t.comm_seconds += j.value("comm_s", 0.0);
        t.app_bytes_sent += j.value("bytes_sent", uint64_t{0});
      }
    }
    if (start == 0) return;
    result_.setup_seconds = start - launch_;
    double prev_end = 0;
    for (const auto& j : ranks[0]) {
      if (j.value("event", "") != "round") continue;
      RoundPoint p;
      p.round = j.value("round", uint64_t{0});
      p.t_end = j.value("t_end", 0.0) - start;
      p.wall_seconds = p.t_end - prev_end;
      prev_end = p.t_end;
      p.train_loss = j.value("train_loss", 0.0);
      if (j.contains("eval_loss")) p.eval_loss = j["eval_loss"].get<double>();
      for (const auto& rank : ranks) {
        for (const auto& k : rank) {
          if (k.value("event", "") != "round" || k.value("round", uint64_t{0}) != p.round) continue;
          ++p.peers;
          p.tokens += k.value("tokens", uint64_t{0});
          p.compute_seconds += k.value("compute_s", 0.0);
          p.comm_seconds += k.value("comm_s", 0.0);
          p.app_bytes_per_peer += k.value("bytes_sent", 0.0);
        }
      }
      if (p.peers > 0) {
        p.compute_seconds /= p.peers;
        p.comm_seconds /= p.peers;
        p.app_bytes_per_peer /= p.peers;
      }
      result_.rounds.push_back(p);
    }
    Finalise(start);
  }

  // Relative times, wire bytes, totals and the fault's outcome.
  void Finalise(double start) {
    for (auto& w : samples_) w.t -= start;
    AttributeWireBytes(samples_, result_);
    Finish(result_);
    if (fault_) {
      if (killed_at_) {
        result_.fault = AssessFault(result_, fault_->peer, *killed_at_ - start);
      } else {
        result_.fault = FaultOutcome{"", fault_->peer, 0, false, std::nullopt, std::nullopt,
                                     "the run ended before the fault was due"};
      }
      result_.fault->kind = fault_->kind == FaultKind::kCut ? "cut" : "kill";
    }
  }

  wan::WanEmulator& wan_;
  const BenchScenario& s_;
  const SystemSpec& system_;
  const RunnerOptions& o_;
  const v1::JobSpec spec_;
  Progress progress_;
  const FaultSpec* fault_;
  std::string dir_;
  double launch_ = 0;
  std::optional<Subprocess> coordinator_;
  std::vector<Subprocess> peers_;
  std::vector<WireSample> samples_;
  std::optional<double> killed_at_;  // when the fault (kill or cut) happened
  bool cut_ = false;                 // the fault's links are cut right now
  SystemResult result_;
};

}  // namespace

Result<SystemResult> RunSystem(wan::WanEmulator& wan, const BenchScenario& scenario,
                               const SystemSpec& system, const RunnerOptions& options) {
  Run run(wan, scenario, system, options);
  return run.Go();
}

}  // namespace tributary::wanbench
