#include "runtime/calibration.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "runtime/compute_device.h"
#include "runtime/step_kernel.h"
#include "runtime/trainer.h"
#include "verifier/determinism.h"

namespace tributary::runtime {
namespace {

using Clock = std::chrono::steady_clock;
double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct ResolvedSide {
  std::string device;
  int threads = 1;
  std::string determinism_class;
};

Result<ResolvedSide> Resolve(const CalibrationSide& side) {
  ResolvedSide out;
  TRIB_ASSIGN_OR_RETURN(out.device, ResolveComputeDevice(side.device));
  out.threads = std::max(1, side.threads);
  out.determinism_class = verifier::LocalDeterminismClass(out.threads, out.device).Canonical();
  return out;
}

}  // namespace

Result<CalibrationSide> ParseCalibrationSide(const std::string& text) {
  // "cuda:N" holds a colon of its own; a thread count is the field after the device.
  const size_t device_fields = text.rfind("cuda:", 0) == 0 ? 2 : 1;
  size_t colon = std::string::npos;
  for (size_t i = 0, seen = 0; i < text.size() && colon == std::string::npos; ++i) {
    if (text[i] == ':' && ++seen == device_fields) colon = i;
  }
  CalibrationSide side;
  side.device = text.substr(0, colon);
  if (colon != std::string::npos) {
    const std::string threads = text.substr(colon + 1);
    if (threads.empty() || threads.size() > 4 || threads.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(threads) < 1) {
      return InvalidArgument("bad thread count in '" + text + "' (expected DEVICE[:THREADS], threads >= 1)");
    }
    side.threads = std::stoi(threads);
  }
  if (side.device.empty()) return InvalidArgument("no device in '" + text + "'");
  return side;
}

Result<std::vector<HonestStep>> HonestTrajectory(const v1::JobSpec& spec, StepKernel& kernel, int steps) {
  std::vector<HonestStep> trajectory(static_cast<size_t>(std::max(0, steps)));
  TRIB_ASSIGN_OR_RETURN(verifier::TrainingState current, kernel.InitialState(spec.seed()));
  const uint64_t inner = std::max<uint64_t>(1, spec.inner_steps());
  const uint32_t shards = std::max<uint32_t>(1, spec.num_peers());
  for (size_t t = 0; t < trajectory.size(); ++t) {
    HonestStep& s = trajectory[t];
    s.batch = InnerBatch(spec, static_cast<uint32_t>(t % shards), shards, 0, t / inner, t % inner);
    s.hyper = InnerHyper(spec, t);
    s.before = current;
    const auto started = Clock::now();
    TRIB_ASSIGN_OR_RETURN(auto r, kernel.LocalStep(current, s.batch, s.hyper));
    s.seconds = SecondsSince(started);
    s.after = r.after;
    s.loss = r.loss;
    s.batch_digest = r.batch;
    current = std::move(r.after);
  }
  return trajectory;
}

Result<CalibrationReport> CalibrateTolerance(const v1::JobSpec& spec, const TrainingData& data,
                                             const CalibrationSide& prover_side, const CalibrationSide& verifier_side,
                                             int steps, double safety_factor) {
  if (steps < 2) return InvalidArgument("a calibration needs at least 2 honest steps");
  if (!(safety_factor >= 1)) return InvalidArgument("the safety factor must be at least 1");
  TRIB_ASSIGN_OR_RETURN(ResolvedSide prover, Resolve(prover_side));
  TRIB_ASSIGN_OR_RETURN(ResolvedSide verifier, Resolve(verifier_side));
  CalibrationReport report;

  // The prover's honest trajectory.
  PinComputeThreads(prover.threads);
  TRIB_ASSIGN_OR_RETURN(auto prover_kernel, StepKernel::Create(spec, data.dataset, data.vocab_size, prover.device));
  TRIB_ASSIGN_OR_RETURN(std::vector<HonestStep> trajectory, HonestTrajectory(spec, *prover_kernel, steps));
  for (const HonestStep& s : trajectory) report.prover_seconds += s.seconds;
  prover_kernel.reset();

  // The verifier's replays, each from the prover's state before the step.
  PinComputeThreads(verifier.threads);
  auto verifier_kernel = StepKernel::Create(spec, data.dataset, data.vocab_size, verifier.device);
  if (!verifier_kernel.ok()) {
    PinComputeThreads(prover.threads);
    return verifier_kernel.status();
  }
  std::vector<verifier::DifferenceSample> samples;
  const auto started = Clock::now();
  Status failed;
  for (const HonestStep& s : trajectory) {
    auto r = (*verifier_kernel)->LocalStep(s.before, s.batch, s.hyper);
    if (!r.ok()) {
      failed = r.status();
      break;
    }
    // Measured from the replay (the side that judges) to the prover's claim, as the decision does.
    auto d = verifier::MeasureStepDifference(s.before, r->after, r->loss, s.after, s.loss);
    if (!d.ok()) {
      failed = d.status();
      break;
    }
    if (d->relative_l2 == 0 && d->loss_relative == 0) ++report.bit_identical;
    samples.push_back(*d);
  }
  report.verifier_seconds = SecondsSince(started);
  PinComputeThreads(prover.threads);
  TRIB_RETURN_IF_ERROR(failed);
  TRIB_ASSIGN_OR_RETURN(report.calibration,
                        verifier::FitTolerance(prover.determinism_class, verifier.determinism_class, samples,
                                               safety_factor, static_cast<uint64_t>(steps)));
  return report;
}

}  // namespace tributary::runtime
