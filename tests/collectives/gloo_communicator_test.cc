// GlooCommunicator (trusted LAN backend): exact against a float64 reference, the same bits on
// every rank, argument errors, and a member that never shows up (exact retry contract).
#include "collectives/gloo/gloo_communicator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "tests/collectives/mesh_cluster.h"

namespace tributary::collectives {
namespace {

using testing::OnEveryRank;
using testing::Uniform;

std::string TempDir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("trib-gloo-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::vector<std::unique_ptr<GlooCommunicator>> ConnectAll(uint32_t world, const std::string& dir,
                                                          const std::string& prefix,
                                                          Millis timeout = Millis(30000)) {
  auto results = OnEveryRank(world, [&](uint32_t r) {
    return GlooCommunicator::Connect(
        {.rank = r, .world = world, .store_dir = dir, .prefix = prefix, .timeout = timeout});
  });
  std::vector<std::unique_ptr<GlooCommunicator>> out;
  for (auto& r : results) {
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    out.push_back(r.ok() ? std::move(r).value() : nullptr);
  }
  return out;
}

TEST(GlooCommunicator, ExactAgainstFloat64ReferenceOnEveryRank) {
  const std::string dir = TempDir("exact");
  for (uint32_t world : {2u, 3u, 4u}) {
    auto comms = ConnectAll(world, dir, "w" + std::to_string(world));
    ASSERT_NE(comms.back(), nullptr);
    for (size_t n : {size_t{1}, size_t{5}, size_t{1001}, size_t{100003}}) {
      for (bool average : {false, true}) {
        std::vector<std::vector<float>> data;
        for (uint32_t r = 0; r < world; ++r) data.push_back(Uniform(31 * r + n, n));
        std::vector<double> ref(n, 0);
        for (const auto& d : data) {
          for (size_t i = 0; i < n; ++i) ref[i] += d[i];
        }
        auto results = OnEveryRank(world, [&](uint32_t r) {
          CollectiveOptions o;
          o.tag = "t";
          o.average = average;
          o.deadline = DeadlineAfter(Millis(20000));
          return comms[r]->Allreduce(data[r], o);
        });
        for (uint32_t r = 0; r < world; ++r) {
          ASSERT_TRUE(results[r].ok()) << results[r].status().ToString();
          EXPECT_EQ(std::memcmp(data[r].data(), data[0].data(), n * sizeof(float)), 0) << "rank " << r;
        }
        for (size_t i = 0; i < n; ++i) {
          const double want = average ? ref[i] / world : ref[i];
          ASSERT_NEAR(data[0][i], want, 1e-5 * std::max(1.0, std::abs(want))) << i;
        }
      }
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(GlooCommunicator, RejectsWhatItCannotRunBeforeSendingAnything) {
  const std::string dir = TempDir("args");
  EXPECT_EQ(GlooCommunicator::Connect({.rank = 2, .world = 2, .store_dir = dir}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(GlooCommunicator::Connect({.rank = 0, .world = 2}).status().code(),
            StatusCode::kInvalidArgument);
  auto comms = ConnectAll(2, dir, "args");
  ASSERT_NE(comms[1], nullptr);
  std::vector<float> v(8, 1.0f);
  CollectiveOptions o;
  o.codec = "int8";
  EXPECT_EQ(comms[0]->Allreduce(v, o).status().code(), StatusCode::kInvalidArgument);
  v[3] = NAN;
  EXPECT_EQ(comms[0]->Allreduce(v, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(comms[0]->broken());
  std::filesystem::remove_all(dir);
}

TEST(GlooCommunicator, AMissingMemberFailsTheCallAndLeavesTheBufferIntact) {
  const std::string dir = TempDir("dead");
  auto comms = ConnectAll(3, dir, "dead", Millis(1500));
  ASSERT_NE(comms[2], nullptr);
  std::vector<std::vector<float>> data{Uniform(1, 4097), Uniform(2, 4097)};
  const auto original = data;
  // Rank 2 never joins this all-reduce.
  auto results = OnEveryRank(2, [&](uint32_t r) {
    CollectiveOptions o;
    o.tag = "dead";
    return comms[r]->Allreduce(data[r], o);
  });
  for (uint32_t r = 0; r < 2; ++r) {
    ASSERT_FALSE(results[r].ok());
    EXPECT_NE(results[r].status().message().find("gloo all-reduce 'dead'"), std::string::npos)
        << results[r].status().ToString();
    EXPECT_EQ(data[r], original[r]);
    EXPECT_TRUE(comms[r]->broken());
    EXPECT_EQ(comms[r]->Allreduce(data[r], {}).status().code(), StatusCode::kFailedPrecondition);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tributary::collectives
