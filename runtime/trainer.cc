#include "runtime/trainer.h"

#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "core/clock.h"
#include "core/files.h"
#include "models/dataset.h"
#include "models/evaluate.h"
#include "models/language_model.h"
#include "models/parameters.h"
#include "runtime/job_spec.h"

namespace tributary::runtime {
namespace {

constexpr std::string_view kCheckpointMagic = "TRIBCKPT1\n";

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

std::span<float> FloatSpan(torch::Tensor& t) {
  return {t.data_ptr<float>(), static_cast<size_t>(t.numel())};
}

}  // namespace

struct Trainer::Impl {
  v1::JobSpec spec;
  std::string job_id;
  TrainingData data;
  WorkerPlacement placement;
  std::shared_ptr<models::LanguageModel> model;
  std::unique_ptr<torch::optim::AdamW> inner;
  torch::Tensor outer_momentum;  // DiLoCo only; undefined until the first outer step
  std::vector<models::Batch> validation;
  uint64_t completed_rounds = 0;

  uint64_t TotalSteps() const { return uint64_t{spec.rounds()} * spec.inner_steps(); }

  // Linear warm-up, then cosine decay to 10% of the peak over the whole job.
  double LearningRate(uint64_t global_step) const {
    const double peak = spec.inner_lr();
    if (global_step < spec.warmup_steps()) {
      return peak * static_cast<double>(global_step + 1) / spec.warmup_steps();
    }
    const double span = std::max<double>(1.0, TotalSteps() - spec.warmup_steps());
    const double progress = std::min(1.0, (global_step - spec.warmup_steps()) / span);
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * progress)));
  }

  void SetLearningRate(double lr) {
    for (auto& group : inner->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
  }

  Result<models::Batch> BatchFor(uint64_t round, uint64_t step) const {
    models::BatchKey key{spec.seed(), placement.shard, placement.num_shards, round, step};
    return data.dataset->TrainBatch(key, static_cast<int>(placement.batch_size),
                                    static_cast<int>(spec.context()));
  }

  // Forward + backward for one batch; returns the loss. Gradients are left in the parameters.
  Result<double> ForwardBackward(uint64_t round, uint64_t step) {
    TRIB_ASSIGN_OR_RETURN(models::Batch batch, BatchFor(round, step));
    inner->zero_grad();
    torch::Tensor loss = model->Loss(batch.inputs, batch.targets);
    loss.backward();
    const double value = loss.item<double>();
    if (!std::isfinite(value)) {
      return FailedPrecondition("training loss became non-finite at round " +
                                std::to_string(round) + " step " + std::to_string(step));
    }
    return value;
  }

  void ClipAndStep(uint64_t global_step) {
    if (spec.grad_clip() > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), spec.grad_clip());
    SetLearningRate(LearningRate(global_step));
    inner->step();
  }

  Result<RoundStats> RunDdpRound(const Averager& average) {
    RoundStats stats;
    const uint64_t round = completed_rounds;
    double loss_sum = 0;
    for (uint64_t step = 0; step < spec.inner_steps(); ++step) {
      auto t0 = Clock::now();
      TRIB_ASSIGN_OR_RETURN(double loss, ForwardBackward(round, step));
      loss_sum += loss;
      torch::Tensor grads = models::FlattenGradients(*model);
      stats.compute_seconds += SecondsSince(t0);
      auto t1 = Clock::now();
      TRIB_RETURN_IF_ERROR(average(FloatSpan(grads)).WithContext(
          "averaging gradients of round " + std::to_string(round) + " step " + std::to_string(step)));
      stats.comm_seconds += SecondsSince(t1);
      auto t2 = Clock::now();
      TRIB_RETURN_IF_ERROR(models::AssignFlatGradients(*model, grads));
      ClipAndStep(round * spec.inner_steps() + step);
      stats.compute_seconds += SecondsSince(t2);
    }
    stats.train_loss = loss_sum / spec.inner_steps();
    return stats;
  }

  Result<RoundStats> RunDilocoRound(const Averager& average) {
    RoundStats stats;
    const uint64_t round = completed_rounds;
    torch::Tensor theta_global = models::FlattenParameters(*model);
    double loss_sum = 0;
    auto t0 = Clock::now();
    for (uint64_t step = 0; step < spec.inner_steps(); ++step) {
      TRIB_ASSIGN_OR_RETURN(double loss, ForwardBackward(round, step));
      loss_sum += loss;
      ClipAndStep(round * spec.inner_steps() + step);
    }
    torch::Tensor delta = theta_global - models::FlattenParameters(*model);
    stats.compute_seconds += SecondsSince(t0);

    auto t1 = Clock::now();
    TRIB_RETURN_IF_ERROR(average(FloatSpan(delta)).WithContext(
        "averaging the pseudo-gradient of round " + std::to_string(round)));
    stats.comm_seconds += SecondsSince(t1);

    auto t2 = Clock::now();
    // Nesterov momentum exactly as torch.optim.SGD(nesterov=True): buf = μ·buf + Δ (buf = Δ on
    // the first step), update = Δ + μ·buf.
    const double mu = spec.outer_momentum();
    torch::NoGradGuard no_grad;
    if (!outer_momentum.defined()) {
      outer_momentum = delta.clone();
    } else {
      outer_momentum.mul_(mu).add_(delta);
    }
    torch::Tensor update = delta.add(outer_momentum, mu);
    theta_global.sub_(update, spec.outer_lr());
    TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(*model, theta_global));
    stats.compute_seconds += SecondsSince(t2);
    stats.train_loss = loss_sum / spec.inner_steps();
    return stats;
  }
};

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;

