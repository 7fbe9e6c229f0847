// tributary-bench: scenario parsing (every refusal names the file, line and key), log parsing,
// the metrics, and — where network namespaces can be made — a tiny end-to-end run on the lan
// preset that must produce the JSON and the plots.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "benchmarks/wan/wan_emulator.h"
#include "benchmarks/wanbench/log_parse.h"
#include "benchmarks/wanbench/metrics.h"
#include "benchmarks/wanbench/report.h"
#include "benchmarks/wanbench/scenario.h"
#include "core/files.h"

namespace tributary::wanbench {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kNetwork = "[network]\npeers = 4\npreset = \"continent\"\n";
constexpr const char* kBudget = "[budget]\nsteps = 100\nh = 50\nddp_steps_per_round = 10\n";

std::string Refusal(const std::string& toml) {
  auto s = ParseBenchScenario(toml, "b.toml");
  EXPECT_FALSE(s.ok()) << "accepted:\n" << toml;
  return s.ok() ? "" : s.status().message();
}

TEST(BenchScenarioTest, ParsesAFullScenario) {
  const std::string toml = std::string("name = \"x\"\nseed = 7\n") +
                           "systems = [\"tributary-ddp\", \"tributary-diloco\", \"tributary-diloco-h25\", \"gloo-ddp\"]\n" +
                           "[network]\npeers = 4\npreset = \"continent\"\ntcp_buffer_bytes = 1048576\n" +
                           "[[network.link]]\nfrom = 2\nto = 3\nrate_mbit = 50\n" +
                           "[job]\nn_layer = 1\nd_model = 64\nbatch_size = 16\n" + kBudget +
                           "[[fault]]\npeer = 3\nat_seconds = 12.5\nsystems = [\"tributary-diloco\"]\n";
  auto s = ParseBenchScenario(toml, "b.toml");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->name, "x");
  EXPECT_EQ(s->peers(), 4);
  EXPECT_DOUBLE_EQ(s->network.link(2, 3).rate_mbit, 50);
  EXPECT_DOUBLE_EQ(s->network.link(3, 2).rate_mbit, 1000);
  EXPECT_EQ(s->network.tcp_buffer_bytes, 1048576);
  EXPECT_EQ(s->base_spec.n_layer(), 1u);
  EXPECT_EQ(s->base_spec.d_model(), 64u);
  EXPECT_EQ(s->base_spec.seed(), 7u);
  EXPECT_EQ(s->steps_per_peer, 100u);
  EXPECT_EQ(s->total_tokens(), 100u * 16 * 64 * 4);
  ASSERT_EQ(s->systems.size(), 4u);
  EXPECT_EQ(s->systems[2].steps_per_round, 25u);
  const v1::JobSpec ddp = SpecFor(*s, s->systems[0]);
  EXPECT_EQ(ddp.mode(), v1::MODE_DDP);
  EXPECT_EQ(ddp.rounds(), 10u);
  EXPECT_EQ(ddp.inner_steps(), 10u);
  EXPECT_EQ(ddp.min_peers(), 0u);  // no fault: every peer is needed
  const v1::JobSpec diloco = SpecFor(*s, s->systems[1]);
  EXPECT_EQ(diloco.mode(), v1::MODE_DILOCO);
  EXPECT_EQ(diloco.rounds(), 2u);
  EXPECT_EQ(diloco.min_peers(), 3u);  // the fault's system may lose a peer
  ASSERT_NE(s->FaultFor("tributary-diloco"), nullptr);
  EXPECT_EQ(s->FaultFor("gloo-ddp"), nullptr);
  EXPECT_THAT(s->job_toml, HasSubstr("n_layer = 1"));
  EXPECT_THAT(s->job_toml, HasSubstr("[job]"));
  EXPECT_THAT(s->job_toml, Not(HasSubstr("peers")));
}

