// Fitting the tolerance one determinism class needs to judge another's local steps of a job
// (verifier::ToleranceCalibration), from honest replays only: `tributary calibrate`.
//
// The prover side trains `steps` honest inner steps of the job's model on its device and thread
// count (batches of every shard, over the job's learning-rate schedule); the verifier side
// replays each from the prover's state before it, and each replay's distance from the honest
// original is measured with verifier::MeasureStepDifference, the function a verifying peer's
// decision uses. The limits are the largest distances × safety_factor. Both sides run in this
// process, one after the other, each with its own torch thread count: a machine that holds both
// devices (a GPU host's CPU, two thread counts) calibrates the pair.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "proto/tributary.pb.h"
#include "runtime/training_data.h"
#include "verifier/replay.h"

namespace tributary::runtime {

class StepKernel;

struct CalibrationSide {
  std::string device = "cpu";  // cpu, cuda, cuda:N
  int threads = 1;             // torch intra-op threads while this side computes
};

// "cpu", "cpu:THREADS", "cuda", "cuda:N" or "cuda:N:THREADS" (threads default to 1).
// InvalidArgument for a malformed thread count; the device itself is resolved later.
Result<CalibrationSide> ParseCalibrationSide(const std::string& text);

// One honest inner step as the prover computed it.
struct HonestStep {
  verifier::TrainingState before, after;
  verifier::BatchCoordinates batch;
  verifier::AdamWHyper hyper;
  double loss = 0;
  Digest batch_digest{};
  double seconds = 0;  // the prover's compute time for it
};

// `steps` consecutive honest inner steps of the job's model from θ_0 on `kernel` (built on the
// prover's device, run at its thread count): round t / H, step t mod H, the batch of shard
// t mod num_peers, the job's learning-rate schedule. What a calibration and the tolerance
// bench replay.
Result<std::vector<HonestStep>> HonestTrajectory(const v1::JobSpec& spec, StepKernel& kernel, int steps);

struct CalibrationReport {
  verifier::ToleranceCalibration calibration;
  uint64_t bit_identical = 0;  // replays that reproduced the step exactly
  double prover_seconds = 0;
  double verifier_seconds = 0;
};

// FailedPrecondition for a device this machine lacks; InvalidArgument for steps < 2 or a
// safety factor below 1. Leaves torch at the prover's thread count.
Result<CalibrationReport> CalibrateTolerance(const v1::JobSpec& spec, const TrainingData& data,
                                             const CalibrationSide& prover, const CalibrationSide& verifier,
                                             int steps, double safety_factor);

}  // namespace tributary::runtime