Result<std::unique_ptr<Trainer>> Trainer::Create(const v1::JobSpec& spec, TrainingData data,
                                                 WorkerPlacement placement) {
  TRIB_RETURN_IF_ERROR(ValidateJobSpec(spec));
  if (!data.dataset) return InvalidArgument("trainer needs a dataset");
  if (placement.num_shards == 0 || placement.shard >= placement.num_shards) {
    return InvalidArgument("shard " + std::to_string(placement.shard) + " is not in 0.." +
                           std::to_string(placement.num_shards));
  }
  if (placement.batch_size == 0) placement.batch_size = spec.batch_size();

  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  impl->job_id = JobIdOf(spec);
  impl->data = std::move(data);
  impl->placement = placement;
  TRIB_ASSIGN_OR_RETURN(impl->model,
                        models::MakeModel(ModelConfigOf(spec, impl->data.vocab_size), spec.seed()));
  impl->model->train();
  impl->inner = std::make_unique<torch::optim::AdamW>(
      impl->model->parameters(),
      torch::optim::AdamWOptions(spec.inner_lr()).weight_decay(spec.weight_decay()).betas({0.9, 0.95}));
  TRIB_ASSIGN_OR_RETURN(impl->validation,
                        impl->data.dataset->ValidationBatches(static_cast<int>(spec.eval_batches()),
                                                              static_cast<int>(spec.batch_size()),
                                                              static_cast<int>(spec.context())));
  // Fail now, not mid-round, if this worker's shard cannot produce batches.
  TRIB_RETURN_IF_ERROR(impl->BatchFor(0, 0).status());
  return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
}

Result<RoundStats> Trainer::RunRound(const Averager& average) {
  if (impl_->completed_rounds >= impl_->spec.rounds()) {
    return FailedPrecondition("all " + std::to_string(impl_->spec.rounds()) +
                              " rounds of the job are done");
  }
  Result<RoundStats> stats = impl_->spec.mode() == v1::MODE_DDP ? impl_->RunDdpRound(average)
                                                                : impl_->RunDilocoRound(average);
  if (!stats.ok()) return stats;
  stats->round = impl_->completed_rounds++;
  stats->tokens = tokens_per_round();
  return stats;
}

Result<double> Trainer::EvalLoss() { return models::EvaluateLoss(*impl_->model, impl_->validation); }

