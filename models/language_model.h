// Small next-token language models over ByteTokenizer ids, float32 on the CPU.
//
// Two kinds share one interface: "gpt" (a character-level GPT: token + learned position
// embeddings, n_layer pre-LayerNorm blocks of causal multi-head self-attention and a 4*d_model
// GELU MLP, final LayerNorm, linear head) and "mlp" (a Bengio-style MLP that predicts each next
// token from the previous kMlpWindow tokens). Neither has dropout or any other randomness in the
// forward pass, so on a fixed thread count training is bit-reproducible.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"

namespace tributary::models {

// The "mlp" model's window: position t sees tokens t-7..t; positions before the sequence start
// read kMlpPadToken.
inline constexpr int kMlpWindow = 8;
inline constexpr int64_t kMlpPadToken = 0;

struct ModelConfig {
  std::string kind = "gpt";  // "gpt" or "mlp"
  int vocab_size = 0;
  int n_layer = 2;       // gpt only
  int n_head = 4;        // gpt only
  int d_model = 128;     // gpt: residual width; mlp: per-token embedding width
  int context = 64;      // longest sequence Logits accepts (gpt: number of positions)
  int mlp_hidden = 256;  // mlp only: hidden units

  // InvalidArgument naming the offending field: unknown kind, any size < 1, or (gpt) d_model not
  // divisible by n_head.
  Status Validate() const;
};

class LanguageModel : public torch::nn::Module {
 public:
  // tokens: int64 [B, T] with 1 <= T <= context and ids in [0, vocab_size) -> float32 [B, T, V],
  // row t scoring the token at t + 1. Inputs violating this throw c10::Error like any torch op;
  // callers holding untrusted tensors check them with ValidateTokens first.
  virtual torch::Tensor Logits(const torch::Tensor& tokens) = 0;

  // Mean cross-entropy of Logits(inputs) against targets (same shape as inputs). A scalar, on
  // the model's device: CPU batches are moved to the device the parameters live on.
  torch::Tensor Loss(const torch::Tensor& inputs, const torch::Tensor& targets);

  // OK iff `tokens` meets Logits' contract above.
  Status ValidateTokens(const torch::Tensor& tokens) const;

  const ModelConfig& config() const { return config_; }

 protected:
  explicit LanguageModel(ModelConfig config) : config_(std::move(config)) {}

 private:
  ModelConfig config_;
};

// Builds and initialises a model. The initial parameters are a pure function of (config,
// init_seed): GPT-2 style, every Linear/Embedding weight ~ N(0, 0.02) (residual output
// projections N(0, 0.02/sqrt(2*n_layer))), biases 0, LayerNorm gain 1 and bias 0, drawn in
// named_parameters() order from a private generator seeded with init_seed (torch's global RNG is
// not used). InvalidArgument if config.Validate() fails.
Result<std::shared_ptr<LanguageModel>> MakeModel(const ModelConfig& config, uint64_t init_seed);

}  // namespace tributary::models