TEST(BenchScenarioTest, TokenBudgetMustBeWholeSteps) {
  // One step of 4 peers at the default batch 32 × context 64 is 8192 tokens.
  auto ok = ParseBenchScenario(std::string(kNetwork) + "[budget]\ntokens = 819200\nh = 50\n", "b.toml");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->steps_per_peer, 100u);
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[budget]\ntokens = 1000000\n"),
              HasSubstr("b.toml:5: budget.tokens = 1000000 is not a whole number of steps: one step of 4 "
                        "peers is 8192 tokens (batch_size × context × peers); try 999424 or 1007616"));
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[budget]\ntokens = 819200\nsteps = 100\n"),
              HasSubstr("exactly one of tokens"));
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[budget]\nh = 50\n"), HasSubstr("exactly one of tokens"));
  EXPECT_THAT(Refusal(kNetwork), HasSubstr("needs a [budget] table"));
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[budget]\nsteps = 100\nh = 0\n"),
              HasSubstr("b.toml:6: budget.h must be in 1..100000, got 0"));
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[budget]\nsteps = -3\n"), HasSubstr("budget.steps must be positive"));
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[budget]\nsteps = 100\nrounds = 3\n"),
              HasSubstr("b.toml:6: unknown key 'budget.rounds' (known here: tokens, steps, h, ddp_steps_per_round)"));
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[budget]\nsteps = 100\nh = 30\n"),
              HasSubstr("tributary-diloco trains 30 steps per round, which does not divide the budget of 100"));
}

TEST(BenchScenarioTest, NetworkErrorsNameTheLineOfTheScenarioFile) {
  // The [network] table goes through benchmarks/wan's own parser with the file's line numbers.
  EXPECT_THAT(Refusal(std::string("seed = 1\n\n[network]\npeers = 4\nprest = \"lan\"\n") + kBudget),
              HasSubstr("b.toml:5: unknown key 'prest'"));
  EXPECT_THAT(Refusal(std::string("[budget]\nsteps = 100\n[network]\npeers = 3\n[network.matrix]\n"
                                  "delay_ms = [[0, 1, 1],\n  [1, 0, 1]]\n")),
              HasSubstr("b.toml:6: matrix.delay_ms must have 3 rows (peers = 3), got 2"));
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[[network.link]]\nfrom = 0\nto = 1\nrate_mbit = -5\n" + kBudget),
              HasSubstr("b.toml:4: link[0].rate_mbit must be in [0, 1000000], got -5"));
  EXPECT_THAT(Refusal(std::string("[network]\npreset = \"lan\"\n") + kBudget), HasSubstr("needs 'peers = N'"));
  EXPECT_THAT(Refusal(std::string("network = { peers = 2 }\n") + kBudget), HasSubstr("b.toml:1: write 'network' as a [network] table"));
  EXPECT_THAT(Refusal(kBudget), HasSubstr("needs a [network] table"));
  EXPECT_THAT(Refusal(std::string("[network.matrix]\ndelay_ms = [[0, 1], [1, 0]]\n[network]\npeers = 2\n") + kBudget),
              HasSubstr("b.toml:4: network.peers must come before the sub-table on line 1"));
  EXPECT_THAT(Refusal(std::string("[network]\npeers = 4\npreset = \"moon\"\n") + kBudget), HasSubstr("unknown preset 'moon'"));
}

TEST(BenchScenarioTest, JobErrorsNameTheLineAndReservedKeys) {
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[job]\nn_layer = 2\nmode = \"ddp\"\n" + kBudget),
              HasSubstr("b.toml:6: job.mode is set by tributary-bench"));
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[job]\nn_layers = 2\n" + kBudget),
              HasSubstr("b.toml:5: job.n_layers: unknown job key 'n_layers'"));
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[job]\nbatch_size = \"big\"\n" + kBudget),
              HasSubstr("b.toml:5: job.batch_size: job key 'batch_size' has the wrong type"));
  EXPECT_THAT(Refusal(std::string(kNetwork) + "[job]\nn_head = 3\n" + kBudget),
              HasSubstr("d_model must be divisible by n_head"));
  for (const auto& key : ReservedJobKeys()) {
    EXPECT_THAT(Refusal(std::string(kNetwork) + "[job]\n" + key + " = 1\n" + kBudget), HasSubstr("job." + key));
  }
}

