// Churn: the real `tributary` binary as one coordinator and many short-lived peer processes over
// loopback TCP. A driver kills (SIGKILL) and stops (SIGINT, which sends Leave) peers at random
// moments while starting new ones with fresh identities, and then checks what the coordinator
// logged: every round committed, no round stalled past its deadline, the loss fell, and every
// peer still alive at the end holds the same θ.
//
// The schedule is random but reproducible: the seed is printed, and TRIBUTARY_CHURN_SEED=N
// replays it (process timing still varies from run to run, so a replay is similar, not equal).
// On failure (or with TRIBUTARY_CHURN_KEEP=1) the run directory (coordinator.log, one log per
// peer) is kept and its path printed. Built only with -DTRIBUTARY_CHURN_TESTS=ON.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "core/files.h"
#include "launcher/process.h"
#include "tests/common/test_corpus.h"

namespace tributary {
namespace {

using namespace std::chrono_literals;
using launcher::ChildProcess;

// The last `bytes` of a log, for failure messages.
std::string Tail(const std::string& text, size_t bytes = 6000) {
  return text.size() <= bytes ? text : "…" + text.substr(text.size() - bytes);
}

uint64_t SeedFor(uint64_t fallback) {
  if (const char* env = std::getenv("TRIBUTARY_CHURN_SEED")) return std::strtoull(env, nullptr, 10);
  return fallback;
}

// Same tiny model as multiprocess_test.cc: a round of a few inner steps takes well under a second.
const std::vector<std::string> kTinyModel = {"--n-layer",    "1",  "--n-head",   "2",
                                             "--d-model",    "32", "--context",  "32",
                                             "--batch-size", "8",  "--inner-lr", "0.01"};

// One `round K complete` line of the coordinator log.
struct RoundLine {
  int round = -1;
  int peers = 0;
  double train_loss = 0;
  std::optional<double> eval_loss;
  std::string theta;
  double wall_seconds = 0;
  int attempts = 0;
  double logged_at = 0;  // seconds since midnight, from the log line's timestamp
};

std::vector<RoundLine> ParseRounds(const std::string& log) {
  static const std::regex re(
      R"(^(\d\d):(\d\d):(\d\d)\.(\d{3}) .*round (\d+) complete: (\d+) peers, train loss ([0-9.]+)(, eval loss ([0-9.]+))?, θ ([0-9a-f]+), ([0-9.]+) s, (\d+) attempt)");
  std::vector<RoundLine> out;
  std::istringstream in(log);
  double previous = -1, day_offset = 0;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, re)) continue;
    RoundLine r;
    r.logged_at = std::stoi(m[1]) * 3600.0 + std::stoi(m[2]) * 60.0 + std::stoi(m[3]) +
                  std::stoi(m[4]) / 1000.0;
    if (previous >= 0 && r.logged_at + day_offset < previous - 3600)
      day_offset += 86400;  // midnight
    r.logged_at += day_offset;
    previous = r.logged_at;
    r.round = std::stoi(m[5]);
    r.peers = std::stoi(m[6]);
    r.train_loss = std::stod(m[7]);
    if (m[9].matched) r.eval_loss = std::stod(m[9]);
    r.theta = m[10];
    r.wall_seconds = std::stod(m[11]);
    r.attempts = std::stoi(m[12]);
    out.push_back(r);
  }
  return out;
}

// What a peer prints when it exits 0.
struct PeerFinal {
  uint64_t rounds = 0;
  std::string theta;
  uint64_t contributed = 0;
  bool left_early = false;
};

std::optional<PeerFinal> ParsePeerFinal(const std::string& log) {
  static const std::regex re(
      R"(peer \S+: (\d+) rounds, θ ([0-9a-f]*), contributed (\d+) rounds[^\n]*)");
  std::smatch m;
  if (!std::regex_search(log, m, re)) return std::nullopt;
  PeerFinal f;
  f.rounds = std::stoull(m[1]);
  f.theta = m[2];
  f.contributed = std::stoull(m[3]);
  f.left_early = m[0].str().find("(left early)") != std::string::npos;
  return f;
}

