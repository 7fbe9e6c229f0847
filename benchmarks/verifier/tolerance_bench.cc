// Replay tolerance benchmark: fits the calibrated tolerance that lets one determinism class
// verify another's local steps (a GPU replayed on the same GPU model or on a CPU, or one CPU
// class on another), from honest replays only, then measures on held-out honest steps that it
// accuses nobody and, on the same steps, which lies it catches.
//
// The prover trains an honest trajectory with runtime::StepKernel on its device; each verifier
// replays every step from the prover's state before it. Half of the steps (the even ones) fit the
// limits (verifier::FitTolerance), the other half is held out: its honest differences must
// stay inside, and each attack's forged post-step state is judged by
// verifier::CompareStepWithTolerance, the function a verifying peer runs.
// Results: table on stdout, JSON (benchmarks/results/replay_tolerance*.json), and optionally
// the calibrations themselves (--calibration-dir) for a job's `tolerance_calibrations`.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "collectives/codec/half.h"
#include "core/files.h"
#include "models/corpus.h"
#include "runtime/calibration.h"
#include "runtime/compute_device.h"
#include "runtime/job_spec.h"
#include "runtime/step_kernel.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"
#include "verifier/commitment.h"
#include "verifier/determinism.h"
#include "verifier/replay.h"

namespace tributary::bench {
namespace {

namespace codec = collectives::codec;

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Side {
  std::string device;  // resolved compute device
  int threads = 1;     // torch intra-op threads while this side computes
  std::string dclass;  // its determinism class
};

struct Config {
  std::string prover_device = "cpu";
  int prover_threads = 2;
  std::vector<std::string> verifiers = {"cpu:1"};  // device:threads
  int steps = 80;
  double safety_factor = 4.0;
  std::string corpus_dir;
  std::string json_path;
  std::string calibration_dir;
};

using Step = runtime::HonestStep;

// "cpu[:THREADS]" or "cuda:N[:THREADS]" (threads default to 1).
Result<Side> ParseSide(const std::string& text) {
  TRIB_ASSIGN_OR_RETURN(runtime::CalibrationSide parsed, runtime::ParseCalibrationSide(text));
  Side side;
  side.threads = parsed.threads;
  TRIB_ASSIGN_OR_RETURN(side.device, runtime::ResolveComputeDevice(parsed.device));
  return side;
}

// One forged post-step state per held-out step; `name` and a short description for the table.
struct Attack {
  std::string name;
  std::string what;
  std::function<Result<verifier::TrainingState>(size_t t)> forge;
};

int Run(const Config& config) {
  runtime::PinComputeThreads(config.prover_threads);
  v1::JobSpec spec = runtime::DefaultJobSpec();
  auto data = runtime::LoadTrainingData(config.corpus_dir, spec);
  if (!data.ok()) {
    spdlog::error("{}", data.status().ToString());
    return 1;
  }
  auto prover_device = runtime::ResolveComputeDevice(config.prover_device);
  if (!prover_device.ok()) {
    spdlog::error("prover: {}", prover_device.status().ToString());
    return 1;
  }
  Side prover{*prover_device, config.prover_threads, ""};
  prover.dclass = verifier::LocalDeterminismClass(prover.threads, prover.device).Canonical();
  auto kernel = runtime::StepKernel::Create(spec, data->dataset, data->vocab_size, prover.device);
  if (!kernel.ok()) {
    spdlog::error("prover kernel: {}", kernel.status().ToString());
    return 1;
  }
  auto& K = **kernel;

  // ---- the prover's honest trajectory (the one `tributary calibrate` replays) ----------------
  auto trajectory = runtime::HonestTrajectory(spec, K, config.steps);
  if (!trajectory.ok()) return spdlog::error("prover: {}", trajectory.status().ToString()), 1;
  const std::vector<Step>& steps = *trajectory;
  std::vector<Digest> state_before(steps.size());  // what each leaf commits to (the same on any device)
  for (size_t t = 0; t < steps.size(); ++t) {
    auto digest = K.StateDigest(steps[t].before);
    if (!digest.ok()) return spdlog::error("{}", digest.status().ToString()), 1;
    state_before[t] = *digest;
  }
  // Even steps fit the limits, odd steps are held out: both halves span the whole schedule
  // (warm-up, peak and decayed learning rate), so the held-out test is not an extrapolation.
  const size_t fit_end = (steps.size() + 1) / 2;
  auto held_out = [](size_t t) { return t % 2 == 1; };

  nlohmann::json verifiers_json = nlohmann::json::array();
  std::printf("\nprover %s (%d threads), %d steps of the default char-GPT (%lld parameters); %zu (even) fit, %zu (odd) held out\n",
              prover.device.c_str(), prover.threads, config.steps, static_cast<long long>(K.num_parameters()), fit_end,
              steps.size() - fit_end);
  std::printf("prover class: %s\n", prover.dclass.c_str());
  bool all_clean = true;
  for (const std::string& text : config.verifiers) {
    auto side = ParseSide(text);
    if (!side.ok()) {
      spdlog::warn("verifier '{}' skipped: {}", text, side.status().ToString());
      continue;
    }
    Side v = *side;
    runtime::PinComputeThreads(v.threads);
    v.dclass = verifier::LocalDeterminismClass(v.threads, v.device).Canonical();
    auto vk = runtime::StepKernel::Create(spec, data->dataset, data->vocab_size, v.device);
    if (!vk.ok()) return spdlog::error("verifier kernel: {}", vk.status().ToString()), 1;
    auto& V = **vk;

    // Honest replays of every step. Only the held-out steps' post-step states are kept, to judge
    // claims against; the fitting half needs only its differences.
    std::vector<verifier::DifferenceSample> samples;
    std::vector<verifier::TrainingState> replays(steps.size());
    std::vector<double> replay_loss;
    std::vector<Digest> replay_batch;
    double replay_seconds = 0, prover_seconds = 0;
    uint64_t bitwise_equal = 0;
    for (const Step& s : steps) {
      const auto t0 = Clock::now();
      auto r = V.LocalStep(s.before, s.batch, s.hyper);
      replay_seconds += SecondsSince(t0);
      prover_seconds += s.seconds;
      if (!r.ok()) return spdlog::error("replay: {}", r.status().ToString()), 1;
      auto d = verifier::MeasureStepDifference(s.before, r->after, r->loss, s.after, s.loss);
      if (!d.ok()) return spdlog::error("measure: {}", d.status().ToString()), 1;
      if (d->relative_l2 == 0 && d->loss_relative == 0) ++bitwise_equal;
      samples.push_back(*d);
      if (held_out(samples.size() - 1)) replays[samples.size() - 1] = std::move(r->after);
      replay_loss.push_back(r->loss);
      replay_batch.push_back(r->batch);
    }
    std::vector<verifier::DifferenceSample> fit_samples;
    for (size_t t = 0; t < samples.size(); ++t) {
      if (!held_out(t)) fit_samples.push_back(samples[t]);
    }
    auto fitted = verifier::FitTolerance(prover.dclass, v.dclass, fit_samples, config.safety_factor, fit_end);
    if (!fitted.ok()) return spdlog::error("fit: {}", fitted.status().ToString()), 1;
    const verifier::ToleranceCalibration& cal = *fitted;

    auto judge = [&](size_t t, const verifier::TrainingState& claimed_after, double claimed_loss) {
      const Step& s = steps[t];
      // A tolerance decision reads the opened post-step state, not the leaf's update digest.
      const verifier::StepLeaf leaf{"tolerance-bench", s.batch.round, s.batch.step, state_before[t],
                                    s.batch_digest, {}, verifier::LossBits(claimed_loss), prover.dclass};
      // The verifier replays from the opened state, whose digest is the one the leaf names.
      const verifier::ReplayedStep replayed{state_before[t], replay_batch[t], {}, verifier::LossBits(replay_loss[t])};
      return verifier::CompareStepWithTolerance(leaf, s.before, claimed_after, replayed, replays[t], cal, v.dclass);
    };
    // Held-out honest steps: every one must pass.
    uint64_t false_positives = 0;
    double held_max_l2 = 0, held_max_loss = 0;
    for (size_t t = 1; t < steps.size(); t += 2) {
      held_max_l2 = std::max(held_max_l2, samples[t].relative_l2);
      held_max_loss = std::max(held_max_loss, samples[t].loss_relative);
      auto d = judge(t, steps[t].after, steps[t].loss);
      if (!d.ok() || !d->match()) ++false_positives;
    }
    all_clean = all_clean && false_positives == 0;

    // Lies, each forged on the prover's side from the honest step (a cheater holds what the
    // prover holds).
    runtime::PinComputeThreads(prover.threads);
    std::mt19937_64 rng(7);
    auto scaled = [&](double factor) {
      return [&, factor](size_t t) -> Result<verifier::TrainingState> {
        verifier::TrainingState out = steps[t].after;
        for (size_t i = 0; i < out.params.size(); ++i) {
          out.params[i] = steps[t].before.params[i] + float(factor) * (steps[t].after.params[i] - steps[t].before.params[i]);
        }
        return out;
      };
    };
    auto noisy = [&](double relative) {
      return [&, relative](size_t t) -> Result<verifier::TrainingState> {
        verifier::TrainingState out = steps[t].after;
        double norm2 = 0;
        for (size_t i = 0; i < out.params.size(); ++i) {
          const double u = double(steps[t].after.params[i]) - steps[t].before.params[i];
          norm2 += u * u;
        }
        const double sigma = relative * std::sqrt(norm2 / double(out.params.size()));
        std::normal_distribution<double> n(0.0, sigma);
        for (float& p : out.params) p = float(p + n(rng));
        return out;
      };
    };
    std::vector<Attack> attacks = {
        {"scale_1.01", "update x1.01", scaled(1.01)},
        {"scale_1.1", "update x1.1", scaled(1.1)},
        {"scale_1000", "update x1000", scaled(1000.0)},
        {"noise_1e-2", "update + noise of 1% of its RMS", noisy(1e-2)},
        {"noise_1e-1", "update + noise of 10% of its RMS", noisy(1e-1)},
        {"skip", "no step: the previous step's update again", [&](size_t t) -> Result<verifier::TrainingState> {
           verifier::TrainingState out = steps[t].after;
           for (size_t i = 0; i < out.params.size(); ++i) {
             out.params[i] = steps[t].before.params[i] + (steps[t - 1].after.params[i] - steps[t - 1].before.params[i]);
           }
           return out;
         }},
        {"wrong_batch", "a real step on another shard's batch", [&](size_t t) -> Result<verifier::TrainingState> {
           verifier::BatchCoordinates other = steps[t].batch;
           other.shard = (other.shard + 1) % std::max<uint32_t>(2, other.num_shards);  // never its own
           TRIB_ASSIGN_OR_RETURN(auto r, K.LocalStep(steps[t].before, other, steps[t].hyper));
           return r.after;
         }},
        {"lr_1.05", "a real step at 1.05x the learning rate", [&](size_t t) -> Result<verifier::TrainingState> {
           verifier::AdamWHyper h = steps[t].hyper;
           h.lr *= 1.05;
           TRIB_ASSIGN_OR_RETURN(auto r, K.LocalStep(steps[t].before, steps[t].batch, h));
           return r.after;
         }},
        {"stale_moments", "honest θ, the optimiser moments left as before", [&](size_t t) -> Result<verifier::TrainingState> {
           verifier::TrainingState out = steps[t].after;
           if (!steps[t].before.exp_avg.empty()) {
             out.exp_avg = steps[t].before.exp_avg;
             out.exp_avg_sq = steps[t].before.exp_avg_sq;
           }
           return out;
         }},
        {"bf16_update", "the update rounded to bfloat16 (a cheaper step)", [&](size_t t) -> Result<verifier::TrainingState> {
           verifier::TrainingState out = steps[t].after;
           for (size_t i = 0; i < out.params.size(); ++i) {
             const float u = steps[t].after.params[i] - steps[t].before.params[i];
             out.params[i] = steps[t].before.params[i] + codec::Bf16ToFloat(codec::FloatToBf16(u));
           }
           return out;
         }},
    };
    nlohmann::json attacks_json = nlohmann::json::array();
    std::printf("\nverifier %s (%d threads): %s\n", v.device.c_str(), v.threads, v.dclass.c_str());
    std::printf("  honest replays bit-identical to the prover: %llu of %zu\n",
                static_cast<unsigned long long>(bitwise_equal), steps.size());
    std::printf("  fitted on %zu: max rel L2 %.3e, max loss rel %.3e; x%.1f -> limits %.3e / %.3e\n", fit_end,
                cal.max_relative_l2, cal.max_loss_relative, cal.safety_factor, cal.relative_l2_limit(),
                cal.loss_relative_limit());
    std::printf("  held out %zu: max rel L2 %.3e, max loss rel %.3e, false accusations %llu\n",
                steps.size() - fit_end, held_max_l2, held_max_loss, static_cast<unsigned long long>(false_positives));
    std::printf("  replay time / prover step time: %.2f\n", replay_seconds / std::max(1e-12, prover_seconds));
    std::printf("  %-14s %-48s %9s %14s\n", "attack", "what", "caught", "min rel L2");
    for (const Attack& a : attacks) {
      uint64_t caught = 0, tried = 0;
      double min_l2 = INFINITY;
      for (size_t t = 1; t < steps.size(); t += 2) {
        auto forged = a.forge(t);
        if (!forged.ok()) return spdlog::error("{}: {}", a.name, forged.status().ToString()), 1;
        auto d = verifier::MeasureStepDifference(steps[t].before, replays[t], replay_loss[t], *forged, steps[t].loss);
        if (d.ok()) min_l2 = std::min(min_l2, d->relative_l2);
        auto verdict = judge(t, *forged, steps[t].loss);
        ++tried;
        if (!verdict.ok() || !verdict->match()) ++caught;
      }
      std::printf("  %-14s %-48s %4llu/%-4llu %14.3e\n", a.name.c_str(), a.what.c_str(),
                  static_cast<unsigned long long>(caught), static_cast<unsigned long long>(tried), min_l2);
      attacks_json.push_back({{"attack", a.name}, {"what", a.what}, {"caught", caught}, {"tried", tried},
                              {"min_relative_l2_vs_replay", min_l2}});
    }
    if (!config.calibration_dir.empty()) {
      std::filesystem::create_directories(config.calibration_dir);
      const std::string name = config.calibration_dir + "/" + prover.device + "_" + std::to_string(prover.threads) +
                               "t-on-" + v.device + "_" + std::to_string(v.threads) + "t.calibration";
      if (Status st = WriteFileAtomically(name, verifier::EncodeCalibration(cal)); !st.ok()) {
        spdlog::error("{}", st.ToString());
        return 1;
      }
      std::printf("  calibration written to %s\n", name.c_str());
    }
    verifiers_json.push_back({{"device", v.device},
                              {"threads", v.threads},
                              {"class", v.dclass},
                              {"honest_bitwise_equal", bitwise_equal},
                              {"fit_steps", fit_end},
                              {"fit_max_relative_l2", cal.max_relative_l2},
                              {"fit_max_loss_relative", cal.max_loss_relative},
                              {"safety_factor", cal.safety_factor},
                              {"limit_relative_l2", cal.relative_l2_limit()},
                              {"limit_loss_relative", cal.loss_relative_limit()},
                              {"held_out_steps", steps.size() - fit_end},
                              {"held_out_max_relative_l2", held_max_l2},
                              {"held_out_max_loss_relative", held_max_loss},
                              {"held_out_false_accusations", false_positives},
                              {"replay_over_prover_time", replay_seconds / std::max(1e-12, prover_seconds)},
                              {"attacks", attacks_json}});
  }
  nlohmann::json doc = {{"benchmark", "replay_tolerance"},
                        {"prover", {{"device", prover.device}, {"threads", prover.threads}, {"class", prover.dclass}}},
                        {"steps", config.steps},
                        {"parameters", K.num_parameters()},
                        {"verifiers", verifiers_json},
                        {"no_false_accusations", all_clean},
                        {"command", "build/benchmarks/verifier/tributary_bench_replay_tolerance --prover " +
                                        config.prover_device + " --prover-threads " +
                                        std::to_string(config.prover_threads) + " --steps " +
                                        std::to_string(config.steps)}};
  if (Status st = WriteFileAtomically(config.json_path, doc.dump(2) + "\n"); !st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  std::printf("\nwrote %s\n", config.json_path.c_str());
  return all_clean ? 0 : 2;
}

}  // namespace
}  // namespace tributary::bench

int main(int argc, char** argv) {
  using namespace tributary;
  bench::Config config;
  config.corpus_dir = models::DefaultCorpusDir();
  config.json_path = std::string(TRIBUTARY_SOURCE_DIR) + "/benchmarks/results/replay_tolerance.json";
  CLI::App app("Replay tolerance: calibrate cross-class replays from honest steps, then test lies against it");
  app.add_option("--prover", config.prover_device, "prover device: cpu, cuda, cuda:N");
  app.add_option("--prover-threads", config.prover_threads, "prover's torch threads")->check(CLI::Range(1, 256));
  app.add_option("--verifiers", config.verifiers, "verifier sides, DEVICE[:THREADS] (cpu:1, cuda:0)")->delimiter(',');
  app.add_option("--steps", config.steps, "honest steps (half fit, half held out)")->check(CLI::Range(8, 100000));
  app.add_option("--safety-factor", config.safety_factor, "limit = largest honest difference x this")
      ->check(CLI::Range(1.0, 1e6));
  app.add_option("--corpus", config.corpus_dir, "corpus directory");
  app.add_option("--json", config.json_path, "where to write the results");
  app.add_option("--calibration-dir", config.calibration_dir, "also write each fitted calibration here");
  CLI11_PARSE(app, argc, argv);
  return bench::Run(config);
}
