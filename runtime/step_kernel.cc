#include "runtime/step_kernel.h"

#include <cmath>
#include <cstring>

#include "models/parameters.h"
#include "runtime/compute_device.h"
#include "runtime/step_kernel_internal.h"
#include "verifier/commitment.h"

namespace tributary::runtime {
namespace internal {
namespace {

// A read-only view of `v` as a 1-D float32 tensor (every use copies it).
torch::Tensor View(const std::vector<float>& v) {
  return torch::from_blob(const_cast<float*>(v.data()), {static_cast<int64_t>(v.size())},
                          torch::kFloat32);
}

}  // namespace

std::vector<float> ToVector(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous().reshape({-1});
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

Result<double> ForwardBackward(models::LanguageModel& model, const models::Batch& batch) {
  for (auto& p : model.parameters()) p.mutable_grad() = torch::Tensor();
  torch::Tensor loss = model.Loss(batch.inputs, batch.targets);
  loss.backward();
  const double value = loss.item<double>();
  if (!std::isfinite(value)) return FailedPrecondition("the loss is non-finite");
  return value;
}

void ApplyInnerStep(models::LanguageModel& model, torch::optim::AdamW& optimizer,
                    const verifier::AdamWHyper& h) {
  if (h.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model.parameters(), h.grad_clip);
  for (auto& group : optimizer.param_groups()) {
    auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
    o.lr(h.lr).weight_decay(h.weight_decay).betas({h.beta1, h.beta2}).eps(h.eps).amsgrad(false);
  }
  optimizer.step();
}

Result<verifier::TrainingState> CaptureState(const models::LanguageModel& model,
                                             torch::optim::AdamW& optimizer) {
  verifier::TrainingState s;
  s.params = ToVector(models::FlattenParameters(model));
  const auto params = model.parameters();
  size_t with_state = 0;
  for (const auto& p : params) {
    auto it = optimizer.state().find(OptimizerStateKey(optimizer, p));
    if (it == optimizer.state().end()) continue;
    auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
    if (with_state == 0) s.adam_step = st.step();
    if (st.step() != s.adam_step) return Internal("optimiser steps differ between parameters");
    ++with_state;
    auto a = ToVector(st.exp_avg()), b = ToVector(st.exp_avg_sq());
    s.exp_avg.insert(s.exp_avg.end(), a.begin(), a.end());
    s.exp_avg_sq.insert(s.exp_avg_sq.end(), b.begin(), b.end());
  }
  if (with_state != 0 && with_state != params.size()) {
    return Internal("only some parameters have optimiser state");
  }
  if (with_state == 0) s.adam_step = 0;
  return s;
}

Status LoadState(models::LanguageModel& model, torch::optim::AdamW& optimizer,
                 const verifier::TrainingState& s) {
  const auto n = static_cast<size_t>(models::NumParameters(model));
  if (s.params.size() != n) {
    return InvalidArgument("state has " + std::to_string(s.params.size()) +
                           " parameters, the model has " + std::to_string(n));
  }
  if (s.adam_step < 0) return InvalidArgument("negative optimiser step");
  const size_t moments = s.adam_step == 0 ? 0 : n;
  if (s.exp_avg.size() != moments || s.exp_avg_sq.size() != moments) {
    return InvalidArgument("optimiser moments must be empty at step 0 and full-length after");
  }
  TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(model, View(s.params)));
  auto& state = optimizer.state();
  state.clear();
  if (s.adam_step > 0) {
    int64_t offset = 0;
    for (const auto& p : model.parameters()) {
      const int64_t k = p.numel();
      auto st = std::make_unique<torch::optim::AdamWParamState>();
      st->step(s.adam_step);
      st->exp_avg(View(s.exp_avg).narrow(0, offset, k).to(p.device(), false, true).view(p.sizes()));
      st->exp_avg_sq(View(s.exp_avg_sq).narrow(0, offset, k).to(p.device(), false, true).view(p.sizes()));
      state[OptimizerStateKey(optimizer, p)] = std::move(st);
      offset += k;
    }
  }
  for (auto& p : model.parameters()) p.mutable_grad() = torch::Tensor();
  return Status::Ok();
}

Digest StateDigestOfLoaded(const models::LanguageModel& model, const verifier::TrainingState& state) {
  return StateDigestsOfLoaded(model, state).state;
}

StateDigests StateDigestsOfLoaded(const models::LanguageModel& model, const verifier::TrainingState& state) {
  StateDigests d;
  d.halves = {models::ParameterDigest(model), verifier::OptimizerDigest(state)};
  d.state = verifier::StepStateDigest(d.halves.parameters, d.halves.optimizer);
  return d;
}

}  // namespace internal

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

verifier::AdamWHyper InnerHyper(const v1::JobSpec& spec, uint64_t global_step) {
  verifier::AdamWHyper h;
  h.lr = InnerLearningRate(spec, global_step);
  h.weight_decay = spec.weight_decay();
  h.grad_clip = spec.grad_clip();
  return h;
}

verifier::BatchCoordinates InnerBatch(const v1::JobSpec& spec, uint32_t shard, uint32_t num_shards,
                                      uint32_t batch_size, uint64_t round, uint64_t step) {
  verifier::BatchCoordinates c;
  c.job_seed = spec.seed();
  c.shard = shard;
  c.num_shards = num_shards;
  c.round = round;
  c.step = step;
  c.batch_size = static_cast<int>(batch_size == 0 ? spec.batch_size() : batch_size);
  c.context = static_cast<int>(spec.context());
  return c;
}

int ComputeThreads() { return torch::get_num_threads(); }

namespace internal {
models::ModelConfig ModelConfigOf(const v1::JobSpec& spec, int vocab_size) {
  models::ModelConfig c;
  c.kind = spec.model();
  c.vocab_size = vocab_size;
  c.n_layer = static_cast<int>(spec.n_layer());
  c.n_head = static_cast<int>(spec.n_head());
  c.d_model = static_cast<int>(spec.d_model());
  c.context = static_cast<int>(spec.context());
  c.mlp_hidden = static_cast<int>(spec.mlp_hidden());
  return c;
}
}  // namespace internal

Result<Digest> InitialThetaDigest(const v1::JobSpec& spec, int vocab_size) {
  TRIB_ASSIGN_OR_RETURN(auto model, models::MakeModel(internal::ModelConfigOf(spec, vocab_size), spec.seed()));
  return models::ParameterDigest(*model);
}

struct StepKernel::Impl {
  models::ModelConfig config;
  std::shared_ptr<const models::TokenDataset> dataset;
  std::shared_ptr<models::LanguageModel> model;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  int64_t num_params = 0;