enum class Fate { kRunning, kKilled, kInterrupted };

const char* FateName(Fate f) {
  switch (f) {
    case Fate::kRunning:
      return "running";
    case Fate::kKilled:
      return "SIGKILL";
    case Fate::kInterrupted:
      return "SIGINT";
  }
  return "?";
}

struct PeerProc {
  std::string name;
  std::optional<ChildProcess> process;
  Fate fate = Fate::kRunning;
  Clock::time_point started = Clock::now();
  Clock::time_point signalled{};
  std::optional<int> exit_code;

  bool alive() {
    if (!exit_code) exit_code = process->Poll();
    return !exit_code.has_value();
  }
};

class ChurnCluster {
 public:
  explicit ChurnCluster(const std::string& tag)
      : dir_(::tributary::testing::FreshTempDir(tag)),
        corpus_(::tributary::testing::MakeTempCorpus(tag + "-corpus")),
        keep_(std::getenv("TRIBUTARY_CHURN_KEEP") != nullptr) {}

  ~ChurnCluster() {
    coordinator_.reset();
    peers_.clear();  // SIGKILLs and reaps whatever still runs
    if (keep_ || ::testing::Test::HasFailure()) {
      std::cout << "[churn] run directory kept for inspection: " << dir_ << std::endl;
    } else {
      std::filesystem::remove_all(dir_);
    }
    std::filesystem::remove_all(corpus_);
  }

  void KeepDirectory() { keep_ = true; }
  const std::string& dir() const { return dir_; }

  void StartCoordinator(const std::vector<std::string>& job_args) {
    std::vector<std::string> argv = {TRIBUTARY_BINARY, "coordinator", "--data",
                                     corpus_,          "--port-file", dir_ + "/port"};
    argv.insert(argv.end(), kTinyModel.begin(), kTinyModel.end());
    argv.insert(argv.end(), job_args.begin(), job_args.end());
    auto child = ChildProcess::Spawn(argv, {}, coordinator_log());
    ASSERT_TRUE(child.ok()) << child.status().ToString();
    coordinator_.emplace(std::move(child).value());
    const auto deadline = DeadlineAfter(30s);
    while (!FileExists(dir_ + "/port")) {
      ASSERT_LT(Clock::now(), deadline) << "coordinator never listened:\n"
                                        << ReadFileOrEmpty(coordinator_log());
      ASSERT_FALSE(coordinator_->Poll().has_value()) << ReadFileOrEmpty(coordinator_log());
      std::this_thread::sleep_for(20ms);
    }
    std::istringstream in(ReadFileOrEmpty(dir_ + "/port"));
    in >> port_ >> job_id_ >> key_;
  }

  // A new peer process with a fresh identity (no --identity: a new key per run).
  PeerProc& StartPeer(const std::string& name) {
    std::vector<std::string> argv = {TRIBUTARY_BINARY,
                                     "peer",
                                     "--coordinator",
                                     "127.0.0.1:" + std::to_string(port_),
                                     "--job",
                                     job_id_,
                                     "--name",
                                     name,
                                     "--data",
                                     corpus_,
                                     "--coordinator-key",
                                     key_};
    auto child = ChildProcess::Spawn(
        argv, {{"OPENBLAS_NUM_THREADS", "1"}, {"OMP_NUM_THREADS", "1"}}, peer_log(name));
    EXPECT_TRUE(child.ok()) << child.status().ToString();
    auto p = std::make_unique<PeerProc>();
    p->name = name;
    p->process.emplace(std::move(child).value());
    peers_.push_back(std::move(p));
    return *peers_.back();
  }

  // Peers whose process still runs and that were not signalled.
  std::vector<PeerProc*> Running() {
    std::vector<PeerProc*> out;
    for (auto& p : peers_) {
      if (p->fate == Fate::kRunning && p->alive()) out.push_back(p.get());
    }
    return out;
  }

  void Kill(PeerProc& p) {
    p.fate = Fate::kKilled;
    p.signalled = Clock::now();
    p.process->Signal(SIGKILL);
  }
  void Interrupt(PeerProc& p) {
    p.fate = Fate::kInterrupted;
    p.signalled = Clock::now();
    p.process->Signal(SIGINT);
  }

