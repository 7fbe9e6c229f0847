// A module's parameters as one flat float32 vector, in named_parameters() order: the unit peers
// exchange, average and hash.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/digest.h"
#include "core/status.h"

namespace tributary::models {

int64_t NumParameters(const torch::nn::Module& module);

// A fresh contiguous 1-D float32 CPU tensor (never aliases the parameters).
torch::Tensor FlattenParameters(const torch::nn::Module& module);
// Same layout; zeros for parameters whose grad is undefined.
torch::Tensor FlattenGradients(const torch::nn::Module& module);

// Copy `flat` back into the parameters (values) or their grads (allocated if undefined), without
// recording autograd history. InvalidArgument, leaving the module untouched, unless `flat` is a
// 1-D float32 CPU tensor with exactly NumParameters(module) elements.
Status AssignFlatParameters(torch::nn::Module& module, const torch::Tensor& flat);
Status AssignFlatGradients(torch::nn::Module& module, const torch::Tensor& flat);

// SHA-256 over, for each parameter in order: u64 name length, the name, u64 rank, each dim as
// u64, then its values as little-endian float32 bytes. Equal digests <=> bit-identical parameters
// under identical names and shapes.
Digest ParameterDigest(const torch::nn::Module& module);

// A module's parameter names and shapes, in named_parameters() order: enough to digest its
// flattened values without the module (on another thread while the module trains on).
struct ParameterLayout {
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
};
ParameterLayout LayoutOf(const torch::nn::Module& module);
// ParameterDigest of a module with `layout` whose FlattenParameters() is `flat`. InvalidArgument
// when `flat` does not hold exactly the layout's element count.
Result<Digest> ParameterDigest(const ParameterLayout& layout, std::span<const float> flat);

// SHA-256 of the tensor's values as contiguous little-endian float32 bytes (shape not included),
// so it equals Sha256Of() of the raw bytes of FlattenParameters()/FlattenGradients() payloads.
// Non-float32 tensors are converted to float32 first.
Digest TensorDigest(const torch::Tensor& tensor);

}  // namespace tributary::models