  Result<models::Batch> BatchOf(const verifier::BatchCoordinates& c) const {
    models::BatchKey key{c.job_seed, c.shard, c.num_shards, c.round, c.step};
    return dataset->TrainBatch(key, c.batch_size, c.context);
  }
};

StepKernel::StepKernel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StepKernel::~StepKernel() = default;

Result<std::unique_ptr<StepKernel>> StepKernel::Create(const v1::JobSpec& spec,
                                                       std::shared_ptr<const models::TokenDataset> dataset,
                                                       int vocab_size, std::string_view device) {
  if (!dataset) return InvalidArgument("a step kernel needs the job's dataset");
  TRIB_ASSIGN_OR_RETURN(const std::string resolved, ResolveComputeDevice(device));
  auto impl = std::make_unique<Impl>();
  impl->config = internal::ModelConfigOf(spec, vocab_size);
  impl->dataset = std::move(dataset);
  TRIB_ASSIGN_OR_RETURN(impl->model, models::MakeModel(impl->config, 0));
  impl->model->to(torch::Device(resolved));
  impl->model->train();
  impl->optimizer = std::make_unique<torch::optim::AdamW>(impl->model->parameters(),
                                                          torch::optim::AdamWOptions(0.0));
  impl->num_params = models::NumParameters(*impl->model);
  return std::unique_ptr<StepKernel>(new StepKernel(std::move(impl)));
}

int64_t StepKernel::num_parameters() const { return impl_->num_params; }

Result<verifier::TrainingState> StepKernel::InitialState(uint64_t init_seed) {
  TRIB_ASSIGN_OR_RETURN(auto model, models::MakeModel(impl_->config, init_seed));
  verifier::TrainingState s;
  s.params = internal::ToVector(models::FlattenParameters(*model));
  return s;
}

Result<Digest> StepKernel::ParametersDigest(const std::vector<float>& params) {
  if (params.size() != static_cast<size_t>(impl_->num_params)) {
    return InvalidArgument("parameter vector has the wrong length");
  }
  TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(*impl_->model, internal::View(params)));
  return models::ParameterDigest(*impl_->model);
}