  // True once the peer is past admission and model setup (its SIGINT handler is installed).
  bool Joined(const PeerProc& p) const {
    return ReadFileOrEmpty(peer_log(p.name)).find("joined job") != std::string::npos;
  }

  std::vector<std::unique_ptr<PeerProc>>& peers() { return peers_; }
  ChildProcess& coordinator() { return *coordinator_; }
  std::string coordinator_log() const { return dir_ + "/coordinator.log"; }
  std::string peer_log(const std::string& name) const { return dir_ + "/" + name + ".log"; }
  std::vector<RoundLine> Rounds() const { return ParseRounds(ReadFileOrEmpty(coordinator_log())); }

  // Waits until the coordinator has logged more than `seen` round lines; false on timeout or
  // when the coordinator exited.
  bool WaitForRounds(size_t seen, std::chrono::seconds timeout) {
    const auto deadline = DeadlineAfter(timeout);
    while (Clock::now() < deadline) {
      if (Rounds().size() > seen) return true;
      if (coordinator_->Poll().has_value()) return Rounds().size() > seen;
      std::this_thread::sleep_for(25ms);
    }
    return false;
  }

  // One line per peer: name, how it ended, exit code, rounds held / contributed.
  std::string Table() {
    std::ostringstream out;
    out << "peer      fate     exit  rounds  contributed  θ\n";
    for (auto& p : peers_) {
      p->alive();
      auto f = ParsePeerFinal(ReadFileOrEmpty(peer_log(p->name)));
      char line[200];
      std::snprintf(line, sizeof(line), "%-9s %-8s %4s  %6s  %11s  %s\n", p->name.c_str(),
                    FateName(p->fate), p->exit_code ? std::to_string(*p->exit_code).c_str() : "-",
                    f ? std::to_string(f->rounds).c_str() : "-",
                    f ? std::to_string(f->contributed).c_str() : "-",
                    f ? f->theta.substr(0, 12).c_str() : "");
      out << line;
    }
    return out.str();
  }

 private:
  std::string dir_, corpus_, job_id_, key_;
  int port_ = 0;
  bool keep_ = false;
  std::optional<ChildProcess> coordinator_;
  std::vector<std::unique_ptr<PeerProc>> peers_;
};

// Checks shared by both tests once the coordinator has exited. `rounds` is the job's length.
void CheckJobEnd(ChurnCluster& cluster, int rounds, double round_timeout_s, double max_gap_s) {
  const std::string log = ReadFileOrEmpty(cluster.coordinator_log());
  const auto lines = ParseRounds(log);
  ASSERT_EQ(static_cast<int>(lines.size()), rounds) << "not every round committed:\n" << Tail(log);
  for (int i = 0; i < rounds; ++i) {
    ASSERT_EQ(lines[i].round, i) << "rounds must commit in order, once each:\n" << Tail(log);
    EXPECT_LT(lines[i].wall_seconds, round_timeout_s)
        << "round " << i << " took " << lines[i].wall_seconds << " s, past its deadline";
    EXPECT_TRUE(lines[i].eval_loss.has_value()) << "round " << i << " has no eval loss";
  }
  double max_gap = 0;
  int worst = 0;
  for (int i = 1; i < rounds; ++i) {
    const double gap = lines[i].logged_at - lines[i - 1].logged_at;
    if (gap > max_gap) max_gap = gap, worst = i;
  }
  EXPECT_LE(max_gap, max_gap_s) << "round " << worst << " committed " << max_gap
                                << " s after round " << worst - 1 << ": a stall";
  ASSERT_TRUE(lines.front().eval_loss && lines.back().eval_loss);
  EXPECT_LT(*lines.back().eval_loss, *lines.front().eval_loss) << "eval loss did not fall";

  // Every peer that was neither killed nor interrupted ran to the end of the job, exits 0 and
  // holds the final θ, which is what the coordinator committed last.
  std::set<std::string> thetas;
  int finishers = 0;
  for (auto& p : cluster.peers()) {
    const std::string plog = ReadFileOrEmpty(cluster.peer_log(p->name));
    if (p->fate == Fate::kKilled) continue;
    auto code = p->process->Wait(DeadlineAfter(p->fate == Fate::kInterrupted ? 5s : 30s));
    ASSERT_TRUE(code.ok()) << p->name << " (" << FateName(p->fate) << ") did not exit:\n"
                           << Tail(plog);
    p->exit_code = *code;
    EXPECT_EQ(*code, 0) << p->name << " (" << FateName(p->fate) << ") failed:\n"
                        << Tail(ReadFileOrEmpty(cluster.peer_log(p->name)));
    if (p->fate != Fate::kRunning || *code != 0) continue;
    auto f = ParsePeerFinal(ReadFileOrEmpty(cluster.peer_log(p->name)));
    ASSERT_TRUE(f.has_value()) << Tail(ReadFileOrEmpty(cluster.peer_log(p->name)));
    EXPECT_EQ(f->rounds, static_cast<uint64_t>(rounds))
        << p->name << " does not hold the final state";
    EXPECT_EQ(f->theta.size(), 64u) << p->name;
    thetas.insert(f->theta);
    ++finishers;
  }
  EXPECT_GE(finishers, 2) << "fewer than min_peers peers saw the end of the job";
  EXPECT_EQ(thetas.size(), 1u) << "peers alive at the end hold different θ";
  if (!thetas.empty()) EXPECT_EQ(thetas.begin()->substr(0, 12), lines.back().theta);
}

