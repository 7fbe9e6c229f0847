// The parts of the failure contract the two latency paths (DirectAllreduce, DoublingAllreduce)
// share, run against each: a superseded attempt (FormControl::cancelled) ends the wait long
// before the deadline and so does Interrupt from another thread, neither blames anybody and
// `data` is kept; members that disagree about the options fail fast with "wrong tag".
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <thread>

#include "collectives/direct_allreduce.h"
#include "collectives/doubling_allreduce.h"
#include "tests/collectives/mesh_cluster.h"

namespace tributary::collectives {
namespace {

using namespace std::chrono_literals;
using testing::Contains;
using testing::FormMeshes;
using testing::Inputs;
using testing::LocalCluster;
using testing::SameBits;

struct LatencyPath {
  std::string name;
  std::function<Result<CollectiveStats>(Mesh&, std::span<float>, const std::string& tag,
                                        Deadline, bool average, const FormControl*)>
      run;
};

class LatencyPathTest : public ::testing::TestWithParam<LatencyPath> {};

TEST_P(LatencyPathTest, CancellationAndInterruptEndTheWaitAtOnce) {
  const LatencyPath& path = GetParam();
  LocalCluster cluster(4);
  auto meshes = FormMeshes(cluster);
  const auto inputs = Inputs(4, 33, 6);
  std::atomic<bool> superseded{false};
  FormControl control{.cancelled = [&] { return superseded.load(); }};
  std::thread flip([&] {
    std::this_thread::sleep_for(150ms);
    superseded = true;
  });
  std::vector<float> data = inputs[0];
  const auto start = Clock::now();
  auto result = path.run(*meshes[0], data, "c", DeadlineAfter(20s), false, &control);
  flip.join();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kAborted) << result.status().ToString();
  EXPECT_LT(SecondsSince(start), 2.0);
  EXPECT_TRUE(SameBits(data, inputs[0]));
  EXPECT_FALSE(meshes[0]->failure().has_value());
  EXPECT_TRUE(meshes[0]->broken());

  std::vector<float> other = inputs[1];
  std::thread interrupt([&] {
    std::this_thread::sleep_for(150ms);
    meshes[1]->Interrupt();
  });
  const auto start2 = Clock::now();
  auto interrupted = path.run(*meshes[1], other, "i", DeadlineAfter(20s), false, nullptr);
  interrupt.join();
  ASSERT_FALSE(interrupted.ok());
  EXPECT_LT(SecondsSince(start2), 2.0) << interrupted.status().ToString();
  EXPECT_TRUE(SameBits(other, inputs[1]));
}

TEST_P(LatencyPathTest, MismatchedOptionsFailFastWithWrongTag) {
  const LatencyPath& path = GetParam();
  LocalCluster cluster(2);
  auto meshes = FormMeshes(cluster);
  const auto inputs = Inputs(2, 8, 13);
  const auto start = Clock::now();
  auto outs = testing::OnEveryMesh(meshes, inputs, [&](Mesh& mesh, std::span<float> data) {
    return path.run(mesh, data, "x", DeadlineAfter(10s), mesh.rank() == 0, nullptr);
  });
  EXPECT_LT(SecondsSince(start), 5.0);
  for (const auto& o : outs) ASSERT_FALSE(o.status.ok());
  EXPECT_TRUE(Contains(outs[0].status.message() + outs[1].status.message(), "wrong tag"));
}

INSTANTIATE_TEST_SUITE_P(
    Paths, LatencyPathTest,
    ::testing::Values(
        LatencyPath{"direct",
                    [](Mesh& mesh, std::span<float> data, const std::string& tag, Deadline deadline,
                       bool average, const FormControl* control) {
                      return DirectAllreduce(mesh, data,
                                             {.tag = tag, .deadline = deadline, .average = average,
                                              .control = control});
                    }},
        LatencyPath{"doubling",
                    [](Mesh& mesh, std::span<float> data, const std::string& tag, Deadline deadline,
                       bool average, const FormControl* control) {
                      return DoublingAllreduce(mesh, data,
                                               {.tag = tag, .deadline = deadline, .average = average,
                                                .control = control});
                    }}),
    [](const ::testing::TestParamInfo<LatencyPath>& info) { return info.param.name; });

}  // namespace
}  // namespace tributary::collectives
