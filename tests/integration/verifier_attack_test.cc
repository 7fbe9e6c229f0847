// The verifier end to end: a coordinator, two honest peers and one cheating peer
// (tributary_adversary, tests/adversary) as separate processes over loopback TCP. Every inner
// step is challenged (verify_samples = inner_steps), so a cheater is caught in its first round
// by the mechanism the attack calls for; the test then reads the coordinator's SQLite ledger
// and bans, and checks that no honest peer was ever accused.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "core/files.h"
#include "launcher/process.h"
#include "launcher/store.h"
#include "net/identity.h"
#include "tests/adversary/policy.h"
#include "tests/common/test_corpus.h"
#include "verifier/ledger.h"

namespace tributary {
namespace {

using namespace std::chrono_literals;
using launcher::ChildProcess;

int ExitCode(Result<int> code) { return code.ok() ? *code : -1; }

struct Attack {
  std::string name;
  std::vector<std::string> flags;  // extra adversary flags
  std::string expected;            // what the coordinator's log must say about the cheater
  bool before_commit = false;      // coordinator --verify-before-commit
  bool expected_in_ban = false;    // the cheater's ban reason (SQLite) says `expected` too
  std::string codec;               // the job's codec (empty: fp32)
};

class VerifiedJob {
 public:
  explicit VerifiedJob(const std::string& tag)
      : dir_(::tributary::testing::FreshTempDir(tag)), corpus_(::tributary::testing::MakeTempCorpus(tag + "-c")) {}
  ~VerifiedJob() {
    for (auto& p : processes_) {
      if (!p.Poll()) p.Signal(SIGKILL);
    }
    processes_.clear();
    std::filesystem::remove_all(dir_);
    std::filesystem::remove_all(corpus_);
  }

  std::string Key(const std::string& name) {
    const std::string path = dir_ + "/" + name + ".key";
    auto keygen = ChildProcess::Spawn({TRIBUTARY_BINARY, "keygen", "--out", path}, {}, dir_ + "/keygen.log");
    EXPECT_TRUE(keygen.ok());
    EXPECT_EQ(ExitCode(keygen->Wait(DeadlineAfter(30s))), 0);
    std::string hex = ReadFileOrEmpty(path + ".pub");
    while (!hex.empty() && (hex.back() == '\n' || hex.back() == ' ')) hex.pop_back();
    return hex;
  }

  // Every inner step is challenged (verify_samples = inner_steps).
  struct Options {
    int rounds = 3;
    bool before_commit = false;
    int peers = 3;
    int min_peers = 2;
    int inner_steps = 4;
    int verifiers_per_step = 1;
    int gather_ms = 5000;
    std::string mode = "diloco";
    int group_size = 0;  // > 0: a grouped job (docs/GROUPS.md)
    std::string codec;   // empty: the default (fp32)
    std::vector<std::string> calibrations;  // tolerance calibration files (Calibrate)
    int n_layer = 1, d_model = 32;
    // Openings at least this large go peer to peer (0: the job's default, 1 MiB, which these
    // small models' openings never reach, so they go through the coordinator).
    int64_t opening_bulk_min_bytes = 0;
  };
  void Start(int rounds, bool before_commit = false) { Start(Options{.rounds = rounds, .before_commit = before_commit}); }
  void Start(const Options& o) {
    std::vector<std::string> argv = {TRIBUTARY_BINARY, "coordinator", "--data", corpus_, "--port-file", dir_ + "/port", "--db", db(),
         "--mode", o.mode, "--peers", std::to_string(o.peers), "--min-peers", std::to_string(o.min_peers),
         "--gather-ms", std::to_string(o.gather_ms), "--rounds", std::to_string(o.rounds),
         "--inner-steps", std::to_string(o.inner_steps), "--verify-samples", std::to_string(o.inner_steps),
         "--verifiers-per-step", std::to_string(o.verifiers_per_step),
         "--round-timeout-ms", "20000", "--n-layer", std::to_string(o.n_layer), "--n-head", "2",
         "--d-model", std::to_string(o.d_model), "--context", "32",
         "--batch-size", "8", "--inner-lr", "0.01"};
    if (o.before_commit) argv.push_back("--verify-before-commit");
    if (o.opening_bulk_min_bytes > 0) {
      argv.insert(argv.end(), {"--opening-bulk-min-bytes", std::to_string(o.opening_bulk_min_bytes)});
    }
    if (o.group_size > 0) argv.insert(argv.end(), {"--group-size", std::to_string(o.group_size)});
    if (!o.codec.empty()) argv.insert(argv.end(), {"--codec", o.codec});
    for (const std::string& c : o.calibrations) argv.insert(argv.end(), {"--calibration", c});
    auto child = ChildProcess::Spawn(argv, {}, log("coordinator"));
    ASSERT_TRUE(child.ok());
    processes_.push_back(std::move(child).value());
    const auto deadline = DeadlineAfter(60s);
    while (!FileExists(dir_ + "/port")) {
      ASSERT_LT(Clock::now(), deadline) << ReadFileOrEmpty(log("coordinator"));
      std::this_thread::sleep_for(20ms);
    }
    std::this_thread::sleep_for(50ms);
    std::istringstream in(ReadFileOrEmpty(dir_ + "/port"));
    in >> port_ >> job_ >> coordinator_key_;
  }