// ---------------------------------------------------------------------------------------------
// (a) 20 × kill -9 of a random peer at a random moment of a round, each followed by a replacement
// with a new identity. The pool holds 5 peer processes throughout. Each kill waits until the
// previous replacement has joined and the next round has committed, then sleeps a random part of
// the recent round period, so kills land in every phase: ring formation, inner steps,
// all-reduce, reports, the gather window, and a joiner's state sync.
TEST(Churn, RandomKillsInTwentyTrials) {
  const uint64_t seed = SeedFor(20240611);
  std::cout << "[churn] RandomKillsInTwentyTrials seed " << seed
            << " (TRIBUTARY_CHURN_SEED to replay)" << std::endl;
  RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 rng(seed);

  constexpr int kKills = 20, kPool = 5, kRounds = 200, kTailRounds = 6;
  constexpr int kRoundTimeoutMs = 15000, kGatherMs = 100;
  ChurnCluster cluster("churn-kill");
  ASSERT_NO_FATAL_FAILURE(cluster.StartCoordinator(
      {"--peers", "8", "--min-peers", "2", "--gather-ms", std::to_string(kGatherMs), "--rounds",
       std::to_string(kRounds), "--inner-steps", "10", "--mode", "diloco", "--round-timeout-ms",
       std::to_string(kRoundTimeoutMs)}));
  for (int i = 0; i < kPool; ++i) cluster.StartPeer("p" + std::to_string(i));

  const auto t0 = Clock::now();
  int kills = 0;
  size_t seen = 0;
  PeerProc* replacement = nullptr;
  while (kills < kKills) {
    if (replacement) {  // the pool is back to 5 live peers before the next kill
      const auto deadline = DeadlineAfter(60s);
      while (!cluster.Joined(*replacement) && replacement->alive() && Clock::now() < deadline) {
        std::this_thread::sleep_for(25ms);
      }
      ASSERT_TRUE(cluster.Joined(*replacement)) << replacement->name << " never joined:\n"
                                                << Tail(ReadFileOrEmpty(cluster.peer_log(replacement->name)));
      seen = cluster.Rounds().size();
    }
    ASSERT_TRUE(cluster.WaitForRounds(seen, 60s))
        << "no round committed for 60 s after kill " << kills << ":\n"
        << Tail(ReadFileOrEmpty(cluster.coordinator_log()));
    const auto rounds = cluster.Rounds();
    seen = rounds.size();
    if (rounds.back().round >= kRounds - kTailRounds) break;
    // A random moment within the next round: uniform over the recent commit-to-commit period.
    double period = 1.0;
    if (rounds.size() >= 2) {
      std::vector<double> gaps;
      for (size_t i = rounds.size() > 5 ? rounds.size() - 5 : 1; i < rounds.size(); ++i) {
        gaps.push_back(rounds[i].logged_at - rounds[i - 1].logged_at);
      }
      std::sort(gaps.begin(), gaps.end());
      period = std::clamp(gaps[gaps.size() / 2], 0.2, 5.0);
    }
    const double delay = std::uniform_real_distribution<double>(0, period)(rng);
    std::this_thread::sleep_for(std::chrono::duration<double>(delay));
    auto running = cluster.Running();
    ASSERT_FALSE(running.empty()) << cluster.Table();
    PeerProc* victim = running[std::uniform_int_distribution<size_t>(0, running.size() - 1)(rng)];
    const int committed = static_cast<int>(cluster.Rounds().size());
    cluster.Kill(*victim);
    ++kills;
    std::cout << "[churn] kill " << kills << "/" << kKills << ": " << victim->name << " " << delay
              << " s after round " << rounds.back().round << " committed (period " << period
              << " s; " << committed << " rounds committed at the kill)" << std::endl;
    replacement = &cluster.StartPeer("r" + std::to_string(kills));
  }
  EXPECT_EQ(kills, kKills) << "the job ran out of rounds before all kills; raise kRounds";

  auto code = cluster.coordinator().Wait(DeadlineAfter(150s));
  if (!code.ok()) cluster.KeepDirectory();
  ASSERT_TRUE(code.ok()) << "job stalled:\n"
                         << Tail(ReadFileOrEmpty(cluster.coordinator_log())) << cluster.Table();
  EXPECT_EQ(*code, 0) << Tail(ReadFileOrEmpty(cluster.coordinator_log()));
  CheckJobEnd(cluster, kRounds, kRoundTimeoutMs / 1000.0, (kRoundTimeoutMs + kGatherMs) / 1000.0);

  const auto rounds = cluster.Rounds();
  int retried = 0;
  double max_wall = 0;
  for (const auto& r : rounds) {
    retried += r.attempts > 1;
    max_wall = std::max(max_wall, r.wall_seconds);
  }
  std::cout << "[churn] " << kills << " kills, " << rounds.size() << " rounds (" << retried
            << " retried, slowest " << max_wall << " s) in " << SecondsSince(t0) << " s\n"
            << cluster.Table() << std::flush;
  if (HasFailure()) cluster.KeepDirectory();
}

