#include "verifier/step_replay.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>

#include "models/dataset.h"
#include "models/language_model.h"
#include "models/parameters.h"
#include "verifier/commitment.h"

namespace tributary::verifier {
namespace {

constexpr std::string_view kAdamLabel = "tributary.verifier.adamw.v1";

void HashFloats(Sha256& h, const std::vector<float>& v) {
  h.UpdateU64(v.size());
  h.Update(std::as_bytes(std::span<const float>(v)));
}

// A read-only view of `v` as a 1-D float32 tensor (torch only reads it: every use copies).
torch::Tensor View(const std::vector<float>& v) {
  return torch::from_blob(const_cast<float*>(v.data()), {static_cast<int64_t>(v.size())},
                          torch::kFloat32);
}

std::vector<float> ToVector(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kFloat32).contiguous().reshape({-1});
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

models::ModelConfig ToModelConfig(const ReplayModelConfig& c) {
  models::ModelConfig m;
  m.kind = c.kind;
  m.vocab_size = c.vocab_size;
  m.n_layer = c.n_layer;
  m.n_head = c.n_head;
  m.d_model = c.d_model;
  m.context = c.context;
  m.mlp_hidden = c.mlp_hidden;
  return m;
}

}  // namespace

Digest OptimizerDigest(const TrainingState& state) {
  Sha256 h;
  h.Update(kAdamLabel);
  h.UpdateU64(static_cast<uint64_t>(state.adam_step));
  HashFloats(h, state.exp_avg);
  HashFloats(h, state.exp_avg_sq);
  return h.Finish();
}

struct StepReplayer::Impl {
  std::shared_ptr<const models::TokenDataset> dataset;
  ReplayModelConfig config;
  std::shared_ptr<models::LanguageModel> model;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  int64_t num_params = 0;

  std::string StateKey(const torch::Tensor& p) const {
    return c10::guts::to_string(p.unsafeGetTensorImpl());
  }

  Status CheckState(const TrainingState& s) const {
    const auto n = static_cast<size_t>(num_params);
    if (s.params.size() != n) {
      return InvalidArgument("state has " + std::to_string(s.params.size()) +
                             " parameters, the model has " + std::to_string(n));
    }
    if (s.adam_step < 0) return InvalidArgument("negative optimiser step");
    const size_t moments = s.adam_step == 0 ? 0 : n;
    if (s.exp_avg.size() != moments || s.exp_avg_sq.size() != moments) {
      return InvalidArgument("optimiser moments must be empty at step 0 and full-length after");
    }
    return Status::Ok();
  }

  // Puts `s` into the model and the optimiser, exactly as the trainer holds it.
  Status Load(const TrainingState& s) {
    TRIB_RETURN_IF_ERROR(CheckState(s));
    TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(*model, View(s.params)));
    auto& state = optimizer->state();
    state.clear();
    if (s.adam_step > 0) {
      int64_t offset = 0;
      for (const auto& p : model->parameters()) {
        const int64_t n = p.numel();
        auto st = std::make_unique<torch::optim::AdamWParamState>();
        st->step(s.adam_step);
        st->exp_avg(View(s.exp_avg).narrow(0, offset, n).clone().view(p.sizes()));
        st->exp_avg_sq(View(s.exp_avg_sq).narrow(0, offset, n).clone().view(p.sizes()));
        state[StateKey(p)] = std::move(st);
        offset += n;
      }
    }
    // A canonical start: the gradient of this step alone, never accumulated onto a buffer.
    for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
    return Status::Ok();
  }

  Result<TrainingState> Save() const {
    TrainingState s;
    s.params = ToVector(models::FlattenParameters(*model));
    const auto params = model->parameters();
    for (const auto& p : params) {
      auto it = optimizer->state().find(StateKey(p));
      if (it == optimizer->state().end()) {
        return Internal("a parameter received no gradient, so it has no optimiser state");
      }
      auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
      if (s.exp_avg.empty()) s.adam_step = st.step();
      if (st.step() != s.adam_step) return Internal("optimiser steps differ between parameters");
      auto a = ToVector(st.exp_avg()), b = ToVector(st.exp_avg_sq());
      s.exp_avg.insert(s.exp_avg.end(), a.begin(), a.end());
      s.exp_avg_sq.insert(s.exp_avg_sq.end(), b.begin(), b.end());
    }
    return s;
  }

