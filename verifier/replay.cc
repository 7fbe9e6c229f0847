#include "verifier/replay.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <optional>
#include <vector>

#include "verifier/detail/encoding.h"

namespace tributary::verifier {
namespace {

constexpr std::string_view kCalibrationMagic = "TRIBTOL1";

ReplayDecision Match() { return {ReplayOutcome::kMatch, ""}; }
ReplayDecision Mismatch(std::string why) { return {ReplayOutcome::kMismatch, std::move(why)}; }

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

std::string Where(const StepLeaf& leaf) {
  return "round " + std::to_string(leaf.round) + " step " + std::to_string(leaf.step);
}

// The fields that are inputs of the step: they must agree exactly in every class.
std::optional<ReplayDecision> InputsDiffer(const StepLeaf& claimed, const ReplayedStep& replayed) {
  if (claimed.state_before != replayed.state_before) {
    return Mismatch(Where(claimed) + ": the step started from another state (" +
                    ShortHex(claimed.state_before) + " claimed, " +
                    ShortHex(replayed.state_before) + " replayed)");
  }
  if (claimed.batch != replayed.batch) {
    return Mismatch(Where(claimed) + ": trained on another batch than the one assigned");
  }
  return std::nullopt;
}

// The verdict on a measured difference (from the replay to the claim) under `calibration`.
ReplayDecision WithinLimits(const StepLeaf& claimed, const Result<DifferenceSample>& diff,
                            const ToleranceCalibration& calibration, const std::string& what) {
  if (!diff.ok()) return Mismatch(Where(claimed) + ": " + diff.status().message());
  if (diff->relative_l2 > calibration.relative_l2_limit()) {
    return Mismatch(Where(claimed) + ": " + what + " differs from the replay by relative L2 " +
                    Num(diff->relative_l2) + " > calibrated limit " + Num(calibration.relative_l2_limit()));
  }
  if (diff->loss_relative > calibration.loss_relative_limit()) {
    return Mismatch(Where(claimed) + ": loss differs by " + Num(diff->loss_relative) +
                    " (relative) > calibrated limit " + Num(calibration.loss_relative_limit()));
  }
  return Match();
}

}  // namespace

const char* ReplayOutcomeName(ReplayOutcome outcome) {
  return outcome == ReplayOutcome::kMatch ? "match" : "mismatch";
}

Digest FloatsDigest(std::span<const float> values) {
  static_assert(std::endian::native == std::endian::little, "canonical bytes are little-endian");
  return Sha256Of(std::as_bytes(values));
}

ReplayDecision CompareBitwise(const StepLeaf& claimed, const ReplayedStep& replayed) {
  if (auto differ = InputsDiffer(claimed, replayed)) return *differ;
  if (claimed.update != replayed.update) {
    return Mismatch(Where(claimed) + ": the update differs from the replay (" +
                    ShortHex(claimed.update) + " claimed, " + ShortHex(replayed.update) +
                    " replayed)");
  }
  if (claimed.loss_bits != replayed.loss_bits) {
    return Mismatch(Where(claimed) + ": loss " + Num(LossFromBits(claimed.loss_bits)) +
                    " claimed, " + Num(LossFromBits(replayed.loss_bits)) + " replayed");
  }
  return Match();
}

Result<DifferenceSample> MeasureDifference(std::span<const float> reference,
                                           std::span<const float> replay, double reference_loss,
                                           double replay_loss) {
  if (reference.size() != replay.size()) {
    return InvalidArgument("cannot compare " + std::to_string(reference.size()) + " values with " +
                           std::to_string(replay.size()));
  }
  if (!std::isfinite(reference_loss) || !std::isfinite(replay_loss)) {
    return InvalidArgument("non-finite loss");
  }
  // Accumulate in double: the difference of two fp32 vectors must not drown in fp32 rounding.
  double diff2 = 0, norm2 = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    if (!std::isfinite(reference[i]) || !std::isfinite(replay[i])) {
      return InvalidArgument("non-finite value at index " + std::to_string(i));
    }
    const double d = static_cast<double>(reference[i]) - replay[i];
    diff2 += d * d;
    norm2 += static_cast<double>(reference[i]) * reference[i];
  }
  DifferenceSample s;
  if (diff2 > 0) s.relative_l2 = norm2 > 0 ? std::sqrt(diff2 / norm2) : INFINITY;
  const double dl = std::fabs(reference_loss - replay_loss);
  if (dl > 0) s.loss_relative = reference_loss != 0 ? dl / std::fabs(reference_loss) : INFINITY;
  return s;
}

