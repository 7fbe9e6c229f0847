// tributary_bench_verifier: how well sampled replay catches a faking prover, and what it costs.
//
// Part 1 (detection): a prover commits N step leaves of which it faked `bad` = f·N, chosen at
// random; the coordinator's secret (commit-reveal) and every peer's root give the challenge seed;
// q steps are sampled per peer and each sampled leaf is opened against the signed root and
// compared with an honest recomputation. The empirical detection rate over many trials is set
// against the exact hypergeometric value 1 − C(N − fN, q)/C(N, q) and the bound 1 − (1 − f)^q.
// Every trial runs the real protocol code (Merkle tree, Ed25519 commitment, seed, sampling,
// opening checks); only the replay itself is a table lookup here (its cost is part 2).
//
// Part 2 (cost): one training step of the default char-GPT job through runtime::Trainer, against
// one verifier replay of a sampled step (digest of the opened state, the step, digest of the
// result) and the prover's per-step commitment work, on this machine with one pinned thread.
// Each step is timed right next to its replay and the ratios are taken per step, so load from
// other processes on a shared machine cancels out of the reported fractions.
#include <fcntl.h>
#include <fmt/format.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "benchmarks/common/bench_stats.h"
#include "collectives/butterfly.h"
#include "core/clock.h"
#include "core/files.h"
#include "core/seed.h"
#include "core/sodium_init.h"
#include "models/corpus.h"
#include "runtime/job_spec.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"
#include "verifier/challenge.h"
#include "verifier/commitment.h"
#include "verifier/contribution.h"
#include "verifier/determinism.h"
#include "verifier/step_replay.h"

#ifndef TRIBUTARY_SOURCE_DIR
#define TRIBUTARY_SOURCE_DIR "."
#endif