TEST(BenchScenarioTest, SystemsFaultsAndTopLevelAreChecked) {
  const std::string base = std::string(kNetwork) + kBudget;
  EXPECT_THAT(Refusal("systems = [\"tributary-ddp\", \"horovod\"]\n" + base),
              HasSubstr("b.toml:1: systems: unknown system 'horovod' (known: tributary-ddp, tributary-diloco, "
                        "tributary-diloco-h<N>, gloo-ddp)"));
  EXPECT_THAT(Refusal("systems = [\"gloo-ddp\", \"gloo-ddp\"]\n" + base), HasSubstr("names 'gloo-ddp' twice"));
  EXPECT_THAT(Refusal("systems = []\n" + base), HasSubstr("at least one system"));
  EXPECT_THAT(Refusal("systems = \"gloo-ddp\"\n" + base), HasSubstr("systems must be an array of strings"));
  EXPECT_THAT(Refusal("systems = [\"tributary-diloco-h0\"]\n" + base), HasSubstr("unknown system"));
  EXPECT_THAT(Refusal("systems = [\"tributary-diloco-h30\"]\n" + base), HasSubstr("does not divide"));
  EXPECT_THAT(Refusal("sed = 1\n" + base), HasSubstr("b.toml:1: unknown key 'sed' (known here: name, seed"));
  EXPECT_THAT(Refusal("name = \"a b\"\n" + base), HasSubstr("name must be 1-64 characters"));
  EXPECT_THAT(Refusal("timeout_seconds = 1\n" + base), HasSubstr("timeout_seconds must be in [10, 86400]"));
  EXPECT_THAT(Refusal(base + "[[fault]]\npeer = 4\nat_seconds = 3\n"),
              HasSubstr("b.toml:9: fault[0].peer = 4 is outside 0..3"));
  EXPECT_THAT(Refusal(base + "[[fault]]\npeer = 1\n"), HasSubstr("needs 'peer' and 'at_seconds'"));
  EXPECT_THAT(Refusal(base + "[[fault]]\npeer = 1\nat_seconds = 0\n"), HasSubstr("fault[0].at_seconds must be in (0, 86400)"));
  EXPECT_THAT(Refusal(base + "[[fault]]\npeer = 1\nat_seconds = 3\nsystems = [\"tributary-diloco-h10\"]\n"),
              HasSubstr("names 'tributary-diloco-h10', which is not in the scenario's systems"));
  EXPECT_THAT(Refusal(base + "[[fault]]\npeer = 1\nat_seconds = 3\nwhen = 2\n"), HasSubstr("unknown key 'fault[0].when'"));
  EXPECT_THAT(Refusal(base + "[[fault]]\npeer = 1\nat_seconds = 3\n[[fault]]\npeer = 2\nat_seconds = 4\n"),
              HasSubstr("one fault per system"));
  EXPECT_THAT(Refusal(base + "[fault]\npeer = 1\n"), HasSubstr("'fault' must be written as [[fault]] tables"));
  EXPECT_THAT(Refusal("seed = \n" + base), HasSubstr("b.toml:1:"));  // TOML syntax error
  EXPECT_THAT(LoadBenchScenarioFile("/nonexistent/s.toml").status().message(), HasSubstr("cannot read scenario"));
}

TEST(BenchScenarioTest, ShippedScenariosParse) {
  for (const char* name : {"continent", "transatlantic"}) {
    auto s = LoadBenchScenarioFile(std::string(TRIBUTARY_SOURCE_DIR) + "/benchmarks/scenarios/" + name + ".toml");
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_EQ(s->name, name);
    EXPECT_EQ(s->peers(), 4);
    EXPECT_GE(s->systems.size(), 3u);
  }
}

TEST(BenchLogTest, ReadsCoordinatorAndPeerLines) {
  const std::string coordinator =
      "20:35:11.123 info [coordinator] peer p1 (ab12cd) joined job 0123 from 10.77.0.2:5555 as shard 1 — cpu\n"
      "20:35:14.500 info [coordinator] round 0 complete: 4 peers, train loss 3.1000, eval loss 2.9000, θ "
      "abcdef012345, 3.37 s, 1 attempt(s)\n"
      "garbage line\n"
      "20:35:20.000 info [coordinator] round 1 complete: 3 peers, train loss 2.5000, θ abcdef012345, 5.50 s, "
      "2 attempt(s)\n"
      "20:35:20.100 info [coordinator] job 0123 finished: 2 rounds in 9.0 s\n";
  const CoordinatorLog log = ParseCoordinatorLog(coordinator);
  ASSERT_EQ(log.commits.size(), 2u);
  EXPECT_EQ(log.joins.size(), 1u);
  EXPECT_TRUE(log.finished);
  EXPECT_EQ(log.commits[0].peers, 4u);
  EXPECT_DOUBLE_EQ(*log.commits[0].eval_loss, 2.9);
  EXPECT_DOUBLE_EQ(log.commits[0].wall_seconds, 3.37);
  EXPECT_NEAR(log.commits[0].seconds_of_day, 20 * 3600 + 35 * 60 + 14.5, 1e-9);
  EXPECT_FALSE(log.commits[1].eval_loss.has_value());
  EXPECT_EQ(log.commits[1].attempts, 2u);
  const auto peer = ParsePeerLog(
      "20:35:14.400 info [p2] round 0 attempt 0: loss 3.0999, θ abcdef012345, compute 2.10 s, comm 0.90 s, "
      "1234567 bytes sent\n");
  ASSERT_EQ(peer.size(), 1u);
  EXPECT_DOUBLE_EQ(peer[0].compute_seconds, 2.1);
  EXPECT_DOUBLE_EQ(peer[0].comm_seconds, 0.9);
  EXPECT_EQ(peer[0].bytes_sent, 1234567u);
  // A line logged at 23:59:59 read shortly after midnight belongs to the previous day.
  const double reference = 1700000000;  // any instant
  EXPECT_NEAR(UnixTimeOf(0, reference + 86400) - UnixTimeOf(0, reference), 86400, 3601);
}

