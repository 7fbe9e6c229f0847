// JobSpec: everything that determines a training run (proto/tributary.proto, message JobSpec).
// Defaults are the embedded demo job; a TOML file or flags override them. The job id is the
// SHA-256 of the spec's deterministic serialisation, so two processes agree on the id iff they
// agree on every field.
#pragma once

#include <string>

#include "core/clock.h"
#include "collectives/robust/aggregator.h"
#include "core/status.h"
#include "proto/tributary.pb.h"

namespace tributary::runtime {

namespace v1 = ::tributary::v1;

v1::JobSpec DefaultJobSpec();
// Applies the keys of a TOML file on top of `spec`. Unknown keys are an error (typos must not
// silently train the wrong thing).
// `tolerance_calibrations` lists calibration files (tributary calibrate --out), relative to the
// TOML file's folder (ApplyTomlString: to `base_dir`).
Status ApplyTomlFile(const std::string& path, v1::JobSpec& spec);
Status ApplyTomlString(const std::string& toml_text, v1::JobSpec& spec, const std::string& base_dir = ".");
// Reads a calibration file (verifier::EncodeCalibration bytes) into spec.tolerance_calibrations.
// InvalidArgument if it does not decode.
Status AddCalibrationFile(const std::string& path, v1::JobSpec& spec);
Status ValidateJobSpec(const v1::JobSpec& spec);
std::string JobIdOf(const v1::JobSpec& spec);  // 16 hex chars
std::string ModeName(v1::Mode mode);            // "ddp" / "diloco" / "diloco-async"
Result<v1::Mode> ParseMode(const std::string& name);
// The heartbeat period and the silence after which the coordinator drops a peer: the spec's
// values, or 1 s and 5 heartbeats when unset. Peer and coordinator must read the same ones.
Millis HeartbeatInterval(const v1::JobSpec& spec);
Millis LivenessTimeout(const v1::JobSpec& spec);
// How a round averages. A verifying synchronous DiLoCo job binds every sent Δ to a signed
// manifest, which only the butterfly can check (no ring member sees another's raw contribution);
// a codec or a robust aggregator needs the butterfly too. Everything else runs the pipelined
// fp32 ring, over streams_per_edge TCP streams per ring edge.
bool BindsContributions(const v1::JobSpec& spec);
bool UsesRing(const v1::JobSpec& spec);
// What every member's averaging runs, and what an audit recomputes with: the spec's codec
// ("fp32" when unset) and aggregator (the mean when unset; an error only for a spec that
// ValidateJobSpec refuses).
std::string JobCodec(const v1::JobSpec& spec);
Result<collectives::robust::AggregatorSpec> JobAggregator(const v1::JobSpec& spec);
uint32_t StreamsPerEdge(const v1::JobSpec& spec);  // 1 when unset
// diloco-async: the inner step (1..inner_steps) before which the previous round's average is
// applied; ceil(inner_steps / 2) when unset.
uint32_t AsyncApplyStep(const v1::JobSpec& spec);
// diloco-async: the share f of its own previous Δ by which a peer's round starts ahead of θ
// (θ − f·Δ_own, the eager start); 0.75 when unset (docs/BENCHMARKS.md, "The eager fraction").
double AsyncEagerFraction(const v1::JobSpec& spec);
// Whether rank 0 evaluates at the end of round `round` (0-based): every eval_every rounds and
// after the last.
bool EvaluatesAfterRound(const v1::JobSpec& spec, uint64_t round);
// Whether that evaluation runs on rank 0's own thread beside the next rounds and is reported
// late (eval_beside_training; never the last round's, which the job's end waits for).
bool EvaluatesBesideTraining(const v1::JobSpec& spec, uint64_t round);
// One line per field, for logs and `--print-spec`.
std::string DescribeJobSpec(const v1::JobSpec& spec);

}  // namespace tributary::runtime
