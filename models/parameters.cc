#include "models/parameters.h"

#include <bit>
#include <span>

namespace tributary::models {
namespace {

static_assert(std::endian::native == std::endian::little, "canonical bytes assume little-endian");

torch::Tensor AsFloatCpu(const torch::Tensor& t) {
  return t.detach().to(torch::kCPU, torch::kFloat).contiguous();
}

void UpdateFloatBytes(Sha256& h, const torch::Tensor& t) {
  torch::Tensor c = AsFloatCpu(t);
  h.Update(std::span<const std::byte>(reinterpret_cast<const std::byte*>(c.data_ptr<float>()),
                                      static_cast<size_t>(c.numel()) * sizeof(float)));
}

void UpdateParameterHeader(Sha256& h, const std::string& name, c10::IntArrayRef sizes) {
  h.UpdateU64(name.size());
  h.Update(name);
  h.UpdateU64(static_cast<uint64_t>(sizes.size()));
  for (int64_t d : sizes) h.UpdateU64(static_cast<uint64_t>(d));
}

enum class Part { kValues, kGrads };

torch::Tensor Flatten(const torch::nn::Module& module, Part part) {
  // Every element is written below (zeros where a gradient is undefined), so no fill first.
  torch::Tensor flat = torch::empty({NumParameters(module)}, torch::kFloat);
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& p : module.parameters()) {
    const int64_t n = p.numel();
    const torch::Tensor& source = part == Part::kValues ? p : p.grad();
    if (source.defined()) {
      flat.narrow(0, offset, n).copy_(source.detach().reshape({-1}));
    } else {
      flat.narrow(0, offset, n).zero_();
    }
    offset += n;
  }
  return flat;
}

Status Assign(torch::nn::Module& module, const torch::Tensor& flat, Part part) {
  const int64_t expected = NumParameters(module);
  if (!flat.defined() || flat.dim() != 1 || flat.scalar_type() != torch::kFloat ||
      !flat.device().is_cpu()) {
    return InvalidArgument("flat parameter vector must be a 1-D float32 CPU tensor");
  }
  if (flat.numel() != expected) {
    return InvalidArgument("flat parameter vector has " + std::to_string(flat.numel()) +
                           " elements, the model has " + std::to_string(expected));
  }
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (auto& p : module.parameters()) {
    const int64_t n = p.numel();
    torch::Tensor slice = flat.narrow(0, offset, n).view(p.sizes());
    if (part == Part::kValues) {
      p.copy_(slice);
    } else if (p.grad().defined()) {
      p.mutable_grad().copy_(slice);
    } else {
      p.mutable_grad() = slice.to(p.device(), /*non_blocking=*/false, /*copy=*/true);
    }
    offset += n;
  }
  return Status::Ok();
}

}  // namespace

int64_t NumParameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

torch::Tensor FlattenParameters(const torch::nn::Module& module) {
  return Flatten(module, Part::kValues);
}

torch::Tensor FlattenGradients(const torch::nn::Module& module) {
  return Flatten(module, Part::kGrads);
}

Status AssignFlatParameters(torch::nn::Module& module, const torch::Tensor& flat) {
  return Assign(module, flat, Part::kValues);
}

Status AssignFlatGradients(torch::nn::Module& module, const torch::Tensor& flat) {
  return Assign(module, flat, Part::kGrads);
}

Digest ParameterDigest(const torch::nn::Module& module) {
  Sha256 h;
  for (const auto& item : module.named_parameters()) {
    UpdateParameterHeader(h, item.key(), item.value().sizes());
    UpdateFloatBytes(h, item.value());
  }
  return h.Finish();
}

ParameterLayout LayoutOf(const torch::nn::Module& module) {
  ParameterLayout layout;
  for (const auto& item : module.named_parameters()) {
    layout.names.push_back(item.key());
    layout.shapes.push_back(item.value().sizes().vec());
  }
  return layout;
}

Result<Digest> ParameterDigest(const ParameterLayout& layout, std::span<const float> flat) {
  size_t total = 0;
  for (const auto& shape : layout.shapes) total += static_cast<size_t>(c10::multiply_integers(shape));
  if (flat.size() != total || layout.names.size() != layout.shapes.size()) {
    return InvalidArgument("flat parameter vector has " + std::to_string(flat.size()) +
                           " elements, the layout " + std::to_string(total));
  }
  Sha256 h;
  size_t offset = 0;
  for (size_t i = 0; i < layout.names.size(); ++i) {
    UpdateParameterHeader(h, layout.names[i], layout.shapes[i]);
    const size_t n = static_cast<size_t>(c10::multiply_integers(layout.shapes[i]));
    h.Update(std::as_bytes(flat.subspan(offset, n)));
    offset += n;
  }
  return h.Finish();
}

Digest TensorDigest(const torch::Tensor& tensor) {
  Sha256 h;
  if (tensor.defined()) UpdateFloatBytes(h, tensor);
  return h.Finish();
}

}  // namespace tributary::models
