#include "core/seed.h"

#include <gtest/gtest.h>

#include <set>

namespace tributary {
namespace {

TEST(SeedTest, DeriveSeedIsPureAndOrderSensitive) {
  EXPECT_EQ(DeriveSeed({1, 2, 3}), DeriveSeed({1, 2, 3}));
  EXPECT_NE(DeriveSeed({1, 2, 3}), DeriveSeed({3, 2, 1}));
  EXPECT_NE(DeriveSeed({1, 2}), DeriveSeed({1, 2, 0}));
}

TEST(SeedTest, BelowStaysInRangeAndCoversIt) {
  SeedStream s(42);
  std::set<uint64_t> seen;
  for (int i = 0; i < 1000; ++i) {
    uint64_t v = s.Below(7);
    ASSERT_LT(v, 7u);
    seen.insert(v);
  }
  EXPECT_EQ(seen.size(), 7u);
  SeedStream a(9), b(9);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.Next(), b.Next());
}

}  // namespace
}  // namespace tributary
