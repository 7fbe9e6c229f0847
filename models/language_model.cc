// Both model kinds and EvaluateLoss live in this one translation unit: each file that includes
// torch costs ~25 s to compile on the project's 2-core machines.
#include "models/language_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>
#include <unordered_set>

#include "models/evaluate.h"

namespace tributary::models {
namespace {
namespace nn = torch::nn;

nn::LayerNorm MakeLayerNorm(int d) { return nn::LayerNorm(nn::LayerNormOptions({d})); }

class BlockImpl : public nn::Module {
 public:
  BlockImpl(int d_model, int n_head, int context) : n_head_(n_head), head_dim_(d_model / n_head) {
    ln1 = register_module("ln1", MakeLayerNorm(d_model));
    qkv = register_module("qkv", nn::Linear(d_model, 3 * d_model));
    attn_proj = register_module("attn_proj", nn::Linear(d_model, d_model));
    ln2 = register_module("ln2", MakeLayerNorm(d_model));
    fc = register_module("fc", nn::Linear(d_model, 4 * d_model));
    mlp_proj = register_module("mlp_proj", nn::Linear(4 * d_model, d_model));
    // Additive mask, -inf above the diagonal. A plain member, not a buffer: it is a constant of
    // the architecture, not state to be synchronised or hashed.
    causal_mask_ = torch::full({context, context}, -std::numeric_limits<float>::infinity()).triu(1);
  }

  torch::Tensor forward(torch::Tensor x) {
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2);
    // [B, T, 3D] -> [3, B, H, T, hd]
    torch::Tensor qkv_heads =
        qkv(ln1(x)).view({B, T, 3, n_head_, head_dim_}).permute({2, 0, 3, 1, 4});
    torch::Tensor q = qkv_heads[0], k = qkv_heads[1], v = qkv_heads[2];
    // The mask follows the block to whatever device it was moved to (once; a plain member is
    // not moved by Module::to).
    if (causal_mask_.device() != x.device()) causal_mask_ = causal_mask_.to(x.device());
    torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(head_dim_)) +
                           causal_mask_.slice(0, 0, T).slice(1, 0, T);
    torch::Tensor y = torch::matmul(torch::softmax(scores, -1), v);  // [B, H, T, hd]
    x = x + attn_proj(y.transpose(1, 2).reshape({B, T, D}));
    return x + mlp_proj(torch::gelu(fc(ln2(x))));
  }

  nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  nn::Linear qkv{nullptr}, attn_proj{nullptr}, fc{nullptr}, mlp_proj{nullptr};

 private:
  int64_t n_head_, head_dim_;
  torch::Tensor causal_mask_;
};

class Gpt : public LanguageModel {
 public:
  explicit Gpt(const ModelConfig& c) : LanguageModel(c) {
    wte = register_module("wte", nn::Embedding(c.vocab_size, c.d_model));
    wpe = register_module("wpe", nn::Embedding(c.context, c.d_model));
    blocks = register_module("blocks", nn::ModuleList());
    for (int i = 0; i < c.n_layer; ++i) {
      block_ptrs_.push_back(std::make_shared<BlockImpl>(c.d_model, c.n_head, c.context));
      blocks->push_back(block_ptrs_.back());
    }
    ln_f = register_module("ln_f", MakeLayerNorm(c.d_model));
    head = register_module("head", nn::Linear(c.d_model, c.vocab_size));
  }

  torch::Tensor Logits(const torch::Tensor& tokens) override {
    torch::Tensor positions = torch::arange(tokens.size(1), tokens.options().dtype(torch::kLong));
    torch::Tensor x = wte(tokens) + wpe(positions);
    for (auto& block : block_ptrs_) x = block->forward(x);
    return head(ln_f(x));
  }

  nn::Embedding wte{nullptr}, wpe{nullptr};
  nn::ModuleList blocks{nullptr};
  nn::LayerNorm ln_f{nullptr};
  nn::Linear head{nullptr};

 private:
  std::vector<std::shared_ptr<BlockImpl>> block_ptrs_;  // typed view of `blocks`
};

class MlpLm : public LanguageModel {
 public:
  explicit MlpLm(const ModelConfig& c) : LanguageModel(c) {
    emb = register_module("emb", nn::Embedding(c.vocab_size, c.d_model));
    hidden = register_module("hidden", nn::Linear(kMlpWindow * c.d_model, c.mlp_hidden));
    out = register_module("out", nn::Linear(c.mlp_hidden, c.vocab_size));
  }

  torch::Tensor Logits(const torch::Tensor& tokens) override {
    const int64_t B = tokens.size(0), T = tokens.size(1);
    torch::Tensor padded =
        torch::cat({torch::full({B, kMlpWindow - 1}, kMlpPadToken, tokens.options()), tokens}, 1);
    torch::Tensor windows = padded.unfold(1, kMlpWindow, 1);  // [B, T, k]; row t ends at token t
    torch::Tensor features = emb(windows).reshape({B, T, -1});
    return out(torch::tanh(hidden(features)));
  }

  nn::Embedding emb{nullptr};
  nn::Linear hidden{nullptr}, out{nullptr};
};