  Result<models::Batch> BatchOf(const BatchCoordinates& c) const {
    models::BatchKey key{c.job_seed, c.shard, c.num_shards, c.round, c.step};
    return dataset->TrainBatch(key, c.batch_size, c.context);
  }

  // Forward + backward on the loaded parameters; the gradient is left in the model.
  Result<double> ForwardBackward(const models::Batch& batch) {
    torch::Tensor loss = model->Loss(batch.inputs, batch.targets);
    loss.backward();
    const double value = loss.item<double>();
    if (!std::isfinite(value)) return FailedPrecondition("replayed loss is non-finite");
    return value;
  }

  void SetHyper(const AdamWHyper& h) {
    for (auto& group : optimizer->param_groups()) {
      auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
      o.lr(h.lr).weight_decay(h.weight_decay).betas({h.beta1, h.beta2}).eps(h.eps).amsgrad(false);
    }
  }
};

StepReplayer::StepReplayer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StepReplayer::~StepReplayer() = default;

Result<std::unique_ptr<StepReplayer>> StepReplayer::Create(
    const ReplayModelConfig& config, std::shared_ptr<const models::TokenDataset> dataset,
    int threads) {
  if (!dataset) return InvalidArgument("a step replayer needs the job's dataset");
  if (torch::get_num_threads() != threads) {
    return FailedPrecondition("torch runs " + std::to_string(torch::get_num_threads()) +
                              " intra-op threads but the determinism class pins " +
                              std::to_string(threads));
  }
  auto impl = std::make_unique<Impl>();
  impl->dataset = std::move(dataset);
  impl->config = config;
  TRIB_ASSIGN_OR_RETURN(impl->model, models::MakeModel(ToModelConfig(config), 0));
  impl->model->train();
  impl->optimizer = std::make_unique<torch::optim::AdamW>(impl->model->parameters(),
                                                          torch::optim::AdamWOptions(0.0));
  impl->num_params = models::NumParameters(*impl->model);
  return std::unique_ptr<StepReplayer>(new StepReplayer(std::move(impl)));
}

Result<TrainingState> StepReplayer::InitialState(uint64_t init_seed) {
  TRIB_ASSIGN_OR_RETURN(auto model, models::MakeModel(ToModelConfig(impl_->config), init_seed));
  TrainingState s;
  s.params = ToVector(models::FlattenParameters(*model));
  return s;
}

int64_t StepReplayer::num_parameters() const { return impl_->num_params; }

Result<Digest> StepReplayer::ParametersDigest(const std::vector<float>& params) {
  if (params.size() != static_cast<size_t>(impl_->num_params)) {
    return InvalidArgument("parameter vector has the wrong length");
  }
  TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(*impl_->model, View(params)));
  return models::ParameterDigest(*impl_->model);
}

Result<Digest> StepReplayer::StateDigest(const TrainingState& state) {
  TRIB_RETURN_IF_ERROR(impl_->CheckState(state));
  TRIB_ASSIGN_OR_RETURN(Digest params, ParametersDigest(state.params));
  return StepStateDigest(params, OptimizerDigest(state));
}

Result<StepResult> StepReplayer::LocalStep(const TrainingState& before,
                                           const BatchCoordinates& coords,
                                           const AdamWHyper& hyper) {
  try {
    TRIB_RETURN_IF_ERROR(impl_->Load(before));
    TRIB_ASSIGN_OR_RETURN(models::Batch batch, impl_->BatchOf(coords));
    StepResult out;
    out.batch = models::BatchDigest(batch);
    TRIB_ASSIGN_OR_RETURN(out.loss, impl_->ForwardBackward(batch));
    // The trainer's order: clip the gradient, set this step's learning rate, AdamW step.
    if (hyper.grad_clip > 0)
      torch::nn::utils::clip_grad_norm_(impl_->model->parameters(), hyper.grad_clip);
    impl_->SetHyper(hyper);
    impl_->optimizer->step();
    TRIB_ASSIGN_OR_RETURN(out.after, impl_->Save());
    return out;
  } catch (const c10::Error& e) {
    return Internal(std::string("replay failed inside libtorch: ") + e.what_without_backtrace());
  }
}