Result<ToleranceCalibration> FitTolerance(std::string prover_class, std::string verifier_class,
                                          std::span<const DifferenceSample> samples,
                                          double safety_factor, uint64_t min_samples) {
  if (min_samples < 1 || samples.size() < min_samples) {
    return InvalidArgument("a tolerance needs at least " +
                           std::to_string(std::max<uint64_t>(1, min_samples)) +
                           " honest replay pairs, got " + std::to_string(samples.size()));
  }
  if (!(safety_factor >= 1) || !std::isfinite(safety_factor)) {
    return InvalidArgument("safety factor must be a finite number >= 1");
  }
  ToleranceCalibration c;
  c.prover_class = std::move(prover_class);
  c.verifier_class = std::move(verifier_class);
  c.samples = samples.size();
  c.safety_factor = safety_factor;
  for (const DifferenceSample& s : samples) {
    if (!std::isfinite(s.relative_l2) || !std::isfinite(s.loss_relative) || s.relative_l2 < 0 ||
        s.loss_relative < 0) {
      return InvalidArgument("calibration sample is negative or non-finite");
    }
    c.max_relative_l2 = std::max(c.max_relative_l2, s.relative_l2);
    c.max_loss_relative = std::max(c.max_loss_relative, s.loss_relative);
  }
  return c;
}

std::string EncodeCalibration(const ToleranceCalibration& c) {
  detail::Writer w;
  w.Raw(kCalibrationMagic);
  w.Str(c.prover_class);
  w.Str(c.verifier_class);
  w.U64(c.samples);
  w.U64(std::bit_cast<uint64_t>(c.max_relative_l2));
  w.U64(std::bit_cast<uint64_t>(c.max_loss_relative));
  w.U64(std::bit_cast<uint64_t>(c.safety_factor));
  return std::move(w).bytes();
}

Result<ToleranceCalibration> DecodeCalibration(std::string_view bytes) {
  detail::Reader r(bytes, "tolerance calibration");
  TRIB_RETURN_IF_ERROR(r.Magic(kCalibrationMagic));
  ToleranceCalibration c;
  TRIB_ASSIGN_OR_RETURN(c.prover_class, r.Str(4096));
  TRIB_ASSIGN_OR_RETURN(c.verifier_class, r.Str(4096));
  TRIB_ASSIGN_OR_RETURN(c.samples, r.U64());
  TRIB_ASSIGN_OR_RETURN(uint64_t l2, r.U64());
  TRIB_ASSIGN_OR_RETURN(uint64_t loss, r.U64());
  TRIB_ASSIGN_OR_RETURN(uint64_t factor, r.U64());
  TRIB_RETURN_IF_ERROR(r.Done());
  c.max_relative_l2 = std::bit_cast<double>(l2);
  c.max_loss_relative = std::bit_cast<double>(loss);
  c.safety_factor = std::bit_cast<double>(factor);
  if (c.samples == 0 || !std::isfinite(c.max_relative_l2) || !std::isfinite(c.max_loss_relative) ||
      c.max_relative_l2 < 0 || c.max_loss_relative < 0 || !(c.safety_factor >= 1) ||
      !std::isfinite(c.safety_factor)) {
    return Corruption("tolerance calibration has impossible values");
  }
  return c;
}

Result<ReplayDecision> CompareWithTolerance(const StepLeaf& claimed,
                                            std::span<const float> claimed_update,
                                            const ReplayedStep& replayed,
                                            std::span<const float> replayed_update,
                                            const ToleranceCalibration& calibration) {
  if (claimed.determinism_class != calibration.prover_class) {
    return FailedPrecondition("the calibration was fitted for class '" + calibration.prover_class +
                              "', not the prover's '" + claimed.determinism_class + "'");
  }
  if (claimed_update.size() != replayed_update.size()) {
    return FailedPrecondition("claimed and replayed updates differ in length");
  }
  if (auto differ = InputsDiffer(claimed, replayed)) return *differ;
  const double claimed_loss = LossFromBits(claimed.loss_bits);
  if (!std::isfinite(claimed_loss)) return Mismatch(Where(claimed) + ": non-finite loss claimed");
  // Difference measured from the replay (the trusted side) to the claim.
  Result<DifferenceSample> diff = MeasureDifference(replayed_update, claimed_update,
                                                    LossFromBits(replayed.loss_bits), claimed_loss);
  return WithinLimits(claimed, diff, calibration, "update");
}