uint64_t Trainer::completed_rounds() const { return impl_->completed_rounds; }
Digest Trainer::ThetaDigest() const { return models::ParameterDigest(*impl_->model); }
int64_t Trainer::num_parameters() const { return models::NumParameters(*impl_->model); }
uint64_t Trainer::tokens_per_round() const {
  return uint64_t{impl_->spec.inner_steps()} * impl_->placement.batch_size * impl_->spec.context();
}

Status Trainer::SaveCheckpoint(const std::string& path) const {
  std::ostringstream payload;
  try {
    torch::serialize::OutputArchive archive;
    archive.write("job_id", c10::IValue(impl_->job_id));
    archive.write("completed_rounds", c10::IValue(static_cast<int64_t>(impl_->completed_rounds)));
    archive.write("shard", c10::IValue(static_cast<int64_t>(impl_->placement.shard)));
    torch::serialize::OutputArchive model_archive;
    impl_->model->save(model_archive);
    archive.write("model", model_archive);
    torch::serialize::OutputArchive optimizer_archive;
    impl_->inner->save(optimizer_archive);
    archive.write("inner_optimizer", optimizer_archive);
    archive.write("has_outer_momentum", c10::IValue(impl_->outer_momentum.defined()));
    if (impl_->outer_momentum.defined()) archive.write("outer_momentum", impl_->outer_momentum);
    archive.save_to(payload);
  } catch (const c10::Error& e) {
    return Internal(std::string("cannot serialise checkpoint: ") + e.what_without_backtrace());
  }
  const std::string bytes = payload.str();
  std::string file(kCheckpointMagic);
  file += DigestToBytes(Sha256Of(bytes));
  file += bytes;
  return WriteFileAtomically(path, file);
}

Status Trainer::LoadCheckpoint(const std::string& path) {
  TRIB_ASSIGN_OR_RETURN(std::string file, ReadWholeFile(path));
  const size_t header = kCheckpointMagic.size() + 32;
  if (file.size() < header || file.compare(0, kCheckpointMagic.size(), kCheckpointMagic) != 0) {
    return Corruption("'" + path + "' is not a Tributary checkpoint");
  }
  std::string_view payload(file.data() + header, file.size() - header);
  if (DigestToBytes(Sha256Of(payload)) != file.substr(kCheckpointMagic.size(), 32)) {
    return Corruption("checkpoint '" + path + "' fails its SHA-256 check (damaged or tampered)");
  }
  try {
    std::istringstream in{std::string(payload)};
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    c10::IValue value;
    archive.read("job_id", value);
    if (value.toStringRef() != impl_->job_id) {
      return FailedPrecondition("checkpoint '" + path + "' belongs to job " + value.toStringRef() +
                                ", not " + impl_->job_id);
    }
    archive.read("shard", value);
    if (value.toInt() != impl_->placement.shard) {
      return FailedPrecondition("checkpoint '" + path + "' was written by shard " +
                                std::to_string(value.toInt()));
    }
    archive.read("completed_rounds", value);
    const int64_t rounds = value.toInt();
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    impl_->model->load(model_archive);
    torch::serialize::InputArchive optimizer_archive;
    archive.read("inner_optimizer", optimizer_archive);
    impl_->inner->load(optimizer_archive);
    archive.read("has_outer_momentum", value);
    if (value.toBool()) {
      torch::Tensor momentum;
      archive.read("outer_momentum", momentum);
      impl_->outer_momentum = momentum;
    } else {
      impl_->outer_momentum = torch::Tensor();
    }
    impl_->completed_rounds = static_cast<uint64_t>(rounds);
  } catch (const c10::Error& e) {
    return Corruption("cannot read checkpoint '" + path + "': " + e.what_without_backtrace());
  }
  return Status::Ok();
}

}  // namespace tributary::runtime

#include <dlfcn.h>

namespace tributary::runtime {

void PinComputeThreads(int threads) {
  threads = std::max(1, threads);
  torch::set_num_threads(threads);
  try {
    torch::set_num_interop_threads(1);
  } catch (const c10::Error&) {
    // Already fixed earlier in this process: inter-op threads can be set only once.
  }
  // OpenBLAS reads OPENBLAS_NUM_THREADS only at load time; set it directly when present.
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    fn(threads);
  }
}

}  // namespace tributary::runtime
