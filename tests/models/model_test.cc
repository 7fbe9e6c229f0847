#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/digest.h"
#include "models/dataset.h"
#include "models/evaluate.h"
#include "models/language_model.h"
#include "models/parameters.h"
#include "models/tokenizer.h"

namespace tributary::models {
namespace {

ModelConfig SmallConfig(const std::string& kind) {
  ModelConfig c;
  c.kind = kind;
  c.vocab_size = 11;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 32;
  c.context = 16;
  c.mlp_hidden = 48;
  return c;
}

std::shared_ptr<LanguageModel> Make(const ModelConfig& c, uint64_t seed) {
  auto m = MakeModel(c, seed);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return m.ok() ? *m : nullptr;
}

torch::Tensor RandomTokens(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randint(vocab, {b, t}, gen, torch::kLong);
}

// A synthetic, learnable text: a short repeated phrase with a counter mixed in.
std::string SyntheticText() {
  std::string text;
  for (int i = 0; i < 400; ++i) {
    text += "the whale swims " + std::to_string(i % 17) + " leagues; ";
  }
  return text;
}

TEST(ModelConfigTest, ValidateRejectsBadConfigs) {
  EXPECT_TRUE(SmallConfig("gpt").Validate().ok());
  EXPECT_TRUE(SmallConfig("mlp").Validate().ok());
  ModelConfig c = SmallConfig("gpt");
  c.kind = "rnn";
  EXPECT_EQ(c.Validate().code(), StatusCode::kInvalidArgument);
  c = SmallConfig("gpt");
  c.n_head = 3;  // 32 % 3 != 0
  EXPECT_NE(c.Validate().message().find("divisible"), std::string::npos);
  c = SmallConfig("gpt");
  c.vocab_size = 0;
  EXPECT_FALSE(c.Validate().ok());
  c = SmallConfig("mlp");
  c.mlp_hidden = 0;
  EXPECT_FALSE(c.Validate().ok());
  c = SmallConfig("gpt");
  c.context = -1;
  EXPECT_FALSE(MakeModel(c, 1).ok());
}

TEST(ModelConfigTest, DefaultGptParameterCount) {
  ModelConfig c;
  c.vocab_size = 83;  // distinct bytes of the Moby-Dick chapters
  auto model = Make(c, 0);
  ASSERT_TRUE(model);
  // embeddings (83 + 64) * 128; per block 2 LayerNorms + qkv + proj + 4x MLP; final LN; head.
  const int64_t block =
      2 * 256 + (128 * 384 + 384) + (128 * 128 + 128) + (128 * 512 + 512) + (512 * 128 + 128);
  EXPECT_EQ(NumParameters(*model), (83 + 64) * 128 + 2 * block + 256 + (128 * 83 + 83));
}

class ModelKindTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelKindTest, LogitsHaveShapeBTV) {
  ModelConfig c = SmallConfig(GetParam());
  auto model = Make(c, 1);
  ASSERT_TRUE(model);
  for (int64_t t : {1, 5, 16}) {
    torch::Tensor logits = model->Logits(RandomTokens(3, t, c.vocab_size, 7));
    EXPECT_EQ(logits.sizes(), torch::IntArrayRef({3, t, c.vocab_size}));
    EXPECT_EQ(logits.scalar_type(), torch::kFloat);
    EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
  }
  torch::Tensor loss =
      model->Loss(RandomTokens(2, 8, c.vocab_size, 1), RandomTokens(2, 8, c.vocab_size, 2));
  EXPECT_EQ(loss.dim(), 0);
  // Freshly initialised, the prediction is near uniform: loss ~ ln(V).
  EXPECT_NEAR(loss.item<double>(), std::log(c.vocab_size), 0.5);
}

TEST_P(ModelKindTest, PredictionsDependOnlyOnThePast) {
  ModelConfig c = SmallConfig(GetParam());
  auto model = Make(c, 3);
  ASSERT_TRUE(model);
  torch::NoGradGuard no_grad;
  torch::Tensor tokens = RandomTokens(2, 16, c.vocab_size, 11);
  torch::Tensor changed = tokens.clone();
  const int64_t t = 4;
  changed.select(1, t).copy_((tokens.select(1, t) + 1) % c.vocab_size);
  torch::Tensor a = model->Logits(tokens), b = model->Logits(changed);
  EXPECT_TRUE(torch::equal(a.slice(1, 0, t), b.slice(1, 0, t)));
  EXPECT_FALSE(torch::allclose(a.select(1, t), b.select(1, t)));
  if (GetParam() == "mlp") {
    // Position u sees tokens u-7..u only.
    EXPECT_FALSE(torch::allclose(a.select(1, t + kMlpWindow - 1), b.select(1, t + kMlpWindow - 1)));
    EXPECT_TRUE(torch::equal(a.slice(1, t + kMlpWindow), b.slice(1, t + kMlpWindow)));
  } else {
    EXPECT_FALSE(torch::allclose(a.select(1, 15), b.select(1, 15)));
  }
}

TEST_P(ModelKindTest, InitIsAFunctionOfTheSeedOnly) {
  ModelConfig c = SmallConfig(GetParam());
  torch::manual_seed(1);
  auto a = Make(c, 2024);
  torch::manual_seed(999);  // the global RNG must not matter
  torch::rand({100});
  auto b = Make(c, 2024);
  auto other = Make(c, 2025);
  ASSERT_TRUE(a && b && other);
  EXPECT_EQ(ParameterDigest(*a), ParameterDigest(*b));
  EXPECT_NE(ParameterDigest(*a), ParameterDigest(*other));
  EXPECT_TRUE(torch::equal(FlattenParameters(*a), FlattenParameters(*b)));
  // GPT-2 style statistics: weights ~ N(0, 0.02), biases 0.
  for (const auto& item : a->named_parameters()) {
    const torch::Tensor& p = item.value();
    if (p.dim() >= 2 && p.numel() > 1000) {
      EXPECT_LT(p.std().item<double>(), 0.025) << item.key();
      EXPECT_GT(p.std().item<double>(), 0.005) << item.key();
    }
    if (item.key().size() > 4 && item.key().substr(item.key().size() - 4) == "bias" &&
        item.key().find("ln") == std::string::npos) {
      EXPECT_EQ(p.abs().max().item<float>(), 0.0f) << item.key();
    }
  }
}

TEST_P(ModelKindTest, AdamWLowersTheLossOnARepeatedBatch) {
  ModelConfig c = SmallConfig(GetParam());
  auto model = Make(c, 5);
  ASSERT_TRUE(model);
  torch::Tensor inputs = RandomTokens(4, 16, c.vocab_size, 21);
  torch::Tensor targets = RandomTokens(4, 16, c.vocab_size, 22);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3));
  const double first = model->Loss(inputs, targets).item<double>();
  double last = first;
  for (int i = 0; i < 30; ++i) {
    opt.zero_grad();
    torch::Tensor loss = model->Loss(inputs, targets);
    loss.backward();
    opt.step();
    last = loss.item<double>();
  }
  EXPECT_LT(last, first - 0.3) << "first " << first << " last " << last;
}

