#include "models/dataset.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "core/seed.h"

namespace tributary::models {
namespace {

// Token i has value i, so every window reveals its own start offset.
TokenDataset IotaDataset(int64_t n, double validation_fraction) {
  std::vector<int64_t> tokens(static_cast<size_t>(n));
  std::iota(tokens.begin(), tokens.end(), 0);
  auto ds = TokenDataset::Create(std::move(tokens), validation_fraction);
  EXPECT_TRUE(ds.ok()) << ds.status().ToString();
  return std::move(ds).value();
}

bool SameBatch(const Batch& a, const Batch& b) {
  return torch::equal(a.inputs, b.inputs) && torch::equal(a.targets, b.targets);
}

TEST(DatasetTest, ValidationIsTheTailAndDisjointFromTrain) {
  TokenDataset ds = IotaDataset(1000, 0.1);
  EXPECT_EQ(ds.train_range().begin, 0);
  EXPECT_EQ(ds.train_range().end, 900);
  EXPECT_EQ(ds.validation_range().begin, 900);
  EXPECT_EQ(ds.validation_range().end, 1000);

  // No training window, from any shard, reads a validation token (values == offsets).
  for (uint32_t shard = 0; shard < 3; ++shard) {
    for (uint64_t step = 0; step < 20; ++step) {
      auto b = ds.TrainBatch({7, shard, 3, 0, step}, 8, 16);
      ASSERT_TRUE(b.ok()) << b.status().ToString();
      EXPECT_LT(b->targets.max().item<int64_t>(), 900);
    }
  }
  auto val = ds.ValidationBatches(3, 4, 16);
  ASSERT_TRUE(val.ok());
  for (const Batch& b : *val) EXPECT_GE(b.inputs.min().item<int64_t>(), 900);
}

TEST(DatasetTest, ShardsAreContiguousDisjointAndCoverTrain) {
  TokenDataset ds = IotaDataset(1003, 0.05);
  const uint32_t k = 7;
  int64_t expected_begin = 0;
  for (uint32_t s = 0; s < k; ++s) {
    auto r = ds.ShardRange(s, k);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->begin, expected_begin);
    EXPECT_GE(r->size(), ds.train_range().size() / k);
    EXPECT_LE(r->size(), ds.train_range().size() / k + 1);
    expected_begin = r->end;
  }
  EXPECT_EQ(expected_begin, ds.train_range().end);
}

TEST(DatasetTest, TrainBatchIsAPureFunctionOfTheKey) {
  // Two independently built datasets stand in for two peers.
  TokenDataset a = IotaDataset(5000, 0.1);
  TokenDataset b = IotaDataset(5000, 0.1);
  const BatchKey key{12345, 2, 4, 3, 17};
  auto x = a.TrainBatch(key, 16, 32);
  auto y = b.TrainBatch(key, 16, 32);
  auto z = a.TrainBatch(key, 16, 32);
  ASSERT_TRUE(x.ok() && y.ok() && z.ok());
  EXPECT_TRUE(SameBatch(*x, *y));
  EXPECT_TRUE(SameBatch(*x, *z));
  EXPECT_EQ(BatchDigest(*x), BatchDigest(*y));

  auto differs = [&](BatchKey other) {
    auto o = a.TrainBatch(other, 16, 32);
    EXPECT_TRUE(o.ok());
    return !SameBatch(*x, *o) && BatchDigest(*x) != BatchDigest(*o);
  };
  BatchKey k2 = key;
  k2.step += 1;
  EXPECT_TRUE(differs(k2)) << "step";
  k2 = key;
  k2.round += 1;
  EXPECT_TRUE(differs(k2)) << "round";
  k2 = key;
  k2.shard = 1;
  EXPECT_TRUE(differs(k2)) << "shard";
  k2 = key;
  k2.job_seed += 1;
  EXPECT_TRUE(differs(k2)) << "job_seed";
  k2 = key;
  k2.num_shards = 5;
  EXPECT_TRUE(differs(k2)) << "num_shards";
}

TEST(DatasetTest, WindowsStayInsideTheShardAndTargetsAreShiftedInputs) {
  TokenDataset ds = IotaDataset(4000, 0.2);
  const int context = 24;
  for (uint32_t shard = 0; shard < 5; ++shard) {
    auto range = ds.ShardRange(shard, 5);
    ASSERT_TRUE(range.ok());
    for (uint64_t step = 0; step < 10; ++step) {
      BatchKey key{99, shard, 5, 1, step};
      auto batch = ds.TrainBatch(key, 32, context);
      ASSERT_TRUE(batch.ok());
      ASSERT_EQ(batch->inputs.sizes(), torch::IntArrayRef({32, context}));
      ASSERT_EQ(batch->inputs.scalar_type(), torch::kLong);
      auto starts = ds.TrainWindowStarts(key, 32, context);
      ASSERT_TRUE(starts.ok());
      for (int64_t r = 0; r < 32; ++r) {
        const int64_t start = (*starts)[static_cast<size_t>(r)];
        EXPECT_GE(start, range->begin);
        EXPECT_LE(start + context + 1, range->end);
        torch::Tensor expect = torch::arange(start, start + context, torch::kLong);
        EXPECT_TRUE(torch::equal(batch->inputs[r], expect));
        EXPECT_TRUE(torch::equal(batch->targets[r], expect + 1));
      }
    }
  }
}

TEST(DatasetTest, WindowStartsFollowThePublishedSeedFormula) {
  // Pins the derivation a verifier in another process (or language) would re-implement.
  TokenDataset ds = IotaDataset(3000, 0.0);
  const BatchKey key{42, 1, 3, 5, 8};
  auto starts = ds.TrainWindowStarts(key, 6, 10);
  ASSERT_TRUE(starts.ok());
  SeedStream stream(DeriveSeed({42, 1, 3, 5, 8}));
  for (int64_t s : *starts) EXPECT_EQ(s, 1000 + static_cast<int64_t>(stream.Below(1000 - 10)));
}

TEST(DatasetTest, ValidationBatchesAreFixedAndSpanTheSplit) {
  TokenDataset ds = IotaDataset(2000, 0.25);
  auto v1 = ds.ValidationBatches(4, 3, 20);
  auto v2 = ds.ValidationBatches(4, 3, 20);
  ASSERT_TRUE(v1.ok() && v2.ok());
  ASSERT_EQ(v1->size(), 4u);
  for (size_t i = 0; i < v1->size(); ++i) EXPECT_TRUE(SameBatch((*v1)[i], (*v2)[i]));
  // First window starts at the split's start; last window's final target is the last token.
  EXPECT_EQ((*v1)[0].inputs[0][0].item<int64_t>(), 1500);
  EXPECT_EQ(v1->back().targets[2][19].item<int64_t>(), 1999);
  // Windows advance monotonically through the split.
  int64_t previous = -1;
  for (const Batch& b : *v1) {
    for (int64_t r = 0; r < 3; ++r) {
      const int64_t start = b.inputs[r][0].item<int64_t>();
      EXPECT_GT(start, previous);
      previous = start;
    }
  }
}

TEST(DatasetTest, BadArgumentsAreErrorsNotCrashes) {
  EXPECT_FALSE(TokenDataset::Create({}, 0.1).ok());
  EXPECT_FALSE(TokenDataset::Create({1, 2, 3}, 1.0).ok());
  EXPECT_FALSE(TokenDataset::Create({1, 2, 3}, -0.1).ok());
  EXPECT_FALSE(TokenDataset::Create({1, 2, 3}, std::nan("")).ok());

  TokenDataset ds = IotaDataset(1000, 0.1);  // 900 train tokens
  auto code = [](const auto& r) { return r.status().code(); };
  EXPECT_EQ(code(ds.TrainBatch({1, 3, 3, 0, 0}, 4, 8)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(ds.TrainBatch({1, 0, 0, 0, 0}, 4, 8)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(ds.TrainBatch({1, 0, 1, 0, 0}, 0, 8)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(ds.TrainBatch({1, 0, 1, 0, 0}, 4, 0)), StatusCode::kInvalidArgument);
  // 9 shards of 100 tokens: a window of 100 + 1 tokens does not fit, one of 99 + 1 does.
  EXPECT_EQ(code(ds.TrainBatch({1, 8, 9, 0, 0}, 4, 100)), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ds.TrainBatch({1, 8, 9, 0, 0}, 4, 99).ok());
  EXPECT_EQ(code(ds.ValidationBatches(1, 1, 100)), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ds.ValidationBatches(1, 1, 99).ok());
  EXPECT_FALSE(ds.ValidationBatches(0, 1, 8).ok());
  EXPECT_FALSE(IotaDataset(100, 0.0).ValidationBatches(1, 1, 8).ok());
}

TEST(DatasetTest, BatchDigestCoversShapeAndTargets) {
  Batch a{torch::arange(12, torch::kLong).view({3, 4}),
          torch::arange(1, 13, torch::kLong).view({3, 4})};
  Batch reshaped{a.inputs.view({4, 3}), a.targets.view({4, 3})};
  Batch other_target{a.inputs, a.targets.clone()};
  other_target.targets[2][3] = 0;
  EXPECT_EQ(BatchDigest(a), BatchDigest(Batch{a.inputs.clone(), a.targets.clone()}));
  EXPECT_NE(BatchDigest(a), BatchDigest(reshaped));
  EXPECT_NE(BatchDigest(a), BatchDigest(other_target));
}

}  // namespace
}  // namespace tributary::models
