// The inner-step arithmetic shared by runtime::Trainer and runtime::StepKernel. Internal to
// runtime/ (it includes torch): only trainer.cc and step_kernel.cc include it.
#pragma once

#include <sstream>
#include <type_traits>

#include <torch/torch.h>

#include "core/digest.h"
#include "core/status.h"
#include "models/dataset.h"
#include "models/language_model.h"
#include "proto/tributary.pb.h"
#include "verifier/chain_ends.h"
#include "verifier/training_state.h"

namespace tributary::runtime::internal {

// The key under which `optimizer` keeps the state of parameter `p`. libtorch keys it by the
// parameter's TensorImpl: up to 1.13 as the address printed to text, from 2.0 as the pointer.
template <typename Optimizer>
auto OptimizerStateKey(Optimizer& optimizer, const torch::Tensor& p) {
  using Key = typename std::decay_t<decltype(optimizer.state())>::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;  // what c10::guts::to_string produced for the pointer
    text << p.unsafeGetTensorImpl();
    return Key(text.str());
  } else {
    return Key(p.unsafeGetTensorImpl());
  }
}

// The spec's model fields as a models::ModelConfig with `vocab_size` tokens.
models::ModelConfig ModelConfigOf(const v1::JobSpec& spec, int vocab_size);

// The values of `t` as float32, flattened, copied to the CPU.
std::vector<float> ToVector(const torch::Tensor& t);

// Forward + backward on `batch`, leaving the gradient in the parameters. Every gradient is reset
// to undefined first (set-to-none), so a step's gradient is its own bits and never `0 + g` (which
// would turn a −0.0 entry into +0.0 and change a gradient digest). FailedPrecondition if the loss
// is non-finite.
Result<double> ForwardBackward(models::LanguageModel& model, const models::Batch& batch);
// Clip the gradient (when hyper.grad_clip > 0), set every optimiser setting of this step, and
// take the AdamW step: the trainer's order.
void ApplyInnerStep(models::LanguageModel& model, torch::optim::AdamW& optimizer,
                    const verifier::AdamWHyper& hyper);
// The model's θ and the optimiser's state as flat vectors. Internal if the parameters' optimiser
// states disagree on the step count (or only some exist).
Result<verifier::TrainingState> CaptureState(const models::LanguageModel& model,
                                             torch::optim::AdamW& optimizer);
// Puts `state` into the model and the optimiser (adam_step 0: no optimiser state at all).
// InvalidArgument for a malformed state.
Status LoadState(models::LanguageModel& model, torch::optim::AdamW& optimizer,
                 const verifier::TrainingState& state);
// verifier::StepStateDigest(ParameterDigest(model), OptimizerDigest(state)) for a model that
// currently holds state.params.
Digest StateDigestOfLoaded(const models::LanguageModel& model, const verifier::TrainingState& state);
// The same digest with its two halves: ParameterDigest(model) and OptimizerDigest(state).
struct StateDigests {
  verifier::StateHalves halves;
  Digest state{};
};
StateDigests StateDigestsOfLoaded(const models::LanguageModel& model, const verifier::TrainingState& state);

}  // namespace tributary::runtime::internal
