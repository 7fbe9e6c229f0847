#include "runtime/job_spec.h"

#include <algorithm>
#include <filesystem>
#include <toml++/toml.h>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>

#include "collectives/codec/codec.h"
#include "collectives/parallel_ring.h"
#include "collectives/robust/aggregator.h"
#include "core/digest.h"
#include "core/files.h"
#include "verifier/replay.h"

namespace tributary::runtime {

v1::JobSpec DefaultJobSpec() {
  v1::JobSpec s;
  s.set_name("moby-dick-chargpt");
  s.set_seed(1234);
  s.set_mode(v1::MODE_DILOCO);
  s.set_model("gpt");
  s.set_n_layer(2);
  s.set_n_head(4);
  s.set_d_model(128);
  s.set_context(64);
  s.set_mlp_hidden(256);
  s.set_batch_size(32);
  s.set_validation_fraction(0.1);
  s.set_eval_batches(16);
  s.set_inner_steps(50);
  s.set_rounds(8);
  s.set_inner_lr(3e-3);
  s.set_weight_decay(0.01);
  s.set_warmup_steps(20);
  // Plain averaging of the pseudo-gradients beat Nesterov (lr 0.7, μ 0.9, the DiLoCo paper's
  // choice for hundreds of outer steps) at this job's 4–8 outer steps: docs/BENCHMARKS.md (c).
  s.set_outer_lr(1.0);
  s.set_outer_momentum(0.0);
  s.set_grad_clip(1.0);
  s.set_num_peers(4);
  s.set_round_timeout_ms(120000);
  s.set_checkpoint_every(0);
  s.set_streams(1);
  return s;
}

std::string ModeName(v1::Mode mode) {
  switch (mode) {
    case v1::MODE_DDP: return "ddp";
    case v1::MODE_DILOCO: return "diloco";
    case v1::MODE_DILOCO_ASYNC: return "diloco-async";
    default: return "unspecified";
  }
}

Result<v1::Mode> ParseMode(const std::string& name) {
  if (name == "ddp") return v1::MODE_DDP;
  if (name == "diloco") return v1::MODE_DILOCO;
  if (name == "diloco-async") return v1::MODE_DILOCO_ASYNC;
  return InvalidArgument("unknown mode '" + name + "' (expected ddp, diloco or diloco-async)");
}

namespace {

template <typename T>
Result<T> Get(const toml::node& node, const std::string& key) {
  auto v = node.value<T>();
  if (!v) return InvalidArgument("job key '" + key + "' has the wrong type");
  return *v;
}

Status ApplyTable(const toml::table& table, v1::JobSpec& s, const std::filesystem::path& base_dir) {
  for (const auto& [k, node] : table) {
    const std::string key(k.str());
    auto as_u32 = [&](auto setter) -> Status {
      TRIB_ASSIGN_OR_RETURN(int64_t v, Get<int64_t>(node, key));
      if (v < 0 || v > UINT32_MAX) return InvalidArgument("job key '" + key + "' out of range");
      (s.*setter)(static_cast<uint32_t>(v));
      return Status::Ok();
    };
    auto as_f64 = [&](auto setter) -> Status {
      TRIB_ASSIGN_OR_RETURN(double v, Get<double>(node, key));
      (s.*setter)(v);
      return Status::Ok();
    };
    Status st;
    if (key == "name") {
      TRIB_ASSIGN_OR_RETURN(std::string v, Get<std::string>(node, key));
      s.set_name(v);
    } else if (key == "seed") {
      TRIB_ASSIGN_OR_RETURN(int64_t v, Get<int64_t>(node, key));
      s.set_seed(static_cast<uint64_t>(v));
    } else if (key == "eval_beside_training" || key == "async_apply_when_ready") {
      const auto* flag = node.as_boolean();  // strictly: value<bool>() would take 1 as true
      if (!flag) return InvalidArgument("job key '" + key + "' must be true or false");
      if (key == "eval_beside_training") s.set_eval_beside_training(flag->get());
      if (key == "async_apply_when_ready") s.set_async_apply_when_ready(flag->get());
    } else if (key == "mode") {
      TRIB_ASSIGN_OR_RETURN(std::string v, Get<std::string>(node, key));
      TRIB_ASSIGN_OR_RETURN(v1::Mode m, ParseMode(v));
      s.set_mode(m);
    } else if (key == "codec") {
      TRIB_ASSIGN_OR_RETURN(std::string v, Get<std::string>(node, key));
      s.set_codec(v);
    } else if (key == "aggregator") {
      TRIB_ASSIGN_OR_RETURN(std::string v, Get<std::string>(node, key));
      s.set_aggregator(v);
    } else if (key == "model") {
      TRIB_ASSIGN_OR_RETURN(std::string v, Get<std::string>(node, key));
      s.set_model(v);
    } else if (key == "n_layer") st = as_u32(&v1::JobSpec::set_n_layer);
    else if (key == "n_head") st = as_u32(&v1::JobSpec::set_n_head);
    else if (key == "d_model") st = as_u32(&v1::JobSpec::set_d_model);
    else if (key == "context") st = as_u32(&v1::JobSpec::set_context);
    else if (key == "mlp_hidden") st = as_u32(&v1::JobSpec::set_mlp_hidden);
    else if (key == "batch_size") st = as_u32(&v1::JobSpec::set_batch_size);
    else if (key == "validation_fraction") st = as_f64(&v1::JobSpec::set_validation_fraction);
    else if (key == "eval_batches") st = as_u32(&v1::JobSpec::set_eval_batches);
    else if (key == "inner_steps") st = as_u32(&v1::JobSpec::set_inner_steps);
    else if (key == "rounds") st = as_u32(&v1::JobSpec::set_rounds);
    else if (key == "inner_lr") st = as_f64(&v1::JobSpec::set_inner_lr);
    else if (key == "weight_decay") st = as_f64(&v1::JobSpec::set_weight_decay);
    else if (key == "warmup_steps") st = as_u32(&v1::JobSpec::set_warmup_steps);
    else if (key == "outer_lr") st = as_f64(&v1::JobSpec::set_outer_lr);
    else if (key == "outer_momentum") st = as_f64(&v1::JobSpec::set_outer_momentum);
    else if (key == "outer_warmup_rounds") st = as_u32(&v1::JobSpec::set_outer_warmup_rounds);
    else if (key == "async_apply_step") st = as_u32(&v1::JobSpec::set_async_apply_step);
    else if (key == "async_eager_fraction") st = as_f64(&v1::JobSpec::set_async_eager_fraction);
    else if (key == "eval_every") st = as_u32(&v1::JobSpec::set_eval_every);
    else if (key == "grad_clip") st = as_f64(&v1::JobSpec::set_grad_clip);
    else if (key == "num_peers") st = as_u32(&v1::JobSpec::set_num_peers);
    else if (key == "round_timeout_ms") st = as_u32(&v1::JobSpec::set_round_timeout_ms);
    else if (key == "checkpoint_every") st = as_u32(&v1::JobSpec::set_checkpoint_every);
    else if (key == "min_peers") st = as_u32(&v1::JobSpec::set_min_peers);
    else if (key == "heartbeat_ms") st = as_u32(&v1::JobSpec::set_heartbeat_ms);
    else if (key == "liveness_timeout_ms") st = as_u32(&v1::JobSpec::set_liveness_timeout_ms);
    else if (key == "group_size") st = as_u32(&v1::JobSpec::set_group_size);
    else if (key == "streams") st = as_u32(&v1::JobSpec::set_streams);
    else if (key == "gather_ms") st = as_u32(&v1::JobSpec::set_gather_ms);
    else if (key == "verify_samples") st = as_u32(&v1::JobSpec::set_verify_samples);
    else if (key == "verifiers_per_step") st = as_u32(&v1::JobSpec::set_verifiers_per_step);
    else if (key == "verify_timeout_ms") st = as_u32(&v1::JobSpec::set_verify_timeout_ms);
    else if (key == "opening_bulk_min_bytes") {
      TRIB_ASSIGN_OR_RETURN(int64_t v, Get<int64_t>(node, key));
      if (v < 0) return InvalidArgument("job key 'opening_bulk_min_bytes' must not be negative");
      s.set_opening_bulk_min_bytes(static_cast<uint64_t>(v));
    }
    else if (key == "initial_theta_digest") {  // θ_0 pinned by the job's author (hex SHA-256)
      TRIB_ASSIGN_OR_RETURN(std::string v, Get<std::string>(node, key));
      auto d = DigestFromHex(v);
      if (!d.ok()) return InvalidArgument("job key 'initial_theta_digest' must be 64 hex characters: " + d.status().message());
      s.set_initial_theta_digest(DigestToBytes(*d));
    }
    else if (key == "admission") {
      TRIB_ASSIGN_OR_RETURN(std::string v, Get<std::string>(node, key));
      if (v == "open") s.set_admission(v1::ADMISSION_OPEN);
      else if (v == "allowlist") s.set_admission(v1::ADMISSION_ALLOWLIST);
      else if (v == "invite") s.set_admission(v1::ADMISSION_INVITE);
      else return InvalidArgument("admission must be open, allowlist or invite, not '" + v + "'");
    } else if (key == "tolerance_calibrations") {
      const toml::array* list = node.as_array();
      if (!list) return InvalidArgument("job key 'tolerance_calibrations' must be an array of file names");
      for (const auto& item : *list) {
        auto file = item.value<std::string>();
        if (!file) return InvalidArgument("job key 'tolerance_calibrations' must hold file names");
        const std::filesystem::path path(*file);
        TRIB_RETURN_IF_ERROR(AddCalibrationFile((path.is_absolute() ? path : base_dir / path).string(), s));
      }
    } else if (key == "allowed_keys" || key == "invite_tokens") {
      const toml::array* list = node.as_array();
      if (!list) return InvalidArgument("job key '" + key + "' must be an array of strings");
      for (const auto& item : *list) {
        auto text = item.value<std::string>();
        if (!text) return InvalidArgument("job key '" + key + "' must hold strings");
        if (key == "allowed_keys") {
          if (text->size() != 64) return InvalidArgument("allowed key '" + *text + "' is not 64 hex characters");
          s.add_allowed_keys(*text);
        } else {
          // Only the hash travels in the spec, so peers never learn each other's tokens.
          s.add_invite_tokens(ToHex(Sha256Of(*text)));
        }
      }
    } else return InvalidArgument("unknown job key '" + key + "'");
    TRIB_RETURN_IF_ERROR(st);
  }
  return Status::Ok();
}

}  // namespace

Status ApplyTomlString(const std::string& toml_text, v1::JobSpec& spec, const std::string& base_dir) {
  // Debian's toml++ is built with exceptions; they stop here and become a Status.
  toml::table root;
  try {
    root = toml::parse(toml_text);
  } catch (const toml::parse_error& err) {
    return InvalidArgument("job TOML line " + std::to_string(err.source().begin.line) + ": " +
                           std::string(err.description()));
  }
  // Keys may sit at top level or under a [job] table.
  if (const toml::table* job = root["job"].as_table()) {
    for (const auto& [k, node] : root) {
      if (k.str() != "job") return InvalidArgument("unknown top-level key '" + std::string(k.str()) + "'");
    }
    return ApplyTable(*job, spec, base_dir);
  }
  return ApplyTable(root, spec, base_dir);
}

Status ApplyTomlFile(const std::string& path, v1::JobSpec& spec) {
  auto text = ReadWholeFile(path);
  if (!text.ok()) return text.status().WithContext("job file");
  const std::filesystem::path folder = std::filesystem::path(path).parent_path();
  return ApplyTomlString(*text, spec, folder.empty() ? "." : folder.string()).WithContext(path);
}

Status AddCalibrationFile(const std::string& path, v1::JobSpec& spec) {
  auto bytes = ReadWholeFile(path);
  if (!bytes.ok()) return bytes.status().WithContext("tolerance calibration");
  auto calibration = verifier::DecodeCalibration(*bytes);
  if (!calibration.ok()) return InvalidArgument("tolerance calibration " + path + ": " + calibration.status().message());
  spec.add_tolerance_calibrations(*bytes);
  return Status::Ok();
}

Status ValidateJobSpec(const v1::JobSpec& s) {
  auto fail = [](const std::string& m) { return InvalidArgument("invalid job: " + m); };
  if (s.mode() != v1::MODE_DDP && s.mode() != v1::MODE_DILOCO && s.mode() != v1::MODE_DILOCO_ASYNC) {
    return fail("mode must be ddp, diloco or diloco-async");
  }
  if (s.model() != "gpt" && s.model() != "mlp") return fail("model must be gpt or mlp");
  if (s.n_layer() == 0 || s.n_head() == 0 || s.d_model() == 0) return fail("model sizes must be positive");
  if (s.d_model() % s.n_head() != 0) return fail("d_model must be divisible by n_head");
  if (s.context() < 2) return fail("context must be at least 2");
  if (s.batch_size() == 0) return fail("batch_size must be positive");
  if (s.inner_steps() == 0) return fail("inner_steps must be positive");
  if (s.rounds() == 0) return fail("rounds must be positive");
  if (!(s.inner_lr() > 0)) return fail("inner_lr must be positive");
  if (!(s.validation_fraction() > 0 && s.validation_fraction() < 0.5)) {
    return fail("validation_fraction must be in (0, 0.5)");
  }
  if (s.eval_batches() == 0) return fail("eval_batches must be positive");
  if (s.num_peers() == 0 || s.num_peers() > 1024) return fail("num_peers must be in 1..1024");
  if (s.round_timeout_ms() < 100) return fail("round_timeout_ms must be at least 100");
  if (s.min_peers() > s.num_peers()) return fail("min_peers cannot exceed num_peers");
  if (s.admission() == v1::ADMISSION_ALLOWLIST && s.allowed_keys_size() == 0) {
    return fail("admission allowlist needs allowed_keys");
  }
  if (s.admission() == v1::ADMISSION_INVITE && s.invite_tokens_size() == 0) {
    return fail("admission invite needs invite_tokens");
  }
  if (s.mode() != v1::MODE_DDP && !(s.outer_lr() > 0)) return fail("outer_lr must be positive");
  if (!(s.outer_momentum() >= 0 && s.outer_momentum() < 1)) return fail("outer_momentum must be in [0,1)");
  if (!s.codec().empty()) {
    auto codec = collectives::codec::MakeCodec(s.codec());
    if (!codec.ok()) return fail("codec: " + codec.status().message());
  }
  if (!s.aggregator().empty()) {
    auto agg = collectives::robust::ParseAggregator(s.aggregator());
    if (!agg.ok()) return fail("aggregator: " + agg.status().message());
  }
  // Replays start from an opened local state; DDP steps would need the averaged gradients too.
  if (s.verify_samples() > 0 && s.mode() == v1::MODE_DILOCO_ASYNC) {
    return fail("verify_samples needs diloco or ddp mode (async DiLoCo starts each round from a private point)");
  }
  if (s.verify_samples() > s.inner_steps()) return fail("verify_samples cannot exceed inner_steps");
  if (!s.initial_theta_digest().empty() && s.initial_theta_digest().size() != 32) {
    return fail("initial_theta_digest must be 32 bytes (a SHA-256), not " + std::to_string(s.initial_theta_digest().size()));
  }
  // Tolerance judges local (DiLoCo inner) steps from their post-step state; a DDP step's
  // contribution is a raw gradient, which only a bitwise replay checks.
  if (s.tolerance_calibrations_size() > 0) {
    if (s.mode() != v1::MODE_DILOCO) return fail("tolerance_calibrations need diloco mode");
    auto table = verifier::CalibrationTable::Decode({s.tolerance_calibrations().begin(), s.tolerance_calibrations().end()});
    if (!table.ok()) return fail(table.status().message());
  }
  if (s.async_apply_step() > 0 && s.mode() != v1::MODE_DILOCO_ASYNC) {
    return fail("async_apply_step applies to diloco-async only");
  }
  if (s.async_apply_step() > s.inner_steps()) return fail("async_apply_step cannot exceed inner_steps");
  if (!(s.async_eager_fraction() >= 0 && s.async_eager_fraction() <= 1)) {
    return fail("async_eager_fraction must be in (0,1] (0 = the default, 0.75)");
  }
  if (s.async_apply_when_ready() && s.mode() != v1::MODE_DILOCO_ASYNC) {
    return fail("async_apply_when_ready applies to diloco-async only");
  }
  if (s.async_eager_fraction() > 0 && s.mode() != v1::MODE_DILOCO_ASYNC) {
    return fail("async_eager_fraction applies to diloco-async only");
  }
  if (s.streams() > collectives::ParallelRing::kMaxStreams) {
    return fail("streams must be 0.." + std::to_string(collectives::ParallelRing::kMaxStreams));
  }
  if (s.streams() > 1 && !UsesRing(s)) {
    return fail("streams > 1 needs the ring path: codec fp32, aggregator mean and, in diloco mode, "
                "no verification (those run the butterfly over one connection per pair)");
  }
  // Groups end a round holding different states that the next round averages (θ and outer
  // momentum, exactly): defined for synchronous DiLoCo. DDP's shared AdamW moments and the
  // async mode's one-round-late Δ are not averaged across groups.
  if (s.group_size() == 1) return fail("group_size must be 0 (one group) or at least 2");
  if (s.group_size() > 1 && s.mode() != v1::MODE_DILOCO) return fail("group_size needs diloco mode");
  return Status::Ok();
}

std::string JobIdOf(const v1::JobSpec& spec) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    spec.SerializeToCodedStream(&coded);
  }
  return ToHex(Sha256Of(bytes)).substr(0, 16);
}