// GPT-2 initialisation, from a private generator so that the result depends on nothing but the
// seed (not on whatever else has drawn from torch's global RNG in this process).
void Initialise(LanguageModel& model, uint64_t init_seed) {
  std::unordered_set<const void*> gains, residual_outputs;
  for (const auto& item : model.named_modules()) {
    if (auto* ln = item.value()->as<nn::LayerNormImpl>())
      gains.insert(ln->weight.unsafeGetTensorImpl());
    const std::string& name = item.key();
    auto ends_with = [&](std::string_view s) {
      return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (auto* lin = item.value()->as<nn::LinearImpl>();
        lin && (ends_with("attn_proj") || ends_with("mlp_proj"))) {
      residual_outputs.insert(lin->weight.unsafeGetTensorImpl());
    }
  }
  const double std_dev = 0.02;
  const double residual_std = 0.02 / std::sqrt(2.0 * std::max(1, model.config().n_layer));
  at::Generator gen = at::detail::createCPUGenerator(init_seed);
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters()) {
    const void* impl = p.unsafeGetTensorImpl();
    if (gains.count(impl)) {
      p.fill_(1.0);
    } else if (p.dim() < 2) {
      p.zero_();  // biases
    } else {
      p.normal_(0.0, residual_outputs.count(impl) ? residual_std : std_dev, gen);
    }
  }
}

Status CheckIds(const torch::Tensor& t, const char* what, int vocab_size) {
  const int64_t lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
  if (lo < 0 || hi >= vocab_size) {
    return InvalidArgument(std::string(what) + " hold ids in [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "], outside the vocabulary [0, " +
                           std::to_string(vocab_size) + ")");
  }
  return Status::Ok();
}

}  // namespace

Status ModelConfig::Validate() const {
  if (kind != "gpt" && kind != "mlp") {
    return InvalidArgument("model kind must be \"gpt\" or \"mlp\", got \"" + kind + "\"");
  }
  auto positive = [](const char* field, int v) -> Status {
    if (v < 1)
      return InvalidArgument(std::string("model ") + field + " must be >= 1, got " +
                             std::to_string(v));
    return Status::Ok();
  };
  TRIB_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  TRIB_RETURN_IF_ERROR(positive("d_model", d_model));
  TRIB_RETURN_IF_ERROR(positive("context", context));
  if (kind == "gpt") {
    TRIB_RETURN_IF_ERROR(positive("n_layer", n_layer));
    TRIB_RETURN_IF_ERROR(positive("n_head", n_head));
    if (d_model % n_head != 0) {
      return InvalidArgument("model d_model (" + std::to_string(d_model) +
                             ") must be divisible by n_head (" + std::to_string(n_head) + ")");
    }
  } else {
    TRIB_RETURN_IF_ERROR(positive("mlp_hidden", mlp_hidden));
  }
  return Status::Ok();
}

torch::Tensor LanguageModel::Loss(const torch::Tensor& inputs, const torch::Tensor& targets) {
  // Batches are built on the CPU; the model may live on an accelerator.
  const torch::Device device = parameters().front().device();
  torch::Tensor logits = Logits(inputs.to(device));
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                              targets.to(device).reshape({-1}));
}

Status LanguageModel::ValidateTokens(const torch::Tensor& tokens) const {
  if (!tokens.defined()) return InvalidArgument("tokens tensor is undefined");
  if (tokens.scalar_type() != torch::kLong) {
    return InvalidArgument(std::string("tokens must be int64, got ") +
                           c10::toString(tokens.scalar_type()));
  }
  if (!tokens.device().is_cpu()) return InvalidArgument("tokens must be on the CPU");
  if (tokens.dim() != 2 || tokens.size(0) < 1 || tokens.size(1) < 1) {
    return InvalidArgument("tokens must have shape [B, T] with B, T >= 1, got " +
                           c10::str(tokens.sizes()));
  }
  if (tokens.size(1) > config_.context) {
    return InvalidArgument("sequence length " + std::to_string(tokens.size(1)) +
                           " exceeds the model context " + std::to_string(config_.context));
  }
  return CheckIds(tokens, "tokens", config_.vocab_size);
}

Result<std::shared_ptr<LanguageModel>> MakeModel(const ModelConfig& config, uint64_t init_seed) {
  TRIB_RETURN_IF_ERROR(config.Validate());
  try {
    std::shared_ptr<LanguageModel> model;
    if (config.kind == "gpt") {
      model = std::make_shared<Gpt>(config);
    } else {
      model = std::make_shared<MlpLm>(config);
    }
    Initialise(*model, init_seed);
    return model;
  } catch (const std::exception& e) {  // allocation failure for absurd sizes
    return Internal(std::string("building the ") + config.kind + " model failed: " + e.what());
  }
}

Result<double> EvaluateLoss(LanguageModel& model, const std::vector<Batch>& batches) {
  if (batches.empty()) return InvalidArgument("EvaluateLoss needs at least one batch");
  for (size_t i = 0; i < batches.size(); ++i) {
    const Batch& b = batches[i];
    const std::string where = "validation batch " + std::to_string(i);
    TRIB_RETURN_IF_ERROR(model.ValidateTokens(b.inputs).WithContext(where));
    if (!b.targets.defined() || b.targets.scalar_type() != torch::kLong ||
        b.targets.sizes() != b.inputs.sizes()) {
      return InvalidArgument(where + ": targets must be int64 with the inputs' shape");
    }
    TRIB_RETURN_IF_ERROR(
        CheckIds(b.targets, "targets", model.config().vocab_size).WithContext(where));
  }
  const bool was_training = model.is_training();
  model.eval();
  double sum = 0.0;
  try {
    torch::NoGradGuard no_grad;
    for (const Batch& b : batches) sum += model.Loss(b.inputs, b.targets).item<double>();
  } catch (const std::exception& e) {
    model.train(was_training);
    return Internal(std::string("evaluating the model failed: ") + e.what());
  }
  model.train(was_training);
  return sum / static_cast<double>(batches.size());
}

}  // namespace tributary::models