Result<GradientResult> StepReplayer::Gradient(const std::vector<float>& params,
                                              const BatchCoordinates& coords) {
  try {
    TRIB_RETURN_IF_ERROR(impl_->Load(TrainingState{params, 0, {}, {}}));
    TRIB_ASSIGN_OR_RETURN(models::Batch batch, impl_->BatchOf(coords));
    GradientResult out;
    out.batch = models::BatchDigest(batch);
    TRIB_ASSIGN_OR_RETURN(out.loss, impl_->ForwardBackward(batch));
    out.gradient = ToVector(models::FlattenGradients(*impl_->model));
    return out;
  } catch (const c10::Error& e) {
    return Internal(std::string("replay failed inside libtorch: ") + e.what_without_backtrace());
  }
}

Result<ReplayedStep> StepReplayer::ReplayLocalStep(const TrainingState& before,
                                                   const BatchCoordinates& coords,
                                                   const AdamWHyper& hyper, TrainingState* after) {
  TRIB_ASSIGN_OR_RETURN(Digest before_digest, StateDigest(before));
  TRIB_ASSIGN_OR_RETURN(StepResult step, LocalStep(before, coords, hyper));
  ReplayedStep r;
  r.state_before = before_digest;
  r.batch = step.batch;
  r.loss_bits = LossBits(step.loss);
  // The model still holds the post-step parameters: digest them without another copy.
  r.update = StepStateDigest(models::ParameterDigest(*impl_->model), OptimizerDigest(step.after));
  if (after) *after = std::move(step.after);
  return r;
}

// ---- local adapter ------------------------------------------------------------------------------

ReplayModelConfig ReplayModelConfigOf(const v1::JobSpec& spec, int vocab_size) {
  ReplayModelConfig c;
  c.kind = spec.model();
  c.vocab_size = vocab_size;
  c.n_layer = static_cast<int>(spec.n_layer());
  c.n_head = static_cast<int>(spec.n_head());
  c.d_model = static_cast<int>(spec.d_model());
  c.context = static_cast<int>(spec.context());
  c.mlp_hidden = static_cast<int>(spec.mlp_hidden());
  return c;
}

double InnerLearningRate(const v1::JobSpec& spec, uint64_t global_step) {
  const double peak = spec.inner_lr();
  if (global_step < spec.warmup_steps()) {
    return peak * static_cast<double>(global_step + 1) / spec.warmup_steps();
  }
  const uint64_t total = uint64_t{spec.rounds()} * spec.inner_steps();
  const double span = std::max<double>(1.0, total - spec.warmup_steps());
  const double progress = std::min(1.0, (global_step - spec.warmup_steps()) / span);
  return peak * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

AdamWHyper HyperFor(const v1::JobSpec& spec, uint64_t round, uint64_t step) {
  AdamWHyper h;
  h.lr = InnerLearningRate(spec, round * spec.inner_steps() + step);
  h.weight_decay = spec.weight_decay();
  h.grad_clip = spec.grad_clip();
  return h;
}

BatchCoordinates BatchFor(const v1::JobSpec& spec, uint32_t shard, uint32_t num_shards,
                          uint32_t batch_size, uint64_t round, uint64_t step) {
  BatchCoordinates c;
  c.job_seed = spec.seed();
  c.shard = shard;
  c.num_shards = num_shards;
  c.round = round;
  c.step = step;
  c.batch_size = static_cast<int>(batch_size == 0 ? spec.batch_size() : batch_size);
  c.context = static_cast<int>(spec.context());
  return c;
}

}  // namespace tributary::verifier
