// NcclCommunicator: exact against a float64 reference on every GPU of this host. Built only
// with NCCL (TRIBUTARY_HAVE_NCCL); skips when no GPU is visible.
#include <gtest/gtest.h>

#ifdef TRIBUTARY_HAVE_NCCL
#include <cmath>
#include <cstring>

#include "collectives/nccl/nccl_communicator.h"
#include "tests/collectives/mesh_cluster.h"
#endif

namespace tributary::collectives {
namespace {

#ifdef TRIBUTARY_HAVE_NCCL
TEST(NcclCommunicator, ExactAgainstFloat64ReferenceOnEveryGpu) {
  const int gpus = NcclCommunicator::DeviceCount();
  if (gpus < 1) GTEST_SKIP() << "no GPU visible: the NCCL backend needs one";
  auto comms = NcclCommunicator::CreateLocal(gpus);
  ASSERT_TRUE(comms.ok()) << comms.status().ToString();
  const uint32_t world = static_cast<uint32_t>(gpus);
  for (size_t n : {size_t{1}, size_t{1001}, size_t{1000003}}) {
    std::vector<std::vector<float>> data;
    for (uint32_t r = 0; r < world; ++r) data.push_back(testing::Uniform(7 * r + n, n));
    std::vector<double> ref(n, 0);
    for (const auto& d : data) {
      for (size_t i = 0; i < n; ++i) ref[i] += d[i];
    }
    auto results = testing::OnEveryRank(world, [&](uint32_t r) {
      CollectiveOptions o;
      o.tag = "t";
      o.average = true;
      return (*comms)[r]->Allreduce(data[r], o);
    });
    for (uint32_t r = 0; r < world; ++r) {
      ASSERT_TRUE(results[r].ok()) << results[r].status().ToString();
      EXPECT_EQ(std::memcmp(data[r].data(), data[0].data(), n * sizeof(float)), 0);
    }
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(data[0][i], ref[i] / world, 1e-5) << i;
  }
  std::vector<float> bad{1.0f, NAN};
  EXPECT_EQ((*comms)[0]->Allreduce(bad, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(NcclCommunicator::CreateLocal(gpus + 1).status().code(), StatusCode::kInvalidArgument);
}
#else
TEST(NcclCommunicator, NotBuiltWithoutCudaAndNccl) {
  GTEST_SKIP() << "built without CUDA/NCCL (TRIBUTARY_HAVE_NCCL off): no NCCL backend to test";
}
#endif

}  // namespace
}  // namespace tributary::collectives
