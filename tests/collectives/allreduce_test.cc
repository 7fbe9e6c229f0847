#include "collectives/allreduce.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>
#include <future>
#include <limits>

#include "core/seed.h"
#include "tests/collectives/cluster.h"

namespace tributary::collectives {
namespace {

using namespace std::chrono_literals;
using testing::LocalCluster;
using testing::OnEveryRank;

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Uniform in [-1, 1), a pure function of (seed, i).
std::vector<float> Input(uint64_t seed, size_t n) {
  SeedStream stream(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(stream.Next() >> 40) * 0x1p-23f - 1.0f;
  return v;
}

struct Case {
  size_t numel;
  size_t segment_bytes;
  bool average;
};

// Sizes of 1, below world, not divisible by world and a few random ones, each with a tiny
// segment (many segments in flight) and with the default one.
std::vector<Case> CasesFor(uint32_t world) {
  std::vector<size_t> sizes{1, world - 1u, world, world + 1u, 2u * world + 1u, 97, 1000, 4099};
  SeedStream random(DeriveSeed({world}));
  for (int i = 0; i < 3; ++i) sizes.push_back(1 + random.Below(3000));
  std::vector<Case> cases;
  for (size_t n : sizes) {
    if (n == 0) continue;
    cases.push_back({n, 16, false});
    cases.push_back({n, 12, true});  // three floats: segments do not divide chunks evenly
    cases.push_back({n, size_t{1} << 20, n % 2 == 0});
  }
  return cases;
}

struct RankOutcome {
  Status status;
  AllreduceStats stats;
  std::vector<float> data;
};

std::vector<RankOutcome> RunAllreduce(std::vector<std::unique_ptr<Ring>>& rings,
                                      const std::vector<std::vector<float>>& inputs,
                                      const AllreduceOptions& options) {
  return OnEveryRank(static_cast<uint32_t>(rings.size()), [&](uint32_t r) {
    RankOutcome out{Status::Ok(), {}, inputs[r]};
    auto result = RingAllreduce(*rings[r], out.data, options);
    if (result.ok()) {
      out.stats = *result;
    } else {
      out.status = result.status();
    }
    return out;
  });
}

class AllreduceWorldTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(AllreduceWorldTest, MatchesFloat64ReferenceAndIsBitIdenticalOnEveryRank) {
  const uint32_t world = GetParam();
  LocalCluster cluster(world);
  auto rings = cluster.FormAll();
  int index = 0;
  for (const Case& c : CasesFor(world)) {
    SCOPED_TRACE("numel=" + std::to_string(c.numel) + " segment_bytes=" +
                 std::to_string(c.segment_bytes) + " average=" + std::to_string(c.average));
    std::vector<std::vector<float>> inputs;
    std::vector<double> reference(c.numel, 0.0);
    for (uint32_t r = 0; r < world; ++r) {
      inputs.push_back(
          Input(DeriveSeed({world, c.numel, r, static_cast<uint64_t>(index)}), c.numel));
      for (size_t i = 0; i < c.numel; ++i) reference[i] += inputs[r][i];
    }
    if (c.average) {
      for (double& x : reference) x /= world;
    }
    auto outcomes = RunAllreduce(rings, inputs,
                                 {.tag = "case-" + std::to_string(index++),
                                  .deadline = DeadlineAfter(20s),
                                  .segment_bytes = c.segment_bytes,
                                  .average = c.average});
    uint64_t total_sent = 0;
    for (uint32_t r = 0; r < world; ++r) {
      ASSERT_TRUE(outcomes[r].status.ok()) << "rank " << r << ": " << outcomes[r].status.ToString();
      total_sent += outcomes[r].stats.bytes_sent;
      // Every rank's output is the same bytes: each chunk is summed once, then copied.
      ASSERT_EQ(
          std::memcmp(outcomes[r].data.data(), outcomes[0].data.data(), c.numel * sizeof(float)), 0)
          << "rank " << r << " differs from rank 0";
    }
    for (size_t i = 0; i < c.numel; ++i) {
      ASSERT_NEAR(outcomes[0].data[i], reference[i], 1e-6 * world) << "element " << i;
    }
    // Each element crosses world - 1 links in each phase.
    EXPECT_GE(total_sent, 2ull * (world - 1) * c.numel * sizeof(float));
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, AllreduceWorldTest, ::testing::Values(2u, 3u, 4u, 5u));

TEST(AllreduceTest, AverageOfSmallIntegersIsExact) {
  LocalCluster cluster(3);
  auto rings = cluster.FormAll();
  std::vector<std::vector<float>> inputs{{1, 2, 3, 4}, {2, 4, 6, 8}, {3, 6, 9, 12}};
  auto outcomes =
      RunAllreduce(rings, inputs, {.tag = "avg", .deadline = DeadlineAfter(10s), .average = true});
  for (const auto& o : outcomes) {
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    EXPECT_EQ(o.data, (std::vector<float>{2, 4, 6, 8}));
  }
}

TEST(AllreduceTest, WorldOfOneLeavesDataUnchanged) {
  LocalCluster cluster(1);
  auto rings = cluster.FormAll();
  std::vector<float> v{1.5f, -2.0f, 3.25f};
  for (bool average : {false, true}) {
    auto stats = RingAllreduce(*rings[0], v, {.tag = "solo", .average = average});
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    EXPECT_EQ(stats->bytes_sent, 0u);
    EXPECT_EQ(v, (std::vector<float>{1.5f, -2.0f, 3.25f}));
  }
}

TEST(AllreduceTest, SegmentSmallerThanAFloatIsRejected) {
  LocalCluster cluster(1);
  auto rings = cluster.FormAll();
  std::vector<float> v{1.0f};
  auto stats = RingAllreduce(*rings[0], v, {.tag = "t", .segment_bytes = 2});
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().code(), StatusCode::kInvalidArgument);
}

// Both ranks fail. At least one names the wrong shape; the other may instead see its neighbour's
// abort first (closing a socket with unread data sends a TCP reset, which can overtake the
// mismatched header), which must then be a clean "closed" error, never a hang or a result.
TEST(AllreduceTest, MismatchedSizesAreAWrongShapeAndBothSidesFail) {
  LocalCluster cluster(2);
  auto rings = cluster.FormAll();
  auto outcomes = RunAllreduce(rings, {std::vector<float>(10, 1.0f), std::vector<float>(11, 1.0f)},
                               {.tag = "t", .deadline = DeadlineAfter(10s)});
  int named = 0;
  for (const auto& o : outcomes) {
    ASSERT_FALSE(o.status.ok());
    if (o.status.code() == StatusCode::kInvalidArgument) {
      EXPECT_TRUE(Contains(o.status.message(), "wrong shape")) << o.status.ToString();
      ++named;
    } else {
      EXPECT_EQ(o.status.code(), StatusCode::kUnavailable) << o.status.ToString();
    }
  }
  EXPECT_GE(named, 1);
}

TEST(AllreduceTest, OverflowingSumIsAnErrorNotAnInfinity) {
  LocalCluster cluster(2);
  auto rings = cluster.FormAll();
  const std::vector<float> big(2, FLT_MAX);
  auto outcomes = RunAllreduce(rings, {big, big}, {.tag = "t", .deadline = DeadlineAfter(10s)});
  // Whoever sums first names the overflow and breaks the ring; the other may see that first.
  int named = 0;
  for (const auto& o : outcomes) {
    ASSERT_FALSE(o.status.ok());
    if (Contains(o.status.message(), "overflow")) {
      ++named;
    } else {
      EXPECT_EQ(o.status.code(), StatusCode::kUnavailable) << o.status.ToString();
    }
  }
  EXPECT_GE(named, 1);
}

TEST(AllreduceTest, NeighbourClosingMidCollectiveFailsTheOthersFast) {
  LocalCluster cluster(3);
  auto rings = cluster.FormAll();
  const size_t numel = 300000;
  const auto start = Clock::now();
  auto outcomes = OnEveryRank(3, [&](uint32_t r) -> Status {
    if (r == 2) {  // takes one segment header, then drops both its connections
      (void)rings[2]->prev().Receive(DeadlineAfter(5s));
      rings[2]->Abort();
      return Status::Ok();
    }
    std::vector<float> v(numel, 1.0f);
    auto result = RingAllreduce(
        *rings[r], v, {.tag = "t", .deadline = DeadlineAfter(20s), .segment_bytes = 4096});
    return result.ok() ? Status::Ok() : result.status();
  });
  EXPECT_LT(SecondsSince(start), 5.0) << "no one may wait for the 20 s deadline";
  // Rank 0 reads from rank 2; rank 1 writes to rank 2 and reads from rank 0.
  ASSERT_FALSE(outcomes[0].ok());
  EXPECT_EQ(outcomes[0].code(), StatusCode::kUnavailable) << outcomes[0].ToString();
  EXPECT_TRUE(Contains(outcomes[0].message(), "rank 2 'peer-2' at 127.0.0.1:"))
      << outcomes[0].ToString();
  ASSERT_FALSE(outcomes[1].ok());
  EXPECT_TRUE(Contains(outcomes[1].message(), "rank 0") ||
              Contains(outcomes[1].message(), "rank 2"))
      << outcomes[1].ToString();
  EXPECT_TRUE(rings[0]->broken());
}

// With a backup, a call that fails after it reduced into `data` puts every region back: rank 2's
// own NaN (in the last segment of its chunk 1) fails it mid reduce-scatter, after ranks 0 and 1
// already reduced what it and they had sent.
TEST(AllreduceTest, BackupRestoresDataAfterAFailureMidway) {
  const uint32_t world = 3;
  const size_t n = 3000;
  LocalCluster cluster(world);
  auto rings = cluster.FormAll();
  std::vector<std::vector<float>> inputs;
  for (uint32_t r = 0; r < world; ++r) inputs.push_back(Input(90 + r, n));
  inputs[2][1999] = std::numeric_limits<float>::quiet_NaN();  // chunk 1 is [1000, 2000)
  std::vector<std::vector<float>> backups(world, std::vector<float>(n));
  auto outs = OnEveryRank(world, [&](uint32_t r) {
    std::vector<float> data = inputs[r];
    auto result = RingAllreduce(*rings[r], data,
                                {.tag = "b", .deadline = DeadlineAfter(10s), .segment_bytes = 256,
                                 .backup = backups[r]});
    return std::make_pair(result.status(), data);
  });
  for (uint32_t r = 0; r < world; ++r) {
    ASSERT_FALSE(outs[r].first.ok()) << "rank " << r;
    EXPECT_EQ(std::memcmp(outs[r].second.data(), inputs[r].data(), n * sizeof(float)), 0)
        << "rank " << r << " did not get its data back: " << outs[r].first.ToString();
  }
}

TEST(AllreduceTest, SilentNeighbourIsADeadlineNotAHang) {
  LocalCluster cluster(2);
  auto rings = cluster.FormAll();
  std::vector<float> v(1000, 1.0f);
  const auto start = Clock::now();
  auto result = RingAllreduce(*rings[0], v, {.tag = "t", .deadline = DeadlineAfter(300ms)});
  EXPECT_LT(SecondsSince(start), 2.0);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kDeadlineExceeded) << result.status().ToString();
  EXPECT_TRUE(Contains(result.status().message(), "rank 1")) << result.status().ToString();

  auto again = RingAllreduce(*rings[0], v, {.tag = "t2", .deadline = DeadlineAfter(1s)});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition) << "the ring is broken";
}

// --- a neighbour that sends hand-crafted segments -------------------------------------------

struct Segment {
  std::string tag = "t";
  v1::DType dtype = v1::DTYPE_F32;
  uint64_t numel = 10;
  uint64_t offset = 5;
  std::vector<float> values = std::vector<float>(5, 1.0f);
};

Status SendSegment(net::Connection& to, const Segment& s) {
  v1::Envelope env = net::MakeEnvelope("job");
  v1::TensorHeader* h = env.mutable_tensor();
  h->set_tag(s.tag);
  h->set_dtype(s.dtype);
  h->set_numel(s.numel);
  h->set_offset(s.offset);
  h->set_nbytes(s.values.size() * sizeof(float));
  TRIB_RETURN_IF_ERROR(to.QueueSend(env, std::as_bytes(std::span(s.values))));
  return to.Flush(DeadlineAfter(2s));
}

struct BadSegmentCase {
  std::string name;
  std::vector<Segment> segments;  // what rank 1 sends to rank 0, in order
  StatusCode code;
  std::string words;
};

// World 2, 10 elements: rank 0 first receives chunk 1 (offset 5, 5 elements) to reduce, then
// chunk 0 (offset 0) in the all-gather.
std::vector<BadSegmentCase> BadSegmentCases() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<BadSegmentCase> cases{
      {"WrongNumel", {Segment{.numel = 11}}, StatusCode::kInvalidArgument, "wrong shape"},
      {"WrongDtype",
       {Segment{.dtype = v1::DTYPE_UNSPECIFIED}},
       StatusCode::kInvalidArgument,
       "wrong dtype"},
      {"WrongTag", {Segment{.tag = "other"}}, StatusCode::kProtocolError, "wrong tag"},
      {"WrongOffset", {Segment{.offset = 0}}, StatusCode::kProtocolError, "wrong segment"},
      {"ShortSegment", {Segment{.values = {1, 2, 3}}}, StatusCode::kProtocolError, "wrong segment"},
      {"NaNWhileReducing",
       {Segment{.values = {1, 2, nan, 4, 5}}},
       StatusCode::kInvalidArgument,
       "non-finite value NaN at element 7"},
      {"InfWhileReducing",
       {Segment{.values = {1, 2, 3, 4, inf}}},
       StatusCode::kInvalidArgument,
       "non-finite value +Inf at element 9"},
      {"NegInfInAllGather",
       {Segment{}, Segment{.offset = 0, .values = {-inf, 1, 1, 1, 1}}},
       StatusCode::kInvalidArgument,
       "non-finite value -Inf at element 0"},
  };
  return cases;
}

void PrintTo(const BadSegmentCase& c, std::ostream* os) { *os << c.name; }

class BadSegmentTest : public ::testing::TestWithParam<BadSegmentCase> {};

TEST_P(BadSegmentTest, IsRejectedNamingThePeer) {
  const BadSegmentCase& c = GetParam();
  LocalCluster cluster(2);
  auto rings = cluster.FormAll();
  auto victim = std::async(std::launch::async, [&] {
    std::vector<float> v(10, 1.0f);
    return RingAllreduce(*rings[0], v, {.tag = "t", .deadline = DeadlineAfter(10s)});
  });
  for (const Segment& s : c.segments) {
    ASSERT_TRUE(SendSegment(rings[1]->next(), s).ok());
  }
  auto result = victim.get();  // rank 1 keeps its connections open until rank 0 is done
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), c.code) << result.status().ToString();
  EXPECT_TRUE(Contains(result.status().message(), c.words)) << result.status().ToString();
  EXPECT_TRUE(Contains(result.status().message(), "from prev rank 1 'peer-1' at 127.0.0.1:"))
      << result.status().ToString();
}

INSTANTIATE_TEST_SUITE_P(Cases, BadSegmentTest, ::testing::ValuesIn(BadSegmentCases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace tributary::collectives
