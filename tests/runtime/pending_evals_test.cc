#include "runtime/pending_evals.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace tributary::runtime {
namespace {

std::vector<std::pair<uint64_t, double>> Carried(const v1::RoundReport& report) {
  std::vector<std::pair<uint64_t, double>> out;
  for (const v1::EarlierEval& e : report.earlier_evals()) out.emplace_back(e.round(), e.loss());
  return out;
}

using Evals = std::vector<std::pair<uint64_t, double>>;

// A loss goes with every report until a round whose report carried it commits: a report lost
// with a crashed coordinator, or a round that failed, does not lose it.
TEST(PendingEvalsTest, LossesAreResentUntilACarryingReportCommits) {
  PendingEvals pending;
  pending.Add(3, 2.5);
  v1::RoundReport first;
  pending.AttachTo(first, 5);
  EXPECT_EQ(Carried(first), (Evals{{3, 2.5}}));

  // Round 5 failed (or its report was lost): the retry's report carries it again, with a newer one.
  pending.Add(4, 2.4);
  v1::RoundReport retry;
  pending.AttachTo(retry, 5);
  EXPECT_EQ(Carried(retry), (Evals{{3, 2.5}, {4, 2.4}}));

  // A commit of an earlier round acknowledges nothing carried by round 5's report.
  pending.Committed(4);
  EXPECT_EQ(pending.size(), 2u);
  // Round 5 committed with our state: the coordinator read its report.
  pending.Committed(5);
  EXPECT_EQ(pending.size(), 0u);
  v1::RoundReport next;
  pending.AttachTo(next, 6);
  EXPECT_TRUE(Carried(next).empty());
}

// A loss collected after a report went out is not acknowledged by that report's commit.
TEST(PendingEvalsTest, ALossNotYetCarriedSurvivesACommit) {
  PendingEvals pending;
  pending.Add(1, 3.0);
  v1::RoundReport report;
  pending.AttachTo(report, 2);
  pending.Add(2, 2.9);  // finished after round 2's report was sent
  pending.Committed(2);
  ASSERT_EQ(pending.size(), 1u);
  v1::RoundReport next;
  pending.AttachTo(next, 3);
  EXPECT_EQ(Carried(next), (Evals{{2, 2.9}}));
}

}  // namespace
}  // namespace tributary::runtime