TEST_P(ModelKindTest, ValidateTokensRejectsWhatLogitsCannotTake) {
  ModelConfig c = SmallConfig(GetParam());
  auto model = Make(c, 1);
  ASSERT_TRUE(model);
  EXPECT_TRUE(model->ValidateTokens(RandomTokens(2, 16, c.vocab_size, 1)).ok());
  EXPECT_FALSE(model->ValidateTokens(torch::Tensor()).ok());
  EXPECT_FALSE(model->ValidateTokens(RandomTokens(2, 17, c.vocab_size, 1)).ok());  // > context
  EXPECT_FALSE(model->ValidateTokens(torch::zeros({2, 4}, torch::kInt)).ok());     // dtype
  EXPECT_FALSE(model->ValidateTokens(torch::zeros({8}, torch::kLong)).ok());       // rank
  EXPECT_FALSE(model->ValidateTokens(torch::full({1, 4}, c.vocab_size, torch::kLong)).ok());
  EXPECT_FALSE(model->ValidateTokens(torch::full({1, 4}, -1, torch::kLong)).ok());
}

INSTANTIATE_TEST_SUITE_P(Kinds, ModelKindTest, ::testing::Values("gpt", "mlp"));

// The report digests θ from a flat snapshot on another thread: it must name the same bits as
// the module's own digest, and differ where the values, a name or a shape does.
TEST_P(ModelKindTest, LayoutDigestOfTheFlatValuesIsTheModulesDigest) {
  auto a = Make(SmallConfig(GetParam()), 7);
  ASSERT_TRUE(a);
  const ParameterLayout layout = LayoutOf(*a);
  torch::Tensor flat = FlattenParameters(*a);
  std::span<const float> values(flat.data_ptr<float>(), static_cast<size_t>(flat.numel()));
  auto digest = ParameterDigest(layout, values);
  ASSERT_TRUE(digest.ok()) << digest.status().ToString();
  EXPECT_EQ(*digest, ParameterDigest(*a));

  flat[3] = flat[3].item<float>() + 1.0f;
  EXPECT_NE(*ParameterDigest(layout, values), ParameterDigest(*a));
  flat[3] = flat[3].item<float>() - 1.0f;
  ParameterLayout renamed = layout;
  renamed.names[0] += "x";
  EXPECT_NE(*ParameterDigest(renamed, values), *digest);
  ParameterLayout reshaped = layout;
  std::swap(reshaped.shapes[0], reshaped.shapes[1]);  // same total, different shapes
  if (reshaped.shapes[0] != layout.shapes[0]) EXPECT_NE(*ParameterDigest(reshaped, values), *digest);

  auto short_by_one = ParameterDigest(layout, values.first(values.size() - 1));
  ASSERT_FALSE(short_by_one.ok());
  EXPECT_EQ(short_by_one.status().code(), StatusCode::kInvalidArgument);
}

