// The replay decision: does a verifier's recomputation of a step agree with what the prover
// committed?
//
// CPU determinism classes compare bit for bit: every field of the leaf must be reproduced
// exactly, with no tolerance at all (a single flipped bit is a mismatch). GPU classes cannot
// promise bitwise equality across devices, so the state and batch (inputs) must still match
// exactly, while the produced update and the loss are compared against a ToleranceCalibration
// fitted from honest replay pairs of that hardware pair — never a guessed constant.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "verifier/commitment.h"
#include "verifier/training_state.h"

namespace tributary::verifier {

// The leaf fields a verifier recomputed (the job/round/step/class come from the claimed leaf).
struct ReplayedStep {
  Digest state_before{};
  Digest batch{};
  Digest update{};
  uint64_t loss_bits = 0;
};

enum class ReplayOutcome { kMatch, kMismatch };
const char* ReplayOutcomeName(ReplayOutcome outcome);

struct ReplayDecision {
  ReplayOutcome outcome = ReplayOutcome::kMismatch;
  std::string reason;  // empty on a match; otherwise names the first field that differed
  bool match() const { return outcome == ReplayOutcome::kMatch; }
};

// SHA-256 of the values as contiguous little-endian float32 bytes (= models::TensorDigest of a
// flat float32 tensor holding them).
Digest FloatsDigest(std::span<const float> values);

// CPU classes: kMatch iff state_before, batch, update and loss bits are all identical.
ReplayDecision CompareBitwise(const StepLeaf& claimed, const ReplayedStep& replayed);

// ---- GPU classes: calibrated tolerance ----------------------------------------------------------

// How far one honest replay landed from the honest original.
struct DifferenceSample {
  double relative_l2 = 0;    // ‖a − b‖₂ / ‖a‖₂ (0 when both are zero)
  double loss_relative = 0;  // |loss_a − loss_b| / |loss_a|
};

// InvalidArgument for different lengths or any non-finite value (a NaN must never look small).
Result<DifferenceSample> MeasureDifference(std::span<const float> reference,
                                           std::span<const float> replay, double reference_loss,
                                           double replay_loss);

struct ToleranceCalibration {
  std::string prover_class;    // DeterminismClass::Canonical() of the side that trained
  std::string verifier_class;  // ... and of the side that replays
  uint64_t samples = 0;        // honest pairs the maxima were taken over
  double max_relative_l2 = 0;
  double max_loss_relative = 0;
  double safety_factor = 1;

  // (largest honest difference seen, but at least float32's resolution) × safety_factor. A
  // calibration whose every sample was bit-identical saw no difference, which does not prove
  // there is none: one rounding step apart (2^-23 relative) is the smallest difference two
  // float32 computations can show, and an honest replay must not be accused of it.
  static constexpr double kResolution = 0x1p-23;
  double relative_l2_limit() const { return std::max(max_relative_l2, kResolution) * safety_factor; }
  double loss_relative_limit() const { return std::max(max_loss_relative, kResolution) * safety_factor; }
};

// Fits the limits as (largest honest difference observed, at least kResolution) × safety_factor. InvalidArgument
// unless samples.size() >= min_samples (>= 1), safety_factor >= 1 and every sample is finite and
// non-negative.
Result<ToleranceCalibration> FitTolerance(std::string prover_class, std::string verifier_class,
                                          std::span<const DifferenceSample> samples,
                                          double safety_factor, uint64_t min_samples);

// Canonical bytes (doubles as IEEE-754 bits) so a calibration can be published in the job and
// hashed; Decode is strict.
std::string EncodeCalibration(const ToleranceCalibration& calibration);
Result<ToleranceCalibration> DecodeCalibration(std::string_view bytes);

// A job's published calibrations (JobSpec.tolerance_calibrations), by (prover class, verifier
// class), and how a verifier of one class judges a step of another.
enum class JudgeKind {
  kBitwise,    // same class, no calibration: the replay must be bit-identical
  kTolerance,  // a calibration for the pair: bit-identical, or within its limits
  kNone,       // another class without a calibration: cannot judge
};
const char* JudgeKindName(JudgeKind kind);

class CalibrationTable {
 public:
  // InvalidArgument if an entry does not decode or two entries name the same pair.
  static Result<CalibrationTable> Decode(const std::vector<std::string>& encoded);

  const ToleranceCalibration* Find(std::string_view prover_class, std::string_view verifier_class) const;
  // Some verifier class is calibrated for this prover class (its openings carry the state after).
  bool CoversProver(std::string_view prover_class) const;
  JudgeKind Judge(std::string_view prover_class, std::string_view verifier_class) const;
  size_t size() const { return by_pair_.size(); }

 private:
  std::map<std::pair<std::string, std::string>, ToleranceCalibration, std::less<>> by_pair_;
};

// GPU decision. The caller has checked that `claimed_update` are the values the prover committed
// under claimed.update (the opening). kMismatch if the state or batch digests differ, if any
// claimed value is non-finite, or if the relative L2 difference or the loss difference exceeds
// the calibrated limits. FailedPrecondition if the calibration was fitted for another prover
// class, or the two value spans differ in length.
Result<ReplayDecision> CompareWithTolerance(const StepLeaf& claimed,
                                            std::span<const float> claimed_update,
                                            const ReplayedStep& replayed,
                                            std::span<const float> replayed_update,
                                            const ToleranceCalibration& calibration);

// ---- local (DiLoCo inner) steps under a calibrated tolerance ----------------------------------

// How far `replay_after` landed from `reference_after`, both one local step from `before`: the
// relative L2 difference of the parameter update (after − before) and of each AdamW moment
// after the step, the largest of the three; and the relative loss difference. Calibration and
// decision both measure with this one function, so a limit means the same thing in both.
// InvalidArgument for states of different shapes or optimiser steps, or non-finite values.
Result<DifferenceSample> MeasureStepDifference(const TrainingState& before,
                                               const TrainingState& reference_after,
                                               double reference_loss,
                                               const TrainingState& replay_after, double replay_loss);

// The decision for a local step whose prover class cannot be replayed bitwise by this verifier
// (a GPU class, or another CPU class): the inputs (state before, batch) must match exactly and
// `claimed_after` (whose digest the caller has checked against claimed.update) must lie within
// the calibrated limits of the replay. FailedPrecondition if the calibration is for another pair
// of classes (`verifier_class` is the replaying side's).
Result<ReplayDecision> CompareStepWithTolerance(const StepLeaf& claimed, const TrainingState& before,
                                                const TrainingState& claimed_after,
                                                const ReplayedStep& replayed,
                                                const TrainingState& replayed_after,
                                                const ToleranceCalibration& calibration,
                                                std::string_view verifier_class);

}  // namespace tributary::verifier