  // `tributary calibrate` for this job's model: PROVER and VERIFIER are DEVICE[:THREADS].
  std::string Calibrate(const std::string& prover, const std::string& verifier) {
    const std::string out = dir_ + "/" + prover + "-on-" + verifier + ".calibration";
    auto child = ChildProcess::Spawn({TRIBUTARY_BINARY, "calibrate", "--data", corpus_, "--prover", prover, "--verifier",
                                      verifier, "--steps", "24", "--out", out, "--inner-steps", "4", "--n-layer", "1",
                                      "--n-head", "2", "--d-model", "32", "--context", "32", "--batch-size", "8",
                                      "--inner-lr", "0.01"},
                                     {{"OPENBLAS_NUM_THREADS", "1"}}, log("calibrate"));
    EXPECT_TRUE(child.ok());
    EXPECT_EQ(ExitCode(child->Wait(DeadlineAfter(120s))), 0) << ReadFileOrEmpty(log("calibrate"));
    return out;
  }

  void Peer(const std::string& name, const std::string& binary, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {binary};
    if (binary == TRIBUTARY_BINARY) argv.push_back("peer");
    argv.insert(argv.end(), {"--name", name});
    argv.insert(argv.end(), {"--coordinator", "127.0.0.1:" + std::to_string(port_), "--job", job_, "--data", corpus_,
                             "--coordinator-key", coordinator_key_, "--identity", dir_ + "/" + name + ".key"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto child = ChildProcess::Spawn(argv, {{"OPENBLAS_NUM_THREADS", "1"}}, log(name + suffix_[name]));
    ASSERT_TRUE(child.ok());
    index_[name] = processes_.size();
    processes_.push_back(std::move(child).value());
  }

  // SIGKILLs the peer `name` started last; a later Peer(name) logs to a new file.
  void Kill(const std::string& name) {
    ChildProcess& p = processes_.at(index_.at(name));
    p.Signal(SIGKILL);
    (void)p.Wait(DeadlineAfter(30s));
    suffix_[name] += "+";
  }

  // Waits until the coordinator's log contains `text`.
  bool AwaitCoordinatorLog(const std::string& text, std::chrono::seconds timeout) {
    const auto deadline = DeadlineAfter(timeout);
    while (ReadFileOrEmpty(log("coordinator")).find(text) == std::string::npos) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(100ms);
    }
    return true;
  }

  int WaitCoordinator(std::chrono::seconds timeout) {
    auto code = processes_.front().Wait(DeadlineAfter(timeout));
    return code.ok() ? *code : -1;
  }

  std::string log(const std::string& name) const { return dir_ + "/" + name + ".log"; }
  std::string db() const { return dir_ + "/coordinator.db"; }
  const std::string& job() const { return job_; }
  int port() const { return port_; }
  const std::string& coordinator_key() const { return coordinator_key_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, corpus_;
  std::vector<ChildProcess> processes_;
  std::map<std::string, size_t> index_;       // a peer's name → its latest process
  std::map<std::string, std::string> suffix_;  // a peer's name → its log's suffix ("+" a restart)
  int port_ = 0;
  std::string job_, coordinator_key_;
};

struct Outcome {
  verifier::Ledger ledger;
  std::map<std::string, std::string> banned;  // hex key → reason
};

Outcome ReadLedger(const VerifiedJob& job) {
  Outcome out;
  auto store = launcher::CoordinatorStore::Open(job.db());
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  auto bytes = (*store)->LoadLedger(job.job());
  EXPECT_TRUE(bytes.ok());
  auto ledger = verifier::Ledger::Decode(*bytes);  // re-verifies every stored commitment
  EXPECT_TRUE(ledger.ok()) << ledger.status().ToString();
  if (ledger.ok()) out.ledger = std::move(ledger).value();
  auto bans = (*store)->BannedPeers(job.job());
  EXPECT_TRUE(bans.ok());
  for (auto& [k, why] : *bans) out.banned[k] = why;
  return out;
}

// No honest peer is ever rejected, accused falsely or banned, and each has verified work.
void ExpectHonest(const Outcome& o, const std::string& hex) {
  auto key = net::KeyFromHex(hex);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(o.banned.count(hex), 0u) << "honest peer banned: " << o.banned.at(hex);
  uint64_t verified = 0;
  for (const auto& rec : o.ledger.Records()) {
    if (rec.peer != *key) continue;
    EXPECT_NE(rec.verdict(), verifier::RoundVerdict::kRejected) << "round " << rec.round;
    EXPECT_EQ(rec.false_accusations, 0u) << "round " << rec.round;
    EXPECT_EQ(rec.steps_failed(), 0u);
    verified += rec.steps_verified();
  }
  EXPECT_GT(verified, 0u);
}

// How a Δ audit convicts (launcher/verification_service.cc logs the referee's reason).
constexpr const char* kDeltaAudit = "Δ audit: θ_start − θ_end of the committed steps is not the Δ it committed and sent";
// How a shard owner's proof of a signed NaN/Inf/garbage payload bans its sender.
constexpr const char* kBadPayload = "a non-finite/undecodable contribution, proven by its signed payload";

// How the coordinator refuses a manifest whose residual does not continue the sender's last one,
// and how a Δ audit convicts payloads that are not the encoding of Δ plus the opened residual.
constexpr const char* kResidualChain = "its error-feedback residual is not the one its last committed contribution left";
constexpr const char* kResidualAudit = "is not the codec's encoding of Δ plus the opened residual";
// How the coordinator's aggregate audit convicts a shard owner that returned another aggregate
// than its signed contributions give.
constexpr const char* kAggregateAudit = "is not what the contributions it received and its residual give";

// How the coordinator refuses a report whose steps start from AdamW moments the peer chose.
constexpr const char* kForgedMoments = "neither fresh nor the one its last committed round ended with";
constexpr const char* kForgedStart = "do not start from the θ its round starts from";

class AttackTest : public ::testing::TestWithParam<Attack> {};

TEST_P(AttackTest, CheaterIsCaughtAndHonestPeersAreNot) {
  const Attack& attack = GetParam();
  VerifiedJob job("verify-" + attack.name);
  const std::string a = job.Key("alice"), b = job.Key("bob"), m = job.Key("mallory");
  // Every opening's bulk goes peer to peer (the path of models over ~90 k parameters).
  job.Start({.rounds = 3, .before_commit = attack.before_commit, .codec = attack.codec, .opening_bulk_min_bytes = 1});
  job.Peer("alice", TRIBUTARY_BINARY);
  job.Peer("bob", TRIBUTARY_BINARY);
  std::vector<std::string> flags = {"--attack", attack.name};
  flags.insert(flags.end(), attack.flags.begin(), attack.flags.end());
  job.Peer("mallory", TRIBUTARY_ADVERSARY, flags);
  const int code = job.WaitCoordinator(240s);
  const std::string log = ReadFileOrEmpty(job.log("coordinator"));
  ASSERT_EQ(code, 0) << log << ReadFileOrEmpty(job.log("mallory"));
  EXPECT_NE(log.find(attack.expected), std::string::npos) << "expected '" << attack.expected << "' in\n" << log;
  const Outcome o = ReadLedger(job);
  ASSERT_EQ(o.banned.count(m), 1u) << log;
  if (attack.expected_in_ban) EXPECT_NE(o.banned.at(m).find(attack.expected), std::string::npos) << o.banned.at(m);
  ExpectHonest(o, a);
  ExpectHonest(o, b);
  // A prover caught faking steps has a rejected round with failed steps in the ledger.
  if (attack.expected == "convicted" || attack.expected == kDeltaAudit || attack.expected == kResidualAudit) {
    bool rejected = false;
    for (const auto& rec : o.ledger.Records()) {
      if (net::KeyToHex(rec.peer) == m && rec.verdict() == verifier::RoundVerdict::kRejected) rejected = true;
    }
    EXPECT_TRUE(rejected) << log;
  }
  // Challenged before the commit: the cheater is dropped from round 0, which commits without it.
  // A lying owner's aggregate is audited before every commit, whatever the mode, and so are
  // the ends of a report's steps (forged moments, a forged θ_0).
  if (attack.before_commit || attack.name == "owner_scale" || attack.name == "forged_moments" ||
      attack.name == "forged_start") {
    EXPECT_NE(log.find("round 0 complete: 2 peers"), std::string::npos) << log;
    EXPECT_EQ(log.find("round 0 complete: 3 peers"), std::string::npos) << log;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Attacks, AttackTest,
    ::testing::Values(Attack{"zero", {}, "convicted"}, Attack{"random", {}, "convicted"},
                      Attack{"skip", {}, "convicted"}, Attack{"partial", {"--rate", "0.5", "--seed", "3"}, "convicted"},
                      Attack{"shard", {}, "convicted"}, Attack{"sign_flip", {}, "convicted"},
                      Attack{"scale", {"--scale", "1000"}, "convicted"}, Attack{"subnormal", {}, "convicted"},
                      Attack{"withhold", {}, "withheld the opening"}, Attack{"equivocate", {}, "equivocated"},
                      // Announces each opening with its bulk detached, then serves the bulk
                      // neither to its verifiers nor through the coordinator.
                      Attack{"withhold_bulk", {}, "neither directly nor through the coordinator"},
                      Attack{"commit_late", {}, "without a step commitment"},
                      // Honest steps from moments it chose: every replay matches, step 0's
                      // included; the report's chain ends show where the moments came from.
                      Attack{"forged_moments", {}, kForgedMoments, false, true},
                      // Round 0 from a θ of its choosing: the θ_0 the job's spec publishes.
                      Attack{"forged_start", {}, kForgedStart, false, true},
                      Attack{"accuse", {}, "false accusation"},
                      Attack{"random", {}, "convicted", /*before_commit=*/true},
                      // Honest steps, another Δ sent: the Δ audit (θ_start − θ_end ≠ the sent Δ).
                      Attack{"stale", {}, kDeltaAudit}, Attack{"copy", {}, kDeltaAudit},
                      Attack{"send_scaled", {"--scale", "1000"}, kDeltaAudit},
                      Attack{"alie", {}, kDeltaAudit}, Attack{"ipm", {}, kDeltaAudit},
                      // A manifest that states other payloads: the shard owner's proof.
                      Attack{"manifest_lie", {}, "contradicts its signed manifest"},
                      // Honest steps and manifest, but the signed payloads carry NaN / +Inf / are
                      // one byte short: the shard owner's proof of the signed bytes.
                      Attack{"send_nan", {}, kBadPayload, false, true},
                      Attack{"send_inf", {}, kBadPayload, false, true},
                      Attack{"send_garbage", {}, kBadPayload, false, true},
                      // An int8 job (error feedback): Δ sent with a made-up residual. Stated in
                      // its manifest, the coordinator's residual chain refuses it; hidden behind
                      // the honest residual's digest, the Δ audit's re-encoding convicts it. The
                      // honest peers' retry without it rolls their own residual back.
                      Attack{"send_residual", {}, kResidualChain, false, true, "int8"},
                      Attack{"residual_lie", {}, kResidualAudit, false, false, "int8"},
                      // Honest steps, Δ and contributions; as a shard owner it returns its
                      // shard's aggregate × 1000 under an honest-looking statement: the
                      // coordinator's aggregate audit recomputes it from the opened
                      // contributions (fp32, and int8 with the owner's own residual).
                      Attack{"owner_scale", {"--scale", "1000"}, kAggregateAudit, false, true},
                      Attack{"owner_scale", {"--scale", "1000"}, kAggregateAudit, false, true, "int8"}),
    [](const auto& info) {
      return info.param.name + (info.param.before_commit ? "_before_commit" : "") +
             (info.param.codec.empty() ? "" : "_" + info.param.codec);
    });

// Partial cheating at f = 1 %, 5 % and 10 % over real trainer steps. Every step is challenged here
// (detection against the sampling rate is the detection benchmark's subject), so the question is
// whether one faked step among honest ones is caught: the seed is chosen so that the cheater fakes
// at least one step in the first two rounds.
class PartialCheatingTest : public ::testing::TestWithParam<double> {};

TEST_P(PartialCheatingTest, OneFakedStepAmongHonestOnesIsCaught) {
  const double rate = GetParam();
  constexpr uint64_t kInnerSteps = 4;
  uint64_t seed = 1, first_round = 0, first_step = 0;
  for (bool found = false; !found; ++seed) {
    for (uint64_t t = 0; t < 2 * kInnerSteps && !found; ++t) {
      found = adversary::Faked(seed, rate, t / kInnerSteps, t % kInnerSteps);
      first_round = t / kInnerSteps;
      first_step = t % kInnerSteps;
    }
    if (found) break;
  }
  VerifiedJob job("verify-partial-" + std::to_string(static_cast<int>(rate * 100)));
  const std::string a = job.Key("alice"), b = job.Key("bob"), m = job.Key("mallory");
  job.Start(3);
  job.Peer("alice", TRIBUTARY_BINARY);
  job.Peer("bob", TRIBUTARY_BINARY);
  job.Peer("mallory", TRIBUTARY_ADVERSARY,
           {"--attack", "partial", "--rate", std::to_string(rate), "--seed", std::to_string(seed)});
  ASSERT_EQ(job.WaitCoordinator(240s), 0) << ReadFileOrEmpty(job.log("coordinator"));
  const std::string log = ReadFileOrEmpty(job.log("coordinator"));
  const std::string caught = "round " + std::to_string(first_round) + " step " + std::to_string(first_step);
  EXPECT_NE(log.find(caught + ": prover"), std::string::npos) << "expected a conviction at " << caught << "\n" << log;
  const Outcome o = ReadLedger(job);
  ASSERT_EQ(o.banned.count(m), 1u) << log;
  ExpectHonest(o, a);
  ExpectHonest(o, b);
}

INSTANTIATE_TEST_SUITE_P(Rates, PartialCheatingTest, ::testing::Values(0.01, 0.05, 0.10),
                         [](const auto& info) { return "f" + std::to_string(static_cast<int>(info.param * 100)); });

// DDP: every step's gradient is committed and replayed from the state the group shared (the
// verifier's own), not from a chain of local steps. A peer that contributes a zero gradient
// instead of computing its steps is convicted; the honest peers' replays all match.
TEST(VerifierDdp, ACheaterInADdpJobIsCaughtAndHonestPeersAreNot) {
  VerifiedJob job("verify-ddp");
  const std::string a = job.Key("alice"), b = job.Key("bob"), m = job.Key("mallory");
  job.Start({.rounds = 3, .mode = "ddp"});
  job.Peer("alice", TRIBUTARY_BINARY);
  job.Peer("bob", TRIBUTARY_BINARY);
  job.Peer("mallory", TRIBUTARY_ADVERSARY, {"--attack", "zero"});
  ASSERT_EQ(job.WaitCoordinator(240s), 0) << ReadFileOrEmpty(job.log("coordinator"));
  const std::string log = ReadFileOrEmpty(job.log("coordinator"));
  EXPECT_NE(log.find("convicted"), std::string::npos) << log;
  const Outcome o = ReadLedger(job);
  ASSERT_EQ(o.banned.count(m), 1u) << log;
  ExpectHonest(o, a);
  ExpectHonest(o, b);
}

// A cheater and a colluding verifier among six peers: the colluder vouches for every step it is
// asked about. Two verifiers per step and a referee majority mean its word never decides: the
// cheater is convicted, and the colluder is banned for vouching for a convicted step or for
// ruling against the majority of referees. With 8 challenged steps, the chance that the colluder
// takes part in none of the cheater's disputes is (1/5)^8 ≈ 3·10⁻⁶.
TEST(VerifierCollusion, AColludingVerifierCannotSaveACheater) {
  VerifiedJob job("verify-collude");
  std::vector<std::string> honest;
  for (const char* name : {"alice", "bob", "carol", "dave"}) honest.push_back(job.Key(name));
  const std::string m = job.Key("mallory"), t = job.Key("trudy");
  job.Start({.rounds = 2, .peers = 6, .inner_steps = 8, .verifiers_per_step = 2, .gather_ms = 60000});
  for (const char* name : {"alice", "bob", "carol", "dave"}) job.Peer(name, TRIBUTARY_BINARY);
  job.Peer("mallory", TRIBUTARY_ADVERSARY, {"--attack", "random"});
  job.Peer("trudy", TRIBUTARY_ADVERSARY, {"--attack", "collude"});
  ASSERT_EQ(job.WaitCoordinator(300s), 0) << ReadFileOrEmpty(job.log("coordinator"));
  const std::string log = ReadFileOrEmpty(job.log("coordinator"));
  const Outcome o = ReadLedger(job);
  ASSERT_EQ(o.banned.count(m), 1u) << log;
  ASSERT_EQ(o.banned.count(t), 1u) << log;
  const std::string& why = o.banned.at(t);
  EXPECT_TRUE(why.find("vouched for") != std::string::npos || why.find("against the majority") != std::string::npos)
      << why;
  for (const std::string& h : honest) ExpectHonest(o, h);
}

// A peer that claims a determinism class nobody shares cannot be replayed bitwise by anyone: its
// challenges come back VERIFY_CANNOT_REPLAY, so it earns no verified credit (and is not banned:
// an honest peer on unusual hardware looks the same). Honest peers are unaffected.
TEST(VerifierClassLie, ALiarAboutItsClassEarnsNoVerifiedWork) {
  VerifiedJob job("verify-class-lie");
  const std::string a = job.Key("alice"), b = job.Key("bob"), m = job.Key("mallory");
  job.Start(3);
  job.Peer("alice", TRIBUTARY_BINARY);
  job.Peer("bob", TRIBUTARY_BINARY);
  job.Peer("mallory", TRIBUTARY_ADVERSARY, {"--attack", "class_lie"});
  ASSERT_EQ(job.WaitCoordinator(240s), 0) << ReadFileOrEmpty(job.log("coordinator"));
  const Outcome o = ReadLedger(job);
  EXPECT_EQ(o.banned.count(m), 0u);
  ExpectHonest(o, a);
  ExpectHonest(o, b);
  auto key = net::KeyFromHex(m);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(o.ledger.VerifiedSteps(*key), 0u);
}

// Openings travel peer to peer: verifiers fetch each opening's bulk from the prover's state
// server. A prover nobody can fetch from (a firewalled state server) is not a cheater: its
// verifiers say so, the coordinator asks it for the whole opening, and its work is verified.
TEST(VerifierOpeningsPeerToPeer, AProverWhoseBulkCannotBeFetchedSendsItThroughTheCoordinator) {
  VerifiedJob job("verify-unserved-bulk");
  const std::string a = job.Key("alice"), b = job.Key("bob"), m = job.Key("mallory");
  job.Start({.rounds = 3, .opening_bulk_min_bytes = 1});
  job.Peer("alice", TRIBUTARY_BINARY);
  job.Peer("bob", TRIBUTARY_BINARY);
  job.Peer("mallory", TRIBUTARY_ADVERSARY, {"--attack", "unserved_bulk"});
  ASSERT_EQ(job.WaitCoordinator(240s), 0) << ReadFileOrEmpty(job.log("coordinator"));
  const std::string log = ReadFileOrEmpty(job.log("coordinator"));
  EXPECT_NE(log.find("asking for it through the coordinator"), std::string::npos) << log;
  const Outcome o = ReadLedger(job);
  ExpectHonest(o, a);
  ExpectHonest(o, b);
  ExpectHonest(o, m);
  // The honest peers' openings went peer to peer.
  for (const char* name : {"alice", "bob"}) {
    const std::string peer = ReadFileOrEmpty(job.log(name));
    EXPECT_NE(peer.find("fetched the opening of round"), std::string::npos) << peer;
  }
}

// Peers of two determinism classes (torch on two threads, and on one: another reduction order,
// so their replays of each other are never bit-identical). The job publishes the calibrations
// `tributary calibrate` fitted for both directions; every step of every round is challenged.
// Honest steps of one class verified by the other are judged within the limits and never
// accused; the other class's verified work is in the ledger like anyone's.
TEST(VerifierAcrossClasses, HonestPeersOfTwoClassesVerifyEachOtherWithinTheCalibratedTolerance) {
  VerifiedJob job("verify-across-classes");
  const std::string a = job.Key("alice"), b = job.Key("bob"), c = job.Key("carol");
  const std::string one_on_two = job.Calibrate("cpu:1", "cpu:2"), two_on_one = job.Calibrate("cpu:2", "cpu:1");
  job.Start({.rounds = 3, .verifiers_per_step = 2, .calibrations = {one_on_two, two_on_one}});
  job.Peer("alice", TRIBUTARY_BINARY, {"--threads", "2"});
  job.Peer("bob", TRIBUTARY_BINARY, {"--threads", "2"});
  job.Peer("carol", TRIBUTARY_BINARY, {"--threads", "1"});
  ASSERT_EQ(job.WaitCoordinator(240s), 0) << ReadFileOrEmpty(job.log("coordinator"));
  const Outcome o = ReadLedger(job);
  EXPECT_TRUE(o.banned.empty()) << o.banned.begin()->second;
  ExpectHonest(o, a);
  ExpectHonest(o, b);
  ExpectHonest(o, c);
  // Two verifiers per step and three members: every step is replayed across the classes too.
  const std::string judged = "not bit-identical across classes; judged against the calibrated limit";
  for (const std::string& name : {"alice", "bob", "carol"}) {
    const std::string log = ReadFileOrEmpty(job.log(name));
    EXPECT_NE(log.find(judged), std::string::npos) << name << " never judged across classes:\n" << log;
    EXPECT_EQ(log.find(": outside"), std::string::npos) << name << ":\n" << log;
    EXPECT_EQ(log.find("VERIFY_MISMATCH"), std::string::npos) << name << ":\n" << log;
    EXPECT_EQ(log.find("VERIFY_CANNOT_REPLAY"), std::string::npos) << name << ":\n" << log;
  }
}

// A cheater whose only verifiers are of another class, lengthening every update by 1 %: far
// inside what a loose guess would allow, far outside the calibrated limits. Convicted and banned;
// its honest verifiers are never accused.
TEST(VerifierAcrossClasses, ACheaterVerifiedOnlyAcrossClassesIsCaught) {
  VerifiedJob job("verify-across-classes-cheat");
  const std::string a = job.Key("alice"), b = job.Key("bob"), m = job.Key("mallory");
  job.Start({.rounds = 3, .calibrations = {job.Calibrate("cpu:1", "cpu:2")}});
  job.Peer("alice", TRIBUTARY_BINARY, {"--threads", "2"});
  job.Peer("bob", TRIBUTARY_BINARY, {"--threads", "2"});
  job.Peer("mallory", TRIBUTARY_ADVERSARY, {"--attack", "scale", "--scale", "1.01"});  // one thread
  ASSERT_EQ(job.WaitCoordinator(240s), 0) << ReadFileOrEmpty(job.log("coordinator"));
  const std::string log = ReadFileOrEmpty(job.log("coordinator"));
  EXPECT_NE(log.find("convicted"), std::string::npos) << log;
  const Outcome o = ReadLedger(job);
  ASSERT_EQ(o.banned.count(m), 1u) << log;
  EXPECT_NE(o.banned.at(m).find("calibrated limit"), std::string::npos) << o.banned.at(m);
  ExpectHonest(o, a);
  ExpectHonest(o, b);
}

// A model whose openings do not fit one frame: 4 layers of width 256 are ≈ 3.2 M parameters, so
// an opened state (θ and both moments, 12 bytes a parameter) is ≈ 38 MB against the 16 MiB
// frame. Every step is challenged and every member's Δ audited, and no honest peer is accused of
// withholding what did not fit, on either path an opening can take: by default its verifiers
// fetch its states from the prover (verifier/opening_bulk.h); forced through the coordinator,
// the opening and the VerifyRequests travel as fragments (net/fragment.h).
class VerifierLargeModel : public ::testing::TestWithParam<bool> {};

TEST_P(VerifierLargeModel, OpeningsLargerThanAFrameReachTheirVerifiers) {
  const bool through_coordinator = GetParam();
  VerifiedJob job(through_coordinator ? "verify-large-model-fragments" : "verify-large-model-p2p");
  const std::string a = job.Key("alice"), b = job.Key("bob"), c = job.Key("carol");
  job.Start({.rounds = 2, .inner_steps = 2, .n_layer = 4, .d_model = 256,
             .opening_bulk_min_bytes = through_coordinator ? int64_t{1} << 40 : 0});
  for (const std::string& name : {"alice", "bob", "carol"}) job.Peer(name, TRIBUTARY_BINARY);
  ASSERT_EQ(job.WaitCoordinator(240s), 0) << ReadFileOrEmpty(job.log("coordinator"));
  const std::string log = ReadFileOrEmpty(job.log("coordinator"));
  EXPECT_EQ(log.find("withheld"), std::string::npos) << log;
  const Outcome o = ReadLedger(job);
  EXPECT_TRUE(o.banned.empty()) << o.banned.begin()->second;
  ExpectHonest(o, a);
  ExpectHonest(o, b);
  ExpectHonest(o, c);
  for (const std::string& name : {"alice", "bob", "carol"}) {
    const std::string peer = ReadFileOrEmpty(job.log(name));
    EXPECT_EQ(peer.find("fetched the opening of round") != std::string::npos, !through_coordinator) << peer;
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, VerifierLargeModel, ::testing::Bool(), [](const auto& info) {
  return info.param ? std::string("AsFragmentsThroughTheCoordinator") : std::string("PeerToPeer");
});

// Groups of two re-mixed every round: members start each round from their own group's state, so
// every replay of step 0 is checked against the prover's own round-start θ. Every step of every
// round is challenged: honest peers in every group verify cleanly, and the cheater is caught.
TEST(VerifierGroups, GroupedJobVerifiesEachGroupsStateAndCatchesACheater) {
  VerifiedJob job("verify-groups");
  const std::string a = job.Key("alice"), b = job.Key("bob"), c = job.Key("carol"), m = job.Key("mallory");
  job.Start({.rounds = 4, .peers = 4, .min_peers = 3, .group_size = 2});
  for (const char* name : {"alice", "bob", "carol"}) job.Peer(name, TRIBUTARY_BINARY);
  job.Peer("mallory", TRIBUTARY_ADVERSARY, {"--attack", "random"});
  const int code = job.WaitCoordinator(300s);
  const std::string log = ReadFileOrEmpty(job.log("coordinator"));
  ASSERT_EQ(code, 0) << log;
  EXPECT_NE(log.find("groups of 4 ready peers"), std::string::npos) << "round 0 must be grouped:\n" << log;
  EXPECT_NE(log.find("convicted"), std::string::npos) << log;
  const Outcome o = ReadLedger(job);
  ASSERT_EQ(o.banned.count(m), 1u) << log;
  EXPECT_EQ(o.banned.size(), 1u) << log;
  for (const std::string& k : {a, b, c}) ExpectHonest(o, k);
  // Honest work verified after a mix round: round 1 started from two different group states.
  uint64_t verified_later = 0;
  for (const auto& rec : o.ledger.Records()) {
    if (rec.round >= 1 && net::KeyToHex(rec.peer) != m) verified_later += rec.steps_verified();
  }
  EXPECT_GT(verified_later, 0u) << log;
}

// Three honest peers: every challenged step verifies; `tributary ledger` prints the ledger and
// exports receipts that `tributary verify-receipt` accepts with the coordinator's key alone and
// refuses once a byte changes.
// An honest peer killed mid-job comes back as a new process: it downloads the job's state, and
// its optimiser starts afresh with it, which the chain ends of its next reports show. It is
// neither refused nor accused, and its rounds after the rejoin are verified. With verification
// after the commit (the default) the new process is asked to open the round its predecessor
// committed and says it no longer holds it (Opening.not_held): forgiven, not credited. With
// verification before each commit no committed round is left unopened.
class VerifierRejoin : public ::testing::TestWithParam<bool> {};

TEST_P(VerifierRejoin, AnHonestPeerKilledMidJobRejoinsUnaccused) {
  const bool before_commit = GetParam();
  VerifiedJob job(before_commit ? "verify-rejoin-before" : "verify-rejoin");
  const std::string a = job.Key("alice"), b = job.Key("bob"), c = job.Key("carol");
  job.Start({.rounds = 6, .before_commit = before_commit});
  for (const char* name : {"alice", "bob", "carol"}) job.Peer(name, TRIBUTARY_BINARY);
  ASSERT_TRUE(job.AwaitCoordinatorLog("round 1 complete", 180s)) << ReadFileOrEmpty(job.log("coordinator"));
  job.Kill("carol");
  job.Peer("carol", TRIBUTARY_BINARY);
  const int code = job.WaitCoordinator(300s);
  const std::string log = ReadFileOrEmpty(job.log("coordinator"));
  ASSERT_EQ(code, 0) << log << ReadFileOrEmpty(job.log("carol+"));
  const Outcome o = ReadLedger(job);
  for (const std::string& hex : {a, b, c}) ExpectHonest(o, hex);
  auto carol = net::KeyFromHex(c);
  ASSERT_TRUE(carol.ok());
  uint64_t last_round = 0;
  for (const auto& rec : o.ledger.Records()) {
    if (rec.peer == *carol && rec.steps_verified() > 0) last_round = std::max(last_round, rec.round);
  }
  EXPECT_GE(last_round, 3u) << "carol's work after the rejoin is verified\n" << log;
  EXPECT_NE(ReadFileOrEmpty(job.log("carol+")).find("synced round"), std::string::npos) << "it downloaded the state";
  // Whether the kill left a committed round unopened depends on timing: say which case ran.
  std::cout << (log.find("no longer holds the round") != std::string::npos ? "a lost round was forgiven\n"
                                                                            : "no committed round was left unopened\n");
}

INSTANTIATE_TEST_SUITE_P(Verification, VerifierRejoin, ::testing::Bool(), [](const auto& info) {
  return info.param ? std::string("BeforeCommit") : std::string("AfterCommit");
});

TEST(VerifierLedger, HonestJobVerifiesAndReceiptsCheckOffline) {
  VerifiedJob job("verify-ledger");
  const std::string a = job.Key("alice"), b = job.Key("bob"), c = job.Key("carol");
  job.Start(20);  // long enough for a few `tributary ledger` processes to run while it trains
  for (const char* name : {"alice", "bob", "carol"}) job.Peer(name, TRIBUTARY_BINARY);
  // While the job runs: poll the ledger until a round is verified, then export.
  const std::string out = job.dir() + "/ledger.txt", receipts = job.dir() + "/receipts";
  bool verified = false;
  const auto deadline = DeadlineAfter(180s);
  while (!verified && Clock::now() < deadline) {
    std::this_thread::sleep_for(500ms);
    auto ledger = ChildProcess::Spawn({TRIBUTARY_BINARY, "ledger", "--coordinator",
                                       "127.0.0.1:" + std::to_string(job.port()), "--coordinator-key",
                                       job.coordinator_key(), "--export-receipts", receipts},
                                      {}, out);
    ASSERT_TRUE(ledger.ok());
    if (ExitCode(ledger->Wait(DeadlineAfter(30s))) != 0) continue;
    verified = ReadFileOrEmpty(out).find("| verified |\n") != std::string::npos;  // a row's verdict column
  }
  ASSERT_TRUE(verified) << ReadFileOrEmpty(out) << ReadFileOrEmpty(job.log("coordinator"));
  // The peers' logs too: a clean-clone CI run once saw this coordinator not exit after "finished".
  ASSERT_EQ(job.WaitCoordinator(240s), 0) << ReadFileOrEmpty(job.log("coordinator")) << ReadFileOrEmpty(job.log("alice"))
                                          << ReadFileOrEmpty(job.log("bob")) << ReadFileOrEmpty(job.log("carol"));
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(receipts)) {
    if (entry.path().extension() == ".receipt") paths.push_back(entry.path().string());
  }
  std::sort(paths.begin(), paths.end());
  if (paths.size() > 3) paths.resize(3);  // each check is a process start (seconds under load)
  int checked = 0;
  for (const std::string& path : paths) {
    auto ok = ChildProcess::Spawn({TRIBUTARY_BINARY, "verify-receipt", path, "--coordinator-key", job.coordinator_key()},
                                  {}, job.dir() + "/verify.log");
    EXPECT_EQ(ExitCode(ok->Wait(DeadlineAfter(30s))), 0) << ReadFileOrEmpty(job.dir() + "/verify.log");
    // Tampered: one byte of the verdict area changes.
    std::string bytes = ReadFileOrEmpty(path);
    bytes[bytes.size() / 2] ^= 0x01;
    const std::string bad = path + ".tampered";
    ASSERT_TRUE(WriteFileAtomically(bad, bytes).ok());
    auto refused = ChildProcess::Spawn({TRIBUTARY_BINARY, "verify-receipt", bad, "--coordinator-key", job.coordinator_key()},
                                       {}, job.dir() + "/verify.log");
    EXPECT_NE(ExitCode(refused->Wait(DeadlineAfter(30s))), 0);
    // Another key (an impostor coordinator) is refused too.
    auto other = ChildProcess::Spawn({TRIBUTARY_BINARY, "verify-receipt", path, "--coordinator-key", a},
                                     {}, job.dir() + "/verify.log");
    EXPECT_NE(ExitCode(other->Wait(DeadlineAfter(30s))), 0);
    ++checked;
  }
  EXPECT_GT(checked, 0);
  const Outcome o = ReadLedger(job);
  EXPECT_TRUE(o.banned.empty());
  for (const std::string& k : {a, b, c}) ExpectHonest(o, k);
}

}  // namespace
}  // namespace tributary