// ---------------------------------------------------------------------------------------------
// (b) A few minutes of membership churn: peers join (fresh identities), leave gracefully (SIGINT
// → Leave) and die (SIGKILL), with 3–7 alive at a time and ≥ 12 over the run. No round may stall
// past its deadline plus the gather window. Long: run alone with
//   --gtest_filter=Churn.ChurnWithTwelvePeersJoiningAndLeaving
TEST(Churn, ChurnWithTwelvePeersJoiningAndLeaving) {
  const uint64_t seed = SeedFor(777);
  std::cout << "[churn] ChurnWithTwelvePeersJoiningAndLeaving seed " << seed
            << " (TRIBUTARY_CHURN_SEED to replay)" << std::endl;
  RecordProperty("seed", std::to_string(seed));
  std::mt19937_64 rng(seed);

  constexpr int kRounds = 240, kTailRounds = 6, kMinAlive = 3, kMaxAlive = 7, kInitial = 4;
  constexpr int kRoundTimeoutMs = 20000, kGatherMs = 500;
  const auto kChurnFor = 150s;
  ChurnCluster cluster("churn-members");
  ASSERT_NO_FATAL_FAILURE(cluster.StartCoordinator(
      {"--peers", "16", "--min-peers", "2", "--gather-ms", std::to_string(kGatherMs), "--rounds",
       std::to_string(kRounds), "--inner-steps", "6", "--mode", "diloco", "--round-timeout-ms",
       std::to_string(kRoundTimeoutMs)}));
  int spawned = 0, interrupts = 0, kills = 0;
  for (; spawned < kInitial; ++spawned) cluster.StartPeer("m" + std::to_string(spawned));
  ASSERT_TRUE(cluster.WaitForRounds(0, 120s)) << Tail(ReadFileOrEmpty(cluster.coordinator_log()));

  const auto t0 = Clock::now();
  std::uniform_real_distribution<double> pause(1.0, 3.5), coin(0, 1);
  while (Clock::now() - t0 < kChurnFor) {
    std::this_thread::sleep_for(std::chrono::duration<double>(pause(rng)));
    if (auto exited = cluster.coordinator().Poll()) {
      cluster.KeepDirectory();
      FAIL() << "coordinator exited with code " << *exited << " during churn:\n"
             << Tail(ReadFileOrEmpty(cluster.coordinator_log())) << cluster.Table();
    }
    const auto rounds = cluster.Rounds();
    if (!rounds.empty() && rounds.back().round >= kRounds - kTailRounds) break;
    auto running = cluster.Running();
    const int alive = static_cast<int>(running.size());
    const double r = coin(rng);
    enum { kJoin, kInterrupt, kKill } action;
    if (alive < kMinAlive)
      action = kJoin;
    else if (alive >= kMaxAlive)
      action = r < 0.5 ? kInterrupt : kKill;
    else
      action = r < 0.4 ? kJoin : r < 0.7 ? kInterrupt : kKill;
    const double t = SecondsSince(t0);
    const int round = rounds.empty() ? -1 : rounds.back().round;
    if (action == kJoin) {
      const std::string name = "m" + std::to_string(spawned++);
      cluster.StartPeer(name);
      std::cout << "[churn] t=" << t << " s (after round " << round << "): join " << name
                << std::endl;
      continue;
    }
    std::vector<PeerProc*> candidates;
    for (PeerProc* p : running) {  // SIGINT only peers whose handler is installed
      if (action == kKill || cluster.Joined(*p)) candidates.push_back(p);
    }
    if (candidates.empty()) {
      action = kKill;
      candidates.assign(running.begin(), running.end());
    }
    if (candidates.empty()) continue;
    PeerProc* victim =
        candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng)];
    if (action == kInterrupt) {
      cluster.Interrupt(*victim);
      ++interrupts;
    } else {
      cluster.Kill(*victim);
      ++kills;
    }
    std::cout << "[churn] t=" << t << " s (after round " << round
              << "): " << (action == kInterrupt ? "SIGINT " : "SIGKILL ") << victim->name
              << std::endl;
    // Interrupted peers must leave promptly: within one round deadline.
    for (auto& p : cluster.peers()) {
      if (p->fate == Fate::kInterrupted && p->alive() &&
          Clock::now() - p->signalled > Millis(kRoundTimeoutMs)) {
        ADD_FAILURE() << p->name << " ignored SIGINT for " << kRoundTimeoutMs << " ms:\n"
                      << Tail(ReadFileOrEmpty(cluster.peer_log(p->name)));
        cluster.Kill(*p);
      }
    }
  }
  const double churn_seconds = SecondsSince(t0);
  EXPECT_GE(spawned, 12) << "fewer than 12 peer processes over the run";
  EXPECT_GE(interrupts, 3);
  EXPECT_GE(kills, 3);

  auto code = cluster.coordinator().Wait(DeadlineAfter(180s));
  if (!code.ok()) cluster.KeepDirectory();
  ASSERT_TRUE(code.ok()) << "job stalled:\n"
                         << Tail(ReadFileOrEmpty(cluster.coordinator_log())) << cluster.Table();
  EXPECT_EQ(*code, 0) << Tail(ReadFileOrEmpty(cluster.coordinator_log()));
  CheckJobEnd(cluster, kRounds, kRoundTimeoutMs / 1000.0, (kRoundTimeoutMs + kGatherMs) / 1000.0);

  const auto rounds = cluster.Rounds();
  int retried = 0, max_peers = 0;
  double max_wall = 0, max_gap = 0;
  for (size_t i = 0; i < rounds.size(); ++i) {
    retried += rounds[i].attempts > 1;
    max_peers = std::max(max_peers, rounds[i].peers);
    max_wall = std::max(max_wall, rounds[i].wall_seconds);
    if (i) max_gap = std::max(max_gap, rounds[i].logged_at - rounds[i - 1].logged_at);
  }
  std::cout << "[churn] " << spawned << " peers started, " << interrupts << " SIGINT, " << kills
            << " SIGKILL over " << churn_seconds << " s of churn; " << rounds.size() << " rounds ("
            << retried << " retried, up to " << max_peers << " peers, slowest " << max_wall
            << " s, largest gap " << max_gap << " s)\n"
            << cluster.Table() << std::flush;
  if (HasFailure()) cluster.KeepDirectory();
}

