// False positives of the verifier over many honest jobs: each run is a real verifying DiLoCo job
// (the `tributary` coordinator and peers as processes over loopback, every inner step
// challenged), with only honest peers; afterwards the coordinator's SQLite ledger and ban list
// are read and every accusation is counted. The target (verifier issue): 0 false positives over
// ≥ 100 honest CPU runs. Runs cycle through the configurations a job can take: 3 or 4 peers,
// fp32 or int8 (error feedback), verification after or before the commit, one or two verifiers
// per step, and groups of two.
//
//   tributary_bench_verifier_honest_runs --runs 100 --json benchmarks/results/verifier_honest_runs.json
//
// A run that accuses anyone keeps its logs (the path is printed); the others are deleted.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/files.h"
#include "core/status.h"
#include "launcher/process.h"
#include "launcher/store.h"
#include "net/identity.h"
#include "verifier/ledger.h"

namespace tributary::bench {
namespace {

using json = nlohmann::json;
using launcher::ChildProcess;
using namespace std::chrono_literals;

struct Config {
  int runs = 100;
  int first_seed = 1;
  int rounds = 3;
  int inner_steps = 4;
  int n_layer = 1, d_model = 32;
  std::string binary = TRIBUTARY_BINARY;
  std::string data = std::string(TRIBUTARY_SOURCE_DIR) + "/data/moby-dick";
  std::string json_path;
};

// What run i varies: every combination of the first three recurs within 12 runs.
struct RunShape {
  int peers = 3;
  std::string codec;  // "" = fp32
  bool before_commit = false;
  int verifiers_per_step = 1;
  int group_size = 0;

  std::string Name() const {
    std::string s = std::to_string(peers) + " peers, " + (codec.empty() ? "fp32" : codec) +
                    (before_commit ? ", before commit" : ", after commit");
    if (verifiers_per_step > 1) s += ", " + std::to_string(verifiers_per_step) + " verifiers/step";
    if (group_size > 0) s += ", groups of " + std::to_string(group_size);
    return s;
  }
};

RunShape ShapeOf(int i) {
  RunShape s;
  s.peers = 3 + i % 2;
  s.codec = i % 3 == 0 ? "int8" : "";
  s.before_commit = i % 4 >= 2;
  s.verifiers_per_step = i % 5 == 4 ? 2 : 1;
  if (s.peers == 4 && i % 6 == 5) s.group_size = 2;
  return s;
}

struct RunResult {
  int seed = 0;
  RunShape shape;
  int coordinator_exit = -1;
  std::vector<int> peer_exits;
  uint64_t rounds_complete = 0, rounds_short = 0;  // rounds committed; of those, without every peer
  uint64_t records = 0, steps_committed = 0, steps_challenged = 0, steps_verified = 0;
  uint64_t steps_failed = 0, false_accusations = 0, rejected = 0, disputed = 0, pending = 0;
  uint64_t bans = 0, lost_rounds = 0;
  std::vector<std::string> ban_reasons;
  double seconds = 0;