TEST(ParametersTest, FlattenAssignRoundTrip) {
  auto a = Make(SmallConfig("gpt"), 1);
  auto b = Make(SmallConfig("gpt"), 2);
  ASSERT_TRUE(a && b);
  torch::Tensor flat = FlattenParameters(*a);
  EXPECT_EQ(flat.dim(), 1);
  EXPECT_EQ(flat.numel(), NumParameters(*a));
  EXPECT_EQ(flat.scalar_type(), torch::kFloat);
  EXPECT_TRUE(flat.is_contiguous());
  ASSERT_TRUE(AssignFlatParameters(*b, flat).ok());
  EXPECT_EQ(ParameterDigest(*a), ParameterDigest(*b));
  EXPECT_TRUE(torch::equal(FlattenParameters(*b), flat));

  // The flat vector is a copy, and assignment does not alias it either.
  const Digest before = ParameterDigest(*a);
  flat.mul_(2);
  EXPECT_EQ(ParameterDigest(*a), before);
  EXPECT_EQ(ParameterDigest(*b), before);

  // Assignment records no autograd history; the parameters stay leaves.
  for (const auto& p : b->parameters()) {
    EXPECT_TRUE(p.is_leaf());
    EXPECT_TRUE(p.requires_grad());
  }
}

TEST(ParametersTest, AssignRejectsWrongSizeTypeOrRankAndLeavesModelUntouched) {
  auto model = Make(SmallConfig("mlp"), 1);
  ASSERT_TRUE(model);
  const Digest before = ParameterDigest(*model);
  const int64_t n = NumParameters(*model);
  EXPECT_EQ(AssignFlatParameters(*model, torch::zeros({n - 1})).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(AssignFlatParameters(*model, torch::zeros({n + 1})).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(AssignFlatParameters(*model, torch::zeros({n}, torch::kDouble)).ok());
  EXPECT_FALSE(AssignFlatParameters(*model, torch::zeros({1, n})).ok());
  EXPECT_FALSE(AssignFlatParameters(*model, torch::Tensor()).ok());
  EXPECT_FALSE(AssignFlatGradients(*model, torch::zeros({n - 1})).ok());
  EXPECT_EQ(ParameterDigest(*model), before);
}

TEST(ParametersTest, GradientsFlattenAndAssign) {
  ModelConfig c = SmallConfig("gpt");
  auto model = Make(c, 4);
  ASSERT_TRUE(model);
  const int64_t n = NumParameters(*model);
  torch::Tensor none = FlattenGradients(*model);  // no backward yet
  EXPECT_EQ(none.numel(), n);
  EXPECT_EQ(none.abs().sum().item<float>(), 0.0f);

  model->Loss(RandomTokens(2, 8, c.vocab_size, 1), RandomTokens(2, 8, c.vocab_size, 2)).backward();
  torch::Tensor grads = FlattenGradients(*model);
  EXPECT_GT(grads.abs().sum().item<float>(), 0.0f);
  // Layout matches FlattenParameters: slot i belongs to the same parameter element.
  int64_t offset = 0;
  for (const auto& p : model->parameters()) {
    EXPECT_TRUE(torch::equal(grads.narrow(0, offset, p.numel()), p.grad().reshape({-1})));
    offset += p.numel();
  }

  auto fresh = Make(c, 4);
  ASSERT_TRUE(fresh);
  torch::Tensor g2 = torch::arange(n, torch::kFloat);
  ASSERT_TRUE(AssignFlatGradients(*fresh, g2).ok());  // grads were undefined: allocated
  EXPECT_TRUE(torch::equal(FlattenGradients(*fresh), g2));
  ASSERT_TRUE(AssignFlatGradients(*model, g2).ok());  // grads defined: overwritten
  EXPECT_TRUE(torch::equal(FlattenGradients(*model), g2));
}

TEST(ParametersTest, DigestsSeeASingleElementChange) {
  auto model = Make(SmallConfig("gpt"), 8);
  ASSERT_TRUE(model);
  const Digest before = ParameterDigest(*model);
  torch::Tensor flat = FlattenParameters(*model);
  {
    torch::NoGradGuard no_grad;
    auto p = model->parameters()[3];
    p.view({-1})[0].add_(1e-6f);
  }
  EXPECT_NE(ParameterDigest(*model), before);
  EXPECT_NE(TensorDigest(FlattenParameters(*model)), TensorDigest(flat));

  // TensorDigest is the digest of the raw float32 bytes: what a peer receiving them would hash.
  std::span<const std::byte> raw(reinterpret_cast<const std::byte*>(flat.data_ptr<float>()),
                                 static_cast<size_t>(flat.numel()) * sizeof(float));
  EXPECT_EQ(TensorDigest(flat), Sha256Of(raw));
  EXPECT_EQ(TensorDigest(flat.view({1, -1})), TensorDigest(flat));  // shape is not hashed
  torch::Tensor strided = flat.narrow(0, 0, 20).view({4, 5}).t();
  EXPECT_EQ(TensorDigest(strided), TensorDigest(strided.contiguous()));
}

TEST(EvaluateTest, MeanLossInEvalModeThenRestoresMode) {
  ModelConfig c = SmallConfig("gpt");
  auto model = Make(c, 6);
  ASSERT_TRUE(model);
  std::vector<Batch> batches;
  for (uint64_t i = 0; i < 3; ++i) {
    batches.push_back(
        {RandomTokens(2, 16, c.vocab_size, 100 + i), RandomTokens(2, 16, c.vocab_size, 200 + i)});
  }
  double manual = 0;
  for (const Batch& b : batches) manual += model->Loss(b.inputs, b.targets).item<double>() / 3;
  model->train(true);
  auto loss = EvaluateLoss(*model, batches);
  ASSERT_TRUE(loss.ok()) << loss.status().ToString();
  EXPECT_NEAR(*loss, manual, 1e-6);
  EXPECT_TRUE(model->is_training());
  model->eval();
  ASSERT_TRUE(EvaluateLoss(*model, batches).ok());
  EXPECT_FALSE(model->is_training());

  EXPECT_FALSE(EvaluateLoss(*model, {}).ok());
  std::vector<Batch> bad = {
      {RandomTokens(2, 17, c.vocab_size, 1), RandomTokens(2, 17, c.vocab_size, 1)}};
  EXPECT_EQ(EvaluateLoss(*model, bad).status().code(), StatusCode::kInvalidArgument);
  bad = {{RandomTokens(2, 8, c.vocab_size, 1), RandomTokens(2, 7, c.vocab_size, 1)}};
  EXPECT_FALSE(EvaluateLoss(*model, bad).ok());
  bad = {{RandomTokens(2, 8, c.vocab_size, 1), torch::full({2, 8}, c.vocab_size, torch::kLong)}};
  EXPECT_FALSE(EvaluateLoss(*model, bad).ok());
}

// Two runs of the default GPT from the same seed on the same batches end bit-identical: the
// property that lets peers compare ParameterDigests instead of shipping parameters.
TEST(DeterminismTest, DefaultGptTrainingIsBitReproducible) {
  const int saved_threads = torch::get_num_threads();
  torch::set_num_threads(1);
  const std::string text = SyntheticText();
  ByteTokenizer tok = ByteTokenizer::FromText(text);
  auto ds = TokenDataset::Create(*tok.Encode(text), 0.1);
  ASSERT_TRUE(ds.ok());
  ModelConfig c;
  c.vocab_size = tok.vocab_size();
  auto val = ds->ValidationBatches(2, 8, c.context);
  ASSERT_TRUE(val.ok());

  auto train = [&](std::vector<double>* losses) {
    auto model = Make(c, 77);
    torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-3));
    for (uint64_t step = 0; step < 20; ++step) {
      auto batch = ds->TrainBatch({31337, 0, 1, 0, step}, 16, c.context);
      EXPECT_TRUE(batch.ok());
      opt.zero_grad();
      torch::Tensor loss = model->Loss(batch->inputs, batch->targets);
      loss.backward();
      opt.step();
      losses->push_back(loss.item<double>());
    }
    auto eval = EvaluateLoss(*model, *val);
    EXPECT_TRUE(eval.ok());
    losses->push_back(*eval);
    return ParameterDigest(*model);
  };
  std::vector<double> losses_a, losses_b;
  const Digest a = train(&losses_a);
  const Digest b = train(&losses_b);
  torch::set_num_threads(saved_threads);
  EXPECT_EQ(ToHex(a), ToHex(b));
  EXPECT_EQ(losses_a, losses_b);
  EXPECT_LT(losses_a.back(), losses_a.front()) << "20 steps should already reduce the loss";
}

}  // namespace
}  // namespace tributary::models
