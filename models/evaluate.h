// Validation loss of a model on fixed batches (e.g. TokenDataset::ValidationBatches).
#pragma once

#include <vector>

#include "core/status.h"
#include "models/dataset.h"
#include "models/language_model.h"

namespace tributary::models {

// Mean over batches of each batch's mean cross-entropy, computed in eval mode without autograd;
// the model's previous train/eval mode is restored. InvalidArgument if `batches` is empty or a
// batch does not fit the model (ValidateTokens, or targets' shape differs from inputs').
Result<double> EvaluateLoss(LanguageModel& model, const std::vector<Batch>& batches);

}  // namespace tributary::models