SystemResult TwoRounds() {
  SystemResult r;
  r.name = "tributary-diloco";
  r.ok = true;
  r.peers.resize(2);
  r.peers[0] = {4, 1, 100, 0};
  r.peers[1] = {6, 3, 300, 0};
  RoundPoint a, b;
  a.round = 0, a.t_end = 10, a.wall_seconds = 10, a.tokens = 1000, a.eval_loss = 3.0;
  b.round = 1, b.t_end = 20, b.wall_seconds = 10, b.tokens = 1000, b.eval_loss = 2.0;
  r.rounds = {a, b};
  return r;
}

TEST(BenchMetricsTest, DerivesRatesUtilisationAndWireBytes) {
  SystemResult r = TwoRounds();
  std::vector<WireSample> samples = {{-5, {0, 0}}, {0, {100, 100}}, {10, {600, 400}}, {20, {1100, 700}}};
  AttributeWireBytes(samples, r);
  Finish(r);
  EXPECT_EQ(r.tokens, 2000u);
  EXPECT_DOUBLE_EQ(r.train_seconds, 20);
  EXPECT_DOUBLE_EQ(r.tokens_per_second, 100);
  EXPECT_DOUBLE_EQ(r.compute_utilisation, 0.25);  // (4 + 6) / 2 peers / 20 s
  EXPECT_DOUBLE_EQ(r.comm_fraction, 0.1);
  EXPECT_DOUBLE_EQ(r.rounds[0].wire_bytes_per_peer, 400);  // (1000 − 200) / 2
  EXPECT_DOUBLE_EQ(r.rounds[1].wire_bytes_per_peer, 400);
  EXPECT_EQ(r.peers[0].wire_bytes_sent, 1000u);  // set-up traffic before t = 0 is left out
  EXPECT_DOUBLE_EQ(r.wire_bytes_per_peer, 800);
  EXPECT_DOUBLE_EQ(*TimeToLoss(r, 2.5), 15);  // halfway between the two rounds
  EXPECT_DOUBLE_EQ(*TimeToLoss(r, 3.5), 10);
  EXPECT_FALSE(TimeToLoss(r, 1.0).has_value());
  EXPECT_DOUBLE_EQ(*TokensToLoss(r, 2.5), 1500);
  EXPECT_DOUBLE_EQ(*CommonTargetLoss({r}), 2.0);
}

TEST(BenchMetricsTest, NormalisingReplacesComputeByTheMedianSpeed) {
  // Two systems whose peers computed at different speeds (the cores are shared): the
  // normalised time keeps each one's non-compute time and charges the median compute speed.
  SystemResult fast = TwoRounds(), slow = TwoRounds();
  fast.tokens_per_step = slow.tokens_per_step = 100;  // 2000 tokens = 20 peer-steps, 10 per peer
  fast.peers[0].compute_seconds = fast.peers[1].compute_seconds = 2;  // 0.2 s per step
  Finish(fast);
  Finish(slow);  // (4 + 6) / 20 = 0.5 s per step
  std::vector<SystemResult> both = {fast, slow};
  EXPECT_DOUBLE_EQ(Normalise(both), 0.35);
  EXPECT_DOUBLE_EQ(both[0].normalised_train_seconds, 20 - 2 + 3.5);
  EXPECT_DOUBLE_EQ(both[1].normalised_train_seconds, 20 - 5 + 3.5);
}

TEST(BenchMetricsTest, FaultStallIsTheWaitBeyondAMedianRound) {
  SystemResult r = TwoRounds();
  RoundPoint c;
  c.round = 2, c.t_end = 45, c.wall_seconds = 25, c.tokens = 500, c.eval_loss = 1.8;
  r.rounds.push_back(c);
  Finish(r);
  const FaultOutcome f = AssessFault(r, 1, 22);
  EXPECT_TRUE(f.recovered);
  EXPECT_DOUBLE_EQ(*f.recovery_s, 23);  // 45 − 22
  EXPECT_DOUBLE_EQ(*f.stall_s, 15);     // due at 20 + 10 = 30, committed at 45
  const FaultOutcome never = AssessFault(r, 1, 50);
  EXPECT_FALSE(never.recovered);
}