std::string DescribeJobSpec(const v1::JobSpec& spec) {
  std::string out;
  google::protobuf::TextFormat::PrintToString(spec, &out);
  return out;
}

bool BindsContributions(const v1::JobSpec& spec) {
  return spec.verify_samples() > 0 && spec.mode() == v1::MODE_DILOCO;
}

std::string JobCodec(const v1::JobSpec& spec) { return spec.codec().empty() ? "fp32" : spec.codec(); }

Result<collectives::robust::AggregatorSpec> JobAggregator(const v1::JobSpec& spec) {
  if (spec.aggregator().empty()) return collectives::robust::AggregatorSpec{};
  return collectives::robust::ParseAggregator(spec.aggregator());
}

bool UsesRing(const v1::JobSpec& spec) {
  return (spec.codec().empty() || spec.codec() == "fp32") &&
         (spec.aggregator().empty() || spec.aggregator() == "mean") && !BindsContributions(spec);
}

uint32_t StreamsPerEdge(const v1::JobSpec& spec) { return spec.streams() > 1 ? spec.streams() : 1; }

double AsyncEagerFraction(const v1::JobSpec& spec) {
  return spec.async_eager_fraction() > 0 ? spec.async_eager_fraction() : 0.75;
}

uint32_t AsyncApplyStep(const v1::JobSpec& spec) {
  if (spec.async_apply_step() > 0) return std::min(spec.async_apply_step(), spec.inner_steps());
  return std::max<uint32_t>(1, (spec.inner_steps() + 1) / 2);
}

bool EvaluatesAfterRound(const v1::JobSpec& spec, uint64_t round) {
  const uint64_t every = spec.eval_every() > 1 ? spec.eval_every() : 1;
  return (round + 1) % every == 0 || round + 1 >= spec.rounds();
}

bool EvaluatesBesideTraining(const v1::JobSpec& spec, uint64_t round) {
  return spec.eval_beside_training() && EvaluatesAfterRound(spec, round) && round + 1 < spec.rounds();
}

Millis HeartbeatInterval(const v1::JobSpec& spec) {
  return Millis(spec.heartbeat_ms() ? spec.heartbeat_ms() : 1000);
}

Millis LivenessTimeout(const v1::JobSpec& spec) {
  return spec.liveness_timeout_ms() ? Millis(spec.liveness_timeout_ms()) : 5 * HeartbeatInterval(spec);
}

}  // namespace tributary::runtime