// ---------------------------------------------------------------------------------------------
// A member that freezes mid-round (SIGSTOP: a laptop lid closed, a partition without RST) is
// dropped by the coordinator after the liveness timeout and the round is retried; the survivors
// must follow that retry instead of waiting for the round deadline inside the collective.
// The survivors see the retry's RoundStart arrive while they are blocked (in Ring::Form or in
// the all-reduce) and give that attempt up at once (collectives/form_control.h,
// Communicator::Interrupt).
TEST(Churn, FrozenMemberCostsTheLivenessTimeoutNotTheRoundDeadline) {
  // Rounds start with the first two peers; the others join (and sync) within a few rounds of
  // ~0.1 s each, so 20 rounds leave room to freeze one after all four are in.
  constexpr int kRounds = 20, kRoundTimeoutMs = 20000, kLivenessMs = 2000;
  ChurnCluster cluster("churn-frozen");
  ASSERT_NO_FATAL_FAILURE(cluster.StartCoordinator(
      {"--peers", "4", "--min-peers", "2", "--gather-ms", "0", "--rounds", std::to_string(kRounds),
       "--inner-steps", "10", "--mode", "diloco", "--round-timeout-ms",
       std::to_string(kRoundTimeoutMs), "--heartbeat-ms", "400", "--liveness-timeout-ms",
       std::to_string(kLivenessMs)}));
  for (int i = 0; i < 4; ++i) cluster.StartPeer("p" + std::to_string(i));
  const auto deadline = DeadlineAfter(120s);
  while (ReadFileOrEmpty(cluster.coordinator_log()).find(" complete: 4 peers") == std::string::npos) {
    ASSERT_LT(Clock::now(), deadline) << Tail(ReadFileOrEmpty(cluster.coordinator_log()));
    ASSERT_FALSE(cluster.coordinator().Poll().has_value())
        << Tail(ReadFileOrEmpty(cluster.coordinator_log()));
    std::this_thread::sleep_for(5ms);
  }
  PeerProc& frozen = *cluster.peers()[2];
  frozen.process->Signal(SIGSTOP);
  auto code = cluster.coordinator().Wait(DeadlineAfter(180s));
  cluster.Kill(frozen);
  ASSERT_TRUE(code.ok()) << Tail(ReadFileOrEmpty(cluster.coordinator_log()));
  EXPECT_EQ(*code, 0) << Tail(ReadFileOrEmpty(cluster.coordinator_log()));
  const std::string log = ReadFileOrEmpty(cluster.coordinator_log());
  EXPECT_NE(log.find("silent for"), std::string::npos)
      << "the frozen peer was never declared dead:\n"
      << Tail(log);
  const auto rounds = ParseRounds(log);
  ASSERT_EQ(static_cast<int>(rounds.size()), kRounds) << Tail(log);
  for (const auto& r : rounds) {
    // Liveness timeout + one sweep + a retry of a tiny round, with room for a loaded machine.
    EXPECT_LT(r.wall_seconds, kLivenessMs / 1000.0 + 6.0)
        << "round " << r.round << " (" << r.attempts
        << " attempts) waited for the round deadline, not the liveness timeout";
  }
  if (HasFailure()) cluster.KeepDirectory();
}

}  // namespace
}  // namespace tributary