// ------------------------------------------------------------------ end to end
std::string SkipReason() {
  if (Status st = wan::WanEmulator::CheckPrerequisites(); !st.ok()) {
    return "cannot create network namespaces here: " + st.message();
  }
  if (!fs::is_directory(std::string(TRIBUTARY_SOURCE_DIR) + "/data/moby-dick")) {
    return "the corpus is missing (scripts/fetch_corpus.sh)";
  }
  return "";
}

TEST(BenchEndToEndTest, TinyLanRunWritesJsonAndPlots) {
  if (const std::string why = SkipReason(); !why.empty()) GTEST_SKIP() << why;
  const fs::path dir = fs::temp_directory_path() / ("wanbench-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string scenario = (dir / "tiny.toml").string();
  ASSERT_TRUE(WriteFileAtomically(scenario,
                                  "name = \"tiny\"\n"
                                  "systems = [\"tributary-ddp\", \"tributary-diloco\", \"gloo-ddp\"]\n"
                                  "timeout_seconds = 50\n"
                                  "[network]\npeers = 2\npreset = \"lan\"\n"
                                  // Big enough that a round's compute shows in the peers' logs
                                  // (two decimals of a second), small enough to take seconds.
                                  "[job]\nn_layer = 1\nn_head = 2\nd_model = 64\ncontext = 64\n"
                                  "batch_size = 8\neval_batches = 2\nwarmup_steps = 1\n"
                                  "[budget]\nsteps = 4\nh = 2\nddp_steps_per_round = 2\n")
                  .ok());
  const std::string command = std::string(TRIBUTARY_BENCH_BINARY) + " " + scenario + " --out-dir " +
                              (dir / "out").string() + " --run-dir " + (dir / "run").string() +
                              " > " + (dir / "stdout.txt").string() + " 2> " + (dir / "stderr.txt").string();
  const auto start = std::chrono::steady_clock::now();
  const int rc = std::system(command.c_str());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string out = *ReadWholeFile((dir / "stdout.txt").string());
  const std::string err = *ReadWholeFile((dir / "stderr.txt").string());
  ASSERT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << "rc " << rc << "\n" << out << err;
  EXPECT_LT(seconds, 60);
  EXPECT_THAT(out, HasSubstr("| tributary-ddp | 2 | 2/2 |"));
  EXPECT_THAT(out, HasSubstr("| gloo-ddp | 2 | 2/2 |"));
  EXPECT_THAT(out, HasSubstr("tributary-diloco vs gloo-ddp"));

  auto json = nlohmann::json::parse(*ReadWholeFile((dir / "out" / "wan_tiny.json").string()));
  ASSERT_EQ(json["systems"].size(), 3u);
  for (const auto& system : json["systems"]) {
    SCOPED_TRACE(system["system"].get<std::string>());
    EXPECT_TRUE(system["ok"].get<bool>()) << system["error"];
    ASSERT_EQ(system["rounds"].size(), 2u);
    EXPECT_EQ(system["tokens"].get<uint64_t>(), 4u * 8 * 64 * 2);
    EXPECT_TRUE(system["rounds"][1]["eval_loss"].is_number());
    EXPECT_GT(system["wire_bytes_per_peer"].get<double>(), 0);
    EXPECT_GT(system["tokens_per_s"].get<double>(), 0);
    EXPECT_GT(system["compute_utilisation"].get<double>(), 0);
  }
  // Same model, data and steps: DDP over Gloo and over our ring train the same thing.
  EXPECT_NEAR(json["systems"][0]["final_eval_loss"].get<double>(),
              json["systems"][2]["final_eval_loss"].get<double>(), 1e-3);
  if (std::system("command -v gnuplot > /dev/null") == 0) {
    EXPECT_TRUE(fs::exists(dir / "out" / "wan_tiny_loss_wall.png"));
    EXPECT_GT(fs::file_size(dir / "out" / "wan_tiny_bytes_per_round.png"), 1000u);
  }
  // Nothing left behind: the run's namespaces are gone.
  const auto at = err.find("network tbench-");
  ASSERT_NE(at, std::string::npos) << err;
  const std::string run_id = err.substr(at + 8, err.find(' ', at + 8) - (at + 8));
  for (const auto& entry : fs::directory_iterator("/run/netns")) {
    EXPECT_THAT(entry.path().filename().string(), Not(HasSubstr(run_id + "-p")));
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tributary::wanbench