namespace tributary::bench {
namespace {

struct Config {
  uint64_t steps = 1000;  // N: steps per peer-epoch
  std::vector<double> fractions = {0.01, 0.05, 0.10};
  std::vector<uint64_t> samples = {10, 20, 45, 60, 90, 135, 200, 300, 459};
  int trials = 1000;
  int peers = 4;
  int timing_steps = 30;
  std::string corpus_dir;
  std::string json_path;
  bool skip_cost = false;
};

// Wilson score interval for k successes in n trials (95%).
std::pair<double, double> Wilson(uint64_t k, uint64_t n) {
  const double z = 1.959964, p = static_cast<double>(k) / n;
  const double denom = 1 + z * z / n;
  const double centre = (p + z * z / (2.0 * n)) / denom;
  const double half = z * std::sqrt(p * (1 - p) / n + z * z / (4.0 * n * n)) / denom;
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

Digest HonestLeaf(uint64_t trial, uint64_t step) {
  return Sha256Of(fmt::format("honest {} {}", trial, step));
}

// A fixed identity per peer index, so that a rerun samples exactly the same steps: the challenge
// seed hashes the peers' keys. Goes through a key file because net::Identity is only ever
// generated at random or loaded.
Result<net::Identity> BenchIdentity(int index) {
  const Digest seed = Sha256Of(fmt::format("tributary verifier bench peer {}", index));
  EnsureSodiumInitialised();
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_seed_keypair(pk, sk, seed.data());
  char hex[2 * crypto_sign_SECRETKEYBYTES + 1];
  sodium_bin2hex(hex, sizeof(hex), sk, sizeof(sk));
  const auto dir =
      std::filesystem::temp_directory_path() / fmt::format("trib-verifier-bench-{}", ::getpid());
  std::filesystem::create_directories(dir);
  const std::string path = (dir / fmt::format("peer-{}.key", index)).string();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return IoError("cannot write " + path);
  const bool written = ::write(fd, hex, std::strlen(hex)) == static_cast<ssize_t>(std::strlen(hex));
  ::close(fd);
  if (!written) return IoError("cannot write " + path);
  auto id = net::Identity::LoadFile(path);
  std::filesystem::remove_all(dir);
  return id;
}

// ---- part 1 -------------------------------------------------------------------------------------

struct DetectionRow {
  double f = 0;
  uint64_t q = 0;
  uint64_t trials = 0, detected = 0;
  double rate = 0, ci_low = 0, ci_high = 0, exact = 0, bound = 0;
};

Result<std::vector<DetectionRow>> RunDetection(const Config& config) {
  // A fixed class string, so that results do not depend on the machine the detection part runs on.
  const std::string kClass =
      "tributary.dclass.v1;device=cpu;torch=bench;threads=1;blas=;core=;isa=;env=";
  std::vector<net::Identity> ids;
  for (int i = 0; i < config.peers; ++i) {
    TRIB_ASSIGN_OR_RETURN(net::Identity id, BenchIdentity(i));
    ids.push_back(std::move(id));
  }
  std::vector<DetectionRow> rows;
  for (double f : config.fractions) {
    const uint64_t bad = static_cast<uint64_t>(std::llround(f * config.steps));
    std::vector<uint64_t> detected(config.samples.size(), 0);
    for (int trial = 0; trial < config.trials; ++trial) {
      // The prover (ids[0]) fakes `bad` distinct steps of its own choosing (uniform here: the
      // prover cannot know the challenge, so no placement is better than another).
      SeedStream rng(
          DeriveSeed({0xFA4E, static_cast<uint64_t>(f * 1e6), static_cast<uint64_t>(trial)}));
      std::set<uint64_t> faked;
      while (faked.size() < bad) faked.insert(rng.Below(config.steps));
      std::vector<Digest> leaves;
      for (uint64_t s = 0; s < config.steps; ++s) {
        leaves.push_back(faked.count(s) ? Sha256Of(fmt::format("fake {} {}", trial, s))
                                        : HonestLeaf(trial, s));
      }
      auto tree = *verifier::MerkleTree::Build(leaves);
      // Commit-reveal: the coordinator publishes H(secret) before the round.
      const Digest secret = Sha256Of(fmt::format("coordinator secret {} {}", f, trial));
      verifier::CommitmentBook book(
          {"bench-job", static_cast<uint64_t>(trial), 1000, verifier::SecretCommitment(secret)});
      std::vector<verifier::Participant> participants;
      for (int p = 0; p < config.peers; ++p) {
        verifier::RoundCommitment body{
            "bench-job",
            ids[p].public_key(),
            static_cast<uint64_t>(trial),
            p == 0 ? tree.root() : Sha256Of(fmt::format("root {} {}", p, trial)),
            config.steps,
            kClass,
            Sha256Of("delta")};
        (void)book.Submit(*verifier::SignCommitment(body, ids[p]), 10 + p);
        participants.push_back({ids[p].public_key(), config.steps, kClass});
      }
      const Digest seed = *book.Seal(secret, 1000);
      for (size_t qi = 0; qi < config.samples.size(); ++qi) {
        auto challenges = *verifier::SampleChallenges(
            seed, participants, {.samples_per_peer = config.samples[qi], .verifiers_per_step = 1});
        bool caught = false;
        for (const auto& ch : challenges) {
          if (ch.prover != ids[0].public_key()) continue;
          // Opening: the prover's leaf with its proof, checked against the signed root; the
          // verifier's replay yields the honest leaf.
          auto proof = *tree.Prove(ch.step);
          if (!verifier::VerifyProof(tree.root(), tree.leaf(ch.step), ch.step, proof) ||
              tree.leaf(ch.step) != HonestLeaf(trial, ch.step)) {
            caught = true;
          }
        }
        detected[qi] += caught ? 1 : 0;
      }
    }
    for (size_t qi = 0; qi < config.samples.size(); ++qi) {
      DetectionRow r;
      r.f = f;
      r.q = config.samples[qi];
      r.trials = config.trials;
      r.detected = detected[qi];
      r.rate = static_cast<double>(r.detected) / r.trials;
      std::tie(r.ci_low, r.ci_high) = Wilson(r.detected, r.trials);
      r.exact = verifier::DetectionExact(config.steps, bad, r.q);
      r.bound = verifier::DetectionBound(f, r.q);
      rows.push_back(r);
      spdlog::info(
          "f={:.2f} q={:4d}: detected {:4d}/{} = {:.3f} [{:.3f}, {:.3f}]  exact {:.4f}  bound "
          "{:.4f}",
          f, r.q, r.detected, r.trials, r.rate, r.ci_low, r.ci_high, r.exact, r.bound);
    }
  }
  return rows;
}

// ---- part 2 -------------------------------------------------------------------------------------

struct CostResult {
  int64_t params = 0;
  int vocab = 0;
  // Medians over the timed steps. The machine is shared, so every step is timed back to back
  // with its replay and the *ratios* are taken per step: load drift cancels in them.
  double train_step_s = 0;    // runtime::Trainer step (forward, backward, clip, AdamW)
  double local_step_s = 0;    // the same step through the replayer (load state, step, save)
  double state_digest_s = 0;  // digest of (θ, AdamW moments): the prover's per-step commitment work
  double replay_s = 0;        // verifier: digest opened state + step + digest result
  double gradient_replay_s =
      0;                      // verifier of a DDP contribution: forward/backward + gradient digest
  double replay_ratio = 0;    // median of replay_t / train_t
  double digest_ratio = 0;    // median of digest_t / train_t
  double gradient_ratio = 0;  // median of gradient_replay_t / train_t
  int honest_replays = 0, honest_mismatches = 0;
  std::string determinism_class;
  // A Δ audit of one member's round, per codec (median): Δ = θ_start − θ_end and its digest,
  // the opened residual's digest, the re-encoding of Δ + residual into 4 shards with their
  // payload digests, and the digest of the residual left. Once per member and round, against
  // a round's H training steps.
  std::map<std::string, double> delta_audit_s;
};

// What a verifier's Δ audit computes once the opening is decoded (runtime/verification.cc):
// Δ and its digest, the opened residual's digest, the re-encoding and the residual left.
Status TimeDeltaAudit(const std::string& codec, std::span<const float> start, std::span<const float> end,
                      std::span<const float> owed, uint32_t world) {
  std::vector<float> delta(start.size());
  for (size_t i = 0; i < delta.size(); ++i) delta[i] = start[i] - end[i];
  (void)verifier::FloatsDigest(delta);
  (void)verifier::ResidualDigest(owed);
  TRIB_ASSIGN_OR_RETURN(auto reencoded, collectives::ReencodeContributions(codec, world, delta, owed));
  (void)verifier::ResidualDigest(reencoded.residual_left);
  return Status::Ok();
}

Result<CostResult> RunCost(const Config& config) {
  runtime::PinComputeThreads(1);
  v1::JobSpec spec =
      runtime::DefaultJobSpec();  // 2 layers, 4 heads, d_model 128, context 64, batch 32
  TRIB_ASSIGN_OR_RETURN(runtime::TrainingData data,
                        runtime::LoadTrainingData(config.corpus_dir, spec));
  CostResult out;
  out.vocab = data.vocab_size;
  out.determinism_class = verifier::LocalDeterminismClass(1).Canonical();
  TRIB_ASSIGN_OR_RETURN(auto trainer,
                        runtime::Trainer::Create(spec, data, runtime::WorkerPlacement{0, 4, 0}));
  out.params = trainer->num_parameters();
  TRIB_ASSIGN_OR_RETURN(auto replayer,
                        verifier::StepReplayer::Create(
                            verifier::ReplayModelConfigOf(spec, data.vocab_size), data.dataset, 1));
  const double tokens = double(spec.batch_size()) * spec.context();

  TRIB_ASSIGN_OR_RETURN(verifier::TrainingState state, replayer->InitialState(spec.seed()));
  std::vector<double> train, local, digest, replay, gradient, replay_ratio, digest_ratio,
      gradient_ratio;
  for (int t = 0; t < config.timing_steps; ++t) {
    const auto batch = verifier::BatchFor(spec, 0, 4, 0, 0, t);
    const auto hyper = verifier::HyperFor(spec, 0, t);
    // The trainer's own step (its timing excludes its scratch copy and warm-up step).
    TRIB_ASSIGN_OR_RETURN(double tps, trainer->MeasureTokensPerSecond(1));
    const double train_t = tokens / tps;
    // The prover: the step, then the digest that goes into the next leaf.
    auto t0 = Clock::now();
    TRIB_ASSIGN_OR_RETURN(auto step, replayer->LocalStep(state, batch, hyper));
    const double local_t = SecondsSince(t0);
    auto t1 = Clock::now();
    TRIB_ASSIGN_OR_RETURN(Digest after, replayer->StateDigest(step.after));
    const double digest_t = SecondsSince(t1);
    TRIB_ASSIGN_OR_RETURN(Digest before, replayer->StateDigest(state));
    const verifier::StepLeaf claimed{
        "bench",    0,     static_cast<uint64_t>(t),      before,
        step.batch, after, verifier::LossBits(step.loss), out.determinism_class};
    // The verifier: a sampled replay of this step from the opened state.
    auto t2 = Clock::now();
    TRIB_ASSIGN_OR_RETURN(auto r, replayer->ReplayLocalStep(state, batch, hyper));
    const double replay_t = SecondsSince(t2);
    ++out.honest_replays;
    if (!verifier::CompareBitwise(claimed, r).match()) ++out.honest_mismatches;
    // A DDP verifier: the gradient at the public θ_t and its digest.
    auto t3 = Clock::now();
    TRIB_ASSIGN_OR_RETURN(auto g, replayer->Gradient(state.params, batch));
    (void)verifier::FloatsDigest(g.gradient);
    const double gradient_t = SecondsSince(t3);

    train.push_back(train_t);
    local.push_back(local_t);
    digest.push_back(digest_t);
    replay.push_back(replay_t);
    gradient.push_back(gradient_t);
    replay_ratio.push_back(replay_t / train_t);
    digest_ratio.push_back(digest_t / train_t);
    gradient_ratio.push_back(gradient_t / train_t);
    state = std::move(step.after);
  }
  // The Δ audit, from θ_0 to the state after the timed steps, with the residual an int8 sender
  // owes after one call on a Δ of the same size (realistic magnitudes).
  {
    TRIB_ASSIGN_OR_RETURN(verifier::TrainingState initial, replayer->InitialState(spec.seed()));
    std::vector<float> owed(initial.params.size());
    {
      std::vector<float> delta(owed.size());
      for (size_t i = 0; i < delta.size(); ++i) delta[i] = initial.params[i] - state.params[i];
      TRIB_ASSIGN_OR_RETURN(auto first, collectives::ReencodeContributions("int8", 1, delta, {}));
      owed = std::move(first.residual_left);
    }
    for (const std::string codec : {"fp32", "int8"}) {
      std::vector<double> times;
      for (int rep = 0; rep < 7; ++rep) {
        const auto t0 = Clock::now();
        // fp32 keeps no residual: its audit opens none.
        const std::span<const float> opened = codec == "fp32" ? std::span<const float>() : std::span<const float>(owed);
        TRIB_RETURN_IF_ERROR(TimeDeltaAudit(codec, initial.params, state.params, opened, 4));
        times.push_back(SecondsSince(t0));
      }
      out.delta_audit_s[codec] = Median(times);
    }
  }
  out.train_step_s = Median(train);
  out.local_step_s = Median(local);
  out.state_digest_s = Median(digest);
  out.replay_s = Median(replay);
  out.gradient_replay_s = Median(gradient);
  out.replay_ratio = Median(replay_ratio);
  out.digest_ratio = Median(digest_ratio);
  out.gradient_ratio = Median(gradient_ratio);
  spdlog::info(
      "params {}  train step {:.1f} ms  replayer step {:.1f} ms  state digest {:.1f} ms  "
      "replay {:.1f} ms ({:.2f}x train)  DDP gradient replay {:.1f} ms ({:.2f}x)  "
      "honest mismatches {}/{}  Δ audit fp32 {:.1f} ms, int8 {:.1f} ms",
      out.params, out.train_step_s * 1e3, out.local_step_s * 1e3, out.state_digest_s * 1e3,
      out.replay_s * 1e3, out.replay_ratio, out.gradient_replay_s * 1e3, out.gradient_ratio,
      out.honest_mismatches, out.honest_replays, out.delta_audit_s["fp32"] * 1e3, out.delta_audit_s["int8"] * 1e3);
  return out;
}

nlohmann::json CostTable(const Config& config, const CostResult& c) {
  nlohmann::json rows = nlohmann::json::array();
  for (uint64_t n : {config.steps, uint64_t{5000}, uint64_t{10000}}) {
    for (double f : {0.05, 0.10}) {
      for (double p : {0.99}) {
        const uint64_t bad = static_cast<uint64_t>(std::llround(f * n));
        const uint64_t q = verifier::SamplesForDetectionExact(n, bad, p);
        // What a 2 % replay budget buys instead: q per peer-epoch, the detection per epoch, and
        // how many epochs a peer that keeps faking f of its steps survives at 99 % confidence.
        const uint64_t q_budget = static_cast<uint64_t>(std::floor(0.02 * n / c.replay_ratio));
        const double per_epoch = verifier::DetectionExact(n, bad, q_budget);
        const double epochs =
            per_epoch <= 0 ? INFINITY : std::ceil(std::log(1 - p) / std::log(1 - per_epoch));
        rows.push_back({{"steps_per_peer_epoch", n},
                        {"q_at_2pct_budget", q_budget},
                        {"detection_per_epoch_at_2pct", per_epoch},
                        {"epochs_to_target_at_2pct", epochs},
                        {"f", f},
                        {"target_detection", p},
                        {"q_exact", q},
                        {"q_bound", verifier::SamplesForDetection(f, p)},
                        {"replay_cost_fraction", q * c.replay_ratio / n},
                        {"ddp_gradient_replay_cost_fraction", q * c.gradient_ratio / n}});
      }
    }
  }
  return rows;
}

}  // namespace
}  // namespace tributary::bench

int main(int argc, char** argv) {
  using namespace tributary;
  using namespace tributary::bench;
  Config config;
  config.corpus_dir = models::DefaultCorpusDir();
  config.json_path =
      std::string(TRIBUTARY_SOURCE_DIR) + "/benchmarks/results/verifier_detection.json";
  CLI::App app("Verifier benchmark: detection rate vs samples, and replay cost vs training");
  app.add_option("--steps", config.steps, "N: steps per peer-epoch")
      ->check(CLI::Range(10, 1000000));
  app.add_option("--fractions", config.fractions, "faked fractions f")->delimiter(',');
  app.add_option("--samples", config.samples, "sample counts q")->delimiter(',');
  app.add_option("--trials", config.trials, "trials per (f, q)")->check(CLI::Range(1, 1000000));
  app.add_option("--peers", config.peers, "peers committing each round")->check(CLI::Range(2, 64));
  app.add_option("--timing-steps", config.timing_steps, "steps timed for the cost part")
      ->check(CLI::Range(3, 1000));
  app.add_option("--corpus", config.corpus_dir, "corpus directory (default: data/moby-dick)");
  app.add_option("--json", config.json_path, "where to write the results");
  app.add_flag("--skip-cost", config.skip_cost, "detection only");
  CLI11_PARSE(app, argc, argv);

  const auto start = Clock::now();
  const auto detection_rows = RunDetection(config);
  if (!detection_rows.ok()) {
    spdlog::error("detection part failed: {}", detection_rows.status().ToString());
    return 1;
  }
  const auto& rows = *detection_rows;
  nlohmann::json detection = nlohmann::json::array();
  bool consistent = true;
  for (const auto& r : rows) {
    // The exact value must lie inside the empirical 95% interval (a few misses are expected by
    // chance over many rows; they are listed, not hidden).
    const bool inside = r.exact >= r.ci_low && r.exact <= r.ci_high;
    consistent = consistent && inside;
    detection.push_back({{"f", r.f},
                         {"q", r.q},
                         {"trials", r.trials},
                         {"detected", r.detected},
                         {"empirical", r.rate},
                         {"ci95", {r.ci_low, r.ci_high}},
                         {"exact_hypergeometric", r.exact},
                         {"bound_1_minus_1_minus_f_pow_q", r.bound},
                         {"exact_inside_ci", inside}});
  }
  nlohmann::json doc = {{"benchmark", "verifier_detection"},
                        {"steps_per_peer_epoch", config.steps},
                        {"trials", config.trials},
                        {"peers", config.peers},
                        {"detection", detection},
                        {"all_exact_inside_ci", consistent},
                        {"command", "build/benchmarks/verifier/tributary_bench_verifier"}};
  if (!config.skip_cost) {
    auto cost = RunCost(config);
    if (!cost.ok()) {
      spdlog::error("cost part failed: {}", cost.status().ToString());
      return 1;
    }
    doc["cost"] = {
        {"model", "gpt 2 layers, 4 heads, d_model 128, context 64, batch 32"},
        {"vocab", cost->vocab},
        {"parameters", cost->params},
        {"threads", 1},
        {"determinism_class", cost->determinism_class},
        {"timing_steps", config.timing_steps},
        {"train_step_ms", cost->train_step_s * 1e3},
        {"replayer_step_ms", cost->local_step_s * 1e3},
        {"state_digest_ms", cost->state_digest_s * 1e3},
        {"prover_commit_overhead_fraction", cost->digest_ratio},
        {"replay_ms", cost->replay_s * 1e3},
        {"replay_over_train", cost->replay_ratio},
        {"ddp_gradient_replay_ms", cost->gradient_replay_s * 1e3},
        {"ddp_gradient_replay_over_train", cost->gradient_ratio},
        {"honest_replays", cost->honest_replays},
        {"delta_audit_ms", {{"fp32", cost->delta_audit_s.at("fp32") * 1e3}, {"int8", cost->delta_audit_s.at("int8") * 1e3}}},
        {"delta_audit_over_train_step",
         {{"fp32", cost->delta_audit_s.at("fp32") / cost->train_step_s},
          {"int8", cost->delta_audit_s.at("int8") / cost->train_step_s}}},
        {"honest_mismatches", cost->honest_mismatches},
        {"cost_table", CostTable(config, *cost)},
        // Smallest peer-epoch (steps) where q = SamplesForDetection(5 %, 99 %) replays
        // stay within 2 % of training compute.
        {"min_steps_per_peer_epoch_for_2pct_at_99pct_of_f5",
         std::ceil(verifier::SamplesForDetection(0.05, 0.99) * cost->replay_ratio / 0.02)},
        {"min_steps_per_peer_epoch_for_2pct_at_99pct_of_f5_ddp",
         std::ceil(verifier::SamplesForDetection(0.05, 0.99) * cost->gradient_ratio / 0.02)}};
  }
  doc["wall_seconds"] = SecondsSince(start);
  Status written = WriteFileAtomically(config.json_path, doc.dump(2) + "\n");
  if (!written.ok()) {
    spdlog::error("{}", written.ToString());
    return 1;
  }
  spdlog::info("wrote {}", config.json_path);
  return 0;
}