Result<DifferenceSample> MeasureStepDifference(const TrainingState& before,
                                               const TrainingState& reference_after,
                                               double reference_loss,
                                               const TrainingState& replay_after, double replay_loss) {
  const size_t n = before.params.size();
  auto shaped = [n](const TrainingState& s) {
    return s.params.size() == n && s.exp_avg.size() == n && s.exp_avg_sq.size() == n;
  };
  if (!shaped(reference_after) || !shaped(replay_after)) {
    return InvalidArgument("a state after a step must hold θ and both moments for every parameter");
  }
  if (reference_after.adam_step != replay_after.adam_step) {
    return InvalidArgument("the states after the step are at optimiser steps " +
                           std::to_string(reference_after.adam_step) + " and " +
                           std::to_string(replay_after.adam_step));
  }
  // The update, not θ itself: one step moves θ by ~1e-3 of its norm, so a θ-relative measure
  // would let a lie hide in the rounding of θ.
  std::vector<float> reference_update(n), replay_update(n);
  for (size_t i = 0; i < n; ++i) {
    reference_update[i] = reference_after.params[i] - before.params[i];
    replay_update[i] = replay_after.params[i] - before.params[i];
  }
  TRIB_ASSIGN_OR_RETURN(DifferenceSample out,
                        MeasureDifference(reference_update, replay_update, reference_loss, replay_loss));
  TRIB_ASSIGN_OR_RETURN(DifferenceSample m, MeasureDifference(reference_after.exp_avg, replay_after.exp_avg, 0, 0));
  TRIB_ASSIGN_OR_RETURN(DifferenceSample v,
                        MeasureDifference(reference_after.exp_avg_sq, replay_after.exp_avg_sq, 0, 0));
  out.relative_l2 = std::max({out.relative_l2, m.relative_l2, v.relative_l2});
  return out;
}

Result<ReplayDecision> CompareStepWithTolerance(const StepLeaf& claimed, const TrainingState& before,
                                                const TrainingState& claimed_after,
                                                const ReplayedStep& replayed,
                                                const TrainingState& replayed_after,
                                                const ToleranceCalibration& calibration,
                                                std::string_view verifier_class) {
  if (claimed.determinism_class != calibration.prover_class || verifier_class != calibration.verifier_class) {
    return FailedPrecondition("the calibration was fitted for '" + calibration.prover_class + "' replayed on '" +
                              calibration.verifier_class + "', not this pair");
  }
  if (auto differ = InputsDiffer(claimed, replayed)) return *differ;
  const double claimed_loss = LossFromBits(claimed.loss_bits);
  if (!std::isfinite(claimed_loss)) return Mismatch(Where(claimed) + ": non-finite loss claimed");
  if (claimed_after.adam_step != before.adam_step + 1) {
    return Mismatch(Where(claimed) + ": the state after the step is at optimiser step " +
                    std::to_string(claimed_after.adam_step) + ", one step from " + std::to_string(before.adam_step));
  }
  // Measured from the replay (the trusted side) to the claim.
  Result<DifferenceSample> diff = MeasureStepDifference(before, replayed_after, LossFromBits(replayed.loss_bits),
                                                        claimed_after, claimed_loss);
  return WithinLimits(claimed, diff, calibration, "the step");
}

const char* JudgeKindName(JudgeKind kind) {
  switch (kind) {
    case JudgeKind::kBitwise: return "bitwise";
    case JudgeKind::kTolerance: return "tolerance";
    case JudgeKind::kNone: return "none";
  }
  return "?";
}

Result<CalibrationTable> CalibrationTable::Decode(const std::vector<std::string>& encoded) {
  CalibrationTable table;
  for (size_t i = 0; i < encoded.size(); ++i) {
    auto c = DecodeCalibration(encoded[i]);
    if (!c.ok()) return InvalidArgument("tolerance calibration " + std::to_string(i) + ": " + c.status().message());
    auto key = std::make_pair(c->prover_class, c->verifier_class);
    if (!table.by_pair_.emplace(std::move(key), *c).second) {
      return InvalidArgument("two tolerance calibrations for '" + c->prover_class + "' replayed on '" +
                             c->verifier_class + "'");
    }
  }
  return table;
}

const ToleranceCalibration* CalibrationTable::Find(std::string_view prover_class,
                                                   std::string_view verifier_class) const {
  auto it = by_pair_.find(std::make_pair(std::string(prover_class), std::string(verifier_class)));
  return it == by_pair_.end() ? nullptr : &it->second;
}

bool CalibrationTable::CoversProver(std::string_view prover_class) const {
  for (const auto& [pair, c] : by_pair_) {
    if (pair.first == prover_class) return true;
  }
  return false;
}

JudgeKind CalibrationTable::Judge(std::string_view prover_class, std::string_view verifier_class) const {
  if (Find(prover_class, verifier_class)) return JudgeKind::kTolerance;
  return prover_class == verifier_class ? JudgeKind::kBitwise : JudgeKind::kNone;
}

}  // namespace tributary::verifier