  uint64_t Accusations() const { return steps_failed + false_accusations + rejected + disputed + bans; }
  bool Clean() const {
    if (coordinator_exit != 0 || Accusations() != 0) return false;
    for (int e : peer_exits) {
      if (e != 0) return false;
    }
    return true;
  }
};

std::string FreshDir(int seed) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("trib-honest-" + std::to_string(::getpid()) + "-" + std::to_string(seed));
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
  return path.string();
}

Result<RunResult> RunOne(const Config& c, int seed, const RunShape& shape) {
  RunResult r;
  r.seed = seed;
  r.shape = shape;
  const std::string dir = FreshDir(seed);
  const std::string db = dir + "/coordinator.sqlite";
  std::vector<std::string> argv = {c.binary, "coordinator", "--data", c.data, "--port-file", dir + "/port",
                                   "--db", db, "--mode", "diloco", "--peers", std::to_string(shape.peers),
                                   "--min-peers", std::to_string(shape.peers), "--rounds", std::to_string(c.rounds),
                                   "--inner-steps", std::to_string(c.inner_steps), "--verify-samples",
                                   std::to_string(c.inner_steps), "--verifiers-per-step",
                                   std::to_string(shape.verifiers_per_step), "--seed", std::to_string(seed),
                                   "--round-timeout-ms", "30000", "--n-layer", std::to_string(c.n_layer), "--n-head",
                                   "2", "--d-model", std::to_string(c.d_model), "--context", "32", "--batch-size",
                                   "8", "--inner-lr", "0.01"};
  if (shape.before_commit) argv.push_back("--verify-before-commit");
  if (!shape.codec.empty()) argv.insert(argv.end(), {"--codec", shape.codec});
  if (shape.group_size > 0) argv.insert(argv.end(), {"--group-size", std::to_string(shape.group_size)});
  const auto t0 = Clock::now();
  TRIB_ASSIGN_OR_RETURN(ChildProcess coordinator, ChildProcess::Spawn(argv, {}, dir + "/coordinator.log"));
  const Deadline listening = DeadlineAfter(60s);
  while (!FileExists(dir + "/port")) {
    if (Clock::now() > listening || coordinator.Poll()) {
      return Internal("the coordinator never listened; see " + dir + "/coordinator.log");
    }
    std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(50ms);
  int port = 0;
  std::string job, key;
  std::istringstream(ReadFileOrEmpty(dir + "/port")) >> port >> job >> key;
  std::vector<ChildProcess> peers;
  for (int p = 0; p < shape.peers; ++p) {
    const std::string name = "p" + std::to_string(p);
    TRIB_ASSIGN_OR_RETURN(ChildProcess peer,
                          ChildProcess::Spawn({c.binary, "peer", "--coordinator", "127.0.0.1:" + std::to_string(port),
                                               "--job", job, "--coordinator-key", key, "--name", name, "--data", c.data},
                                              {{"OPENBLAS_NUM_THREADS", "1"}}, dir + "/" + name + ".log"));
    peers.push_back(std::move(peer));
  }
  auto coordinator_exit = coordinator.Wait(DeadlineAfter(300s));
  if (!coordinator_exit.ok()) coordinator.Signal(SIGKILL);
  r.coordinator_exit = coordinator_exit.ok() ? *coordinator_exit : -1;
  for (ChildProcess& p : peers) {
    auto code = p.Wait(DeadlineAfter(30s));
    if (!code.ok()) p.Signal(SIGKILL);
    r.peer_exits.push_back(code.ok() ? *code : -1);
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  const std::string log = ReadFileOrEmpty(dir + "/coordinator.log");
  const std::regex complete(R"(round \d+ complete: (\d+) peers)");
  for (std::sregex_iterator it(log.begin(), log.end(), complete), end; it != end; ++it) {
    ++r.rounds_complete;
    if (std::stoi((*it)[1]) < shape.peers) ++r.rounds_short;
  }
  TRIB_ASSIGN_OR_RETURN(auto store, launcher::CoordinatorStore::Open(db));
  TRIB_ASSIGN_OR_RETURN(std::string bytes, store->LoadLedger(job));
  TRIB_ASSIGN_OR_RETURN(verifier::Ledger ledger, verifier::Ledger::Decode(bytes));  // re-verifies commitments
  for (const verifier::LedgerRecord& rec : ledger.Records()) {
    ++r.records;
    r.steps_committed += rec.steps_committed;
    r.steps_challenged += rec.steps_challenged();
    r.steps_verified += rec.steps_verified();
    r.steps_failed += rec.steps_failed();
    r.false_accusations += rec.false_accusations;
    switch (rec.verdict()) {
      case verifier::RoundVerdict::kRejected: ++r.rejected; break;
      case verifier::RoundVerdict::kDisputed: ++r.disputed; break;
      case verifier::RoundVerdict::kPending: ++r.pending; break;
      case verifier::RoundVerdict::kVerified: break;
    }
  }
  TRIB_ASSIGN_OR_RETURN(auto bans, store->BannedPeers(job));
  r.bans = bans.size();
  for (const auto& [peer, why] : bans) r.ban_reasons.push_back(peer.substr(0, 12) + ": " + why);
  TRIB_ASSIGN_OR_RETURN(auto lost, store->LostRounds(job));
  r.lost_rounds = lost.size();
  store.reset();
  if (r.Clean()) {
    std::filesystem::remove_all(dir);
  } else {
    std::printf("  run %d (%s) is not clean; logs kept in %s\n", seed, shape.Name().c_str(), dir.c_str());
  }
  return r;
}

json ToJson(const RunResult& r) {
  return {{"seed", r.seed},
          {"shape", r.shape.Name()},
          {"peers", r.shape.peers},
          {"codec", r.shape.codec.empty() ? "fp32" : r.shape.codec},
          {"before_commit", r.shape.before_commit},
          {"verifiers_per_step", r.shape.verifiers_per_step},
          {"group_size", r.shape.group_size},
          {"coordinator_exit", r.coordinator_exit},
          {"peer_exits", r.peer_exits},
          {"rounds_complete", r.rounds_complete},
          {"rounds_without_every_peer", r.rounds_short},
          {"ledger_records", r.records},
          {"steps_committed", r.steps_committed},
          {"steps_challenged", r.steps_challenged},
          {"steps_verified", r.steps_verified},
          {"steps_failed", r.steps_failed},
          {"false_accusations", r.false_accusations},
          {"rounds_rejected", r.rejected},
          {"rounds_disputed", r.disputed},
          {"rounds_pending", r.pending},
          {"bans", r.bans},
          {"ban_reasons", r.ban_reasons},
          {"lost_rounds", r.lost_rounds},
          {"seconds", r.seconds}};
}

int Main(const Config& c) {
  std::printf("honest verifying jobs: %d runs, %d rounds × %d inner steps, every step challenged, char-GPT %d layer(s) "
              "× d_model %d\n", c.runs, c.rounds, c.inner_steps, c.n_layer, c.d_model);
  std::vector<RunResult> results;
  int errors = 0;
  for (int i = 0; i < c.runs; ++i) {
    const int seed = c.first_seed + i;
    auto r = RunOne(c, seed, ShapeOf(i));
    if (!r.ok()) {
      ++errors;
      std::printf("  run %d: %s\n", seed, r.status().ToString().c_str());
      continue;
    }
    std::printf("  run %3d  %-48s %5.1f s  verified %3llu / challenged %3llu  accusations %llu%s\n", seed,
                r->shape.Name().c_str(), r->seconds, static_cast<unsigned long long>(r->steps_verified),
                static_cast<unsigned long long>(r->steps_challenged),
                static_cast<unsigned long long>(r->Accusations()), r->Clean() ? "" : "  NOT CLEAN");
    std::fflush(stdout);
    results.push_back(std::move(r).value());
  }
  // One row per shape, then the total.
  struct Sum {
    uint64_t runs = 0, clean = 0, peer_runs = 0, challenged = 0, verified = 0, pending = 0, accusations = 0,
             bans = 0, lost = 0, short_rounds = 0;
  };
  std::map<std::string, Sum> by_shape;
  Sum total;
  for (const RunResult& r : results) {
    for (Sum* s : {&by_shape[r.shape.Name()], &total}) {
      ++s->runs;
      s->clean += r.Clean();
      s->peer_runs += r.shape.peers;
      s->challenged += r.steps_challenged;
      s->verified += r.steps_verified;
      s->pending += r.pending;
      s->accusations += r.steps_failed + r.false_accusations + r.rejected + r.disputed;
      s->bans += r.bans;
      s->lost += r.lost_rounds;
      s->short_rounds += r.rounds_short;
    }
  }
  std::printf("\n| configuration | runs | honest peer-runs | steps challenged | verified | failed or falsely accused "
              "| bans | rounds without every peer | clean runs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  auto row = [](const std::string& name, const Sum& s) {
    std::printf("| %s | %llu | %llu | %llu | %llu | %llu | %llu | %llu | %llu / %llu |\n", name.c_str(),
                static_cast<unsigned long long>(s.runs), static_cast<unsigned long long>(s.peer_runs),
                static_cast<unsigned long long>(s.challenged), static_cast<unsigned long long>(s.verified),
                static_cast<unsigned long long>(s.accusations), static_cast<unsigned long long>(s.bans),
                static_cast<unsigned long long>(s.short_rounds), static_cast<unsigned long long>(s.clean),
                static_cast<unsigned long long>(s.runs));
  };
  for (const auto& [name, s] : by_shape) row(name, s);
  row("**all**", total);
  std::printf("\nfalse positives (failed steps, false accusations, rejected or disputed rounds, bans of honest peers): "
              "%llu over %llu runs; %d runs could not be made\n",
              static_cast<unsigned long long>(total.accusations + total.bans),
              static_cast<unsigned long long>(total.runs), errors);
  if (!c.json_path.empty()) {
    json runs = json::array();
    for (const RunResult& r : results) runs.push_back(ToJson(r));
    json doc = {{"benchmark", "verifier_honest_runs"},
                {"rounds", c.rounds},
                {"inner_steps", c.inner_steps},
                {"n_layer", c.n_layer},
                {"d_model", c.d_model},
                {"runs_requested", c.runs},
                {"runs_made", results.size()},
                {"runs_clean", total.clean},
                {"false_positives", total.accusations + total.bans},
                {"steps_challenged", total.challenged},
                {"steps_verified", total.verified},
                {"runs", runs}};
    Status st = WriteFileAtomically(c.json_path, doc.dump(2) + "\n");
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 1;
    }
    std::printf("wrote %s\n", c.json_path.c_str());
  }
  return errors == 0 && total.clean == total.runs ? 0 : 1;
}

}  // namespace
}  // namespace tributary::bench

int main(int argc, char** argv) {
  tributary::bench::Config c;
  CLI::App app{"verifier false positives over honest verifying jobs"};
  app.add_option("--runs", c.runs, "honest jobs to run");
  app.add_option("--first-seed", c.first_seed, "job seed of the first run (then +1 per run)");
  app.add_option("--rounds", c.rounds);
  app.add_option("--inner-steps", c.inner_steps, "inner steps per round, each challenged");
  app.add_option("--n-layer", c.n_layer);
  app.add_option("--d-model", c.d_model);
  app.add_option("--binary", c.binary, "the tributary executable");
  app.add_option("--data", c.data, "corpus directory");
  app.add_option("--json", c.json_path, "write the runs here");
  CLI11_PARSE(app, argc, argv);
  return tributary::bench::Main(c);
}
