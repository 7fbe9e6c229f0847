#include "verifier/step_replay.h"

#include "runtime/step_kernel.h"

namespace tributary::verifier {
namespace {

v1::JobSpec SpecOf(const ReplayModelConfig& c) {
  v1::JobSpec spec;
  spec.set_model(c.kind);
  spec.set_n_layer(static_cast<uint32_t>(c.n_layer));
  spec.set_n_head(static_cast<uint32_t>(c.n_head));
  spec.set_d_model(static_cast<uint32_t>(c.d_model));
  spec.set_context(static_cast<uint32_t>(c.context));
  spec.set_mlp_hidden(static_cast<uint32_t>(c.mlp_hidden));
  return spec;
}

}  // namespace

struct StepReplayer::Impl {
  std::unique_ptr<runtime::StepKernel> kernel;
};

StepReplayer::StepReplayer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StepReplayer::~StepReplayer() = default;

Result<std::unique_ptr<StepReplayer>> StepReplayer::Create(
    const ReplayModelConfig& config, std::shared_ptr<const models::TokenDataset> dataset,
    int threads) {
  if (!dataset) return InvalidArgument("a step replayer needs the job's dataset");
  if (runtime::ComputeThreads() != threads) {
    return FailedPrecondition("torch runs " + std::to_string(runtime::ComputeThreads()) +
                              " intra-op threads but the determinism class pins " +
                              std::to_string(threads));
  }
  auto impl = std::make_unique<Impl>();
  TRIB_ASSIGN_OR_RETURN(impl->kernel,
                        runtime::StepKernel::Create(SpecOf(config), std::move(dataset), config.vocab_size));
  return std::unique_ptr<StepReplayer>(new StepReplayer(std::move(impl)));
}

Result<TrainingState> StepReplayer::InitialState(uint64_t init_seed) {
  return impl_->kernel->InitialState(init_seed);
}

int64_t StepReplayer::num_parameters() const { return impl_->kernel->num_parameters(); }

Result<Digest> StepReplayer::ParametersDigest(const std::vector<float>& params) {
  return impl_->kernel->ParametersDigest(params);
}

Result<Digest> StepReplayer::StateDigest(const TrainingState& state) {
  return impl_->kernel->StateDigest(state);
}

Result<StepResult> StepReplayer::LocalStep(const TrainingState& before, const BatchCoordinates& coords,
                                           const AdamWHyper& hyper) {
  return impl_->kernel->LocalStep(before, coords, hyper);
}

Result<GradientResult> StepReplayer::Gradient(const std::vector<float>& params,
                                              const BatchCoordinates& coords) {
  return impl_->kernel->Gradient(params, coords);
}

Result<ReplayedStep> StepReplayer::ReplayLocalStep(const TrainingState& before,
                                                   const BatchCoordinates& coords,
                                                   const AdamWHyper& hyper, TrainingState* after) {
  return impl_->kernel->ReplayLocalStep(before, coords, hyper, after);
}

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
  return runtime::InnerLearningRate(spec, global_step);
}

AdamWHyper HyperFor(const v1::JobSpec& spec, uint64_t round, uint64_t step) {
  return runtime::InnerHyper(spec, round * spec.inner_steps() + step);
}

BatchCoordinates BatchFor(const v1::JobSpec& spec, uint32_t shard, uint32_t num_shards,
                          uint32_t batch_size, uint64_t round, uint64_t step) {
  return runtime::InnerBatch(spec, shard, num_shards, batch_size, round, step);
}

}  // namespace tributary::verifier