Result<Digest> StepKernel::StateDigest(const verifier::TrainingState& state) {
  TRIB_RETURN_IF_ERROR(internal::LoadState(*impl_->model, *impl_->optimizer, state));
  return internal::StateDigestOfLoaded(*impl_->model, state);
}

Result<verifier::StepResult> StepKernel::LocalStep(const verifier::TrainingState& before,
                                                   const verifier::BatchCoordinates& coords,
                                                   const verifier::AdamWHyper& hyper) {
  try {
    TRIB_RETURN_IF_ERROR(internal::LoadState(*impl_->model, *impl_->optimizer, before));
    TRIB_ASSIGN_OR_RETURN(models::Batch batch, impl_->BatchOf(coords));
    verifier::StepResult out;
    out.batch = models::BatchDigest(batch);
    TRIB_ASSIGN_OR_RETURN(out.loss, internal::ForwardBackward(*impl_->model, batch));
    internal::ApplyInnerStep(*impl_->model, *impl_->optimizer, hyper);
    TRIB_ASSIGN_OR_RETURN(out.after, internal::CaptureState(*impl_->model, *impl_->optimizer));
    return out;
  } catch (const c10::Error& e) {
    return Internal(std::string("replay failed inside libtorch: ") + e.what_without_backtrace());
  }
}

Result<verifier::GradientResult> StepKernel::Gradient(const std::vector<float>& params,
                                                      const verifier::BatchCoordinates& coords) {
  try {
    TRIB_RETURN_IF_ERROR(internal::LoadState(*impl_->model, *impl_->optimizer,
                                             verifier::TrainingState{params, 0, {}, {}}));
    TRIB_ASSIGN_OR_RETURN(models::Batch batch, impl_->BatchOf(coords));
    verifier::GradientResult out;
    out.batch = models::BatchDigest(batch);
    TRIB_ASSIGN_OR_RETURN(out.loss, internal::ForwardBackward(*impl_->model, batch));
    out.gradient = internal::ToVector(models::FlattenGradients(*impl_->model));
    return out;
  } catch (const c10::Error& e) {
    return Internal(std::string("replay failed inside libtorch: ") + e.what_without_backtrace());
  }
}

Result<verifier::ReplayedStep> StepKernel::ReplayLocalStep(const verifier::TrainingState& before,
                                                           const verifier::BatchCoordinates& coords,
                                                           const verifier::AdamWHyper& hyper,
                                                           verifier::TrainingState* after) {
  TRIB_ASSIGN_OR_RETURN(Digest before_digest, StateDigest(before));
  TRIB_ASSIGN_OR_RETURN(verifier::StepResult step, LocalStep(before, coords, hyper));
  verifier::ReplayedStep r;
  r.state_before = before_digest;
  r.batch = step.batch;
  r.loss_bits = verifier::LossBits(step.loss);
  // The model still holds the post-step parameters: digest them without another copy.
  r.update = internal::StateDigestOfLoaded(*impl_->model, step.after);
  if (after) *after = std::move(step.after);
  return r;
}

Result<verifier::ReplayedStep> StepKernel::ReplayGradientStep(const verifier::TrainingState& before,
                                                              const verifier::BatchCoordinates& coords) {
  TRIB_ASSIGN_OR_RETURN(Digest before_digest, StateDigest(before));
  TRIB_ASSIGN_OR_RETURN(verifier::GradientResult g, Gradient(before.params, coords));
  verifier::ReplayedStep r;
  r.state_before = before_digest;
  r.batch = g.batch;
  r.loss_bits = verifier::LossBits(g.loss);
  r.update = verifier::FloatsDigest(g.gradient);
  return r;
}

}  // namespace tributary::runtime
