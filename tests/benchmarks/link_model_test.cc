#include "benchmarks/wan/link_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace tributary::wan {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kUs = 1'000;

TEST(LinkModelTest, UnshapedLinkAddsOnlyTheDelay) {
  LinkParams p;
  p.delay_ms = 15;
  LinkModel link(p, 1);
  for (int64_t now : {int64_t{0}, 5 * kMs, 5 * kMs, 100 * kMs}) {
    Admission a = link.Admit(now, 1500);
    ASSERT_EQ(a.verdict, Verdict::kDeliver);
    EXPECT_EQ(a.deliver_at_ns, now + 15 * kMs);
  }
  EXPECT_EQ(link.backlog_packets(), 0u);
}

TEST(LinkModelTest, SerialisesBackToBackPacketsAtTheRate) {
  LinkParams p;
  p.rate_mbit = 100;  // 1500 B = 12000 bit = 120 µs
  p.delay_ms = 10;
  LinkModel link(p, 1);
  // Ten packets arrive together: each leaves 120 µs after the previous one.
  for (int k = 0; k < 10; ++k) {
    Admission a = link.Admit(0, 1500);
    ASSERT_EQ(a.verdict, Verdict::kDeliver);
    EXPECT_EQ(a.deliver_at_ns, (k + 1) * 120 * kUs + 10 * kMs) << "packet " << k;
  }
  EXPECT_EQ(link.backlog_packets(), 10u);
  EXPECT_EQ(link.backlog_bytes(), 15000);
  // After 600 µs, five have been serialised; an idle link starts at `now` again.
  link.Admit(600 * kUs, 100);
  EXPECT_EQ(link.backlog_packets(), 6u);
  Admission late = link.Admit(10 * kMs, 1500);
  EXPECT_EQ(late.deliver_at_ns, 10 * kMs + 120 * kUs + 10 * kMs);
}

TEST(LinkModelTest, LongRunThroughputEqualsTheRate) {
  LinkParams p;
  p.rate_mbit = 37.5;
  LinkModel link(p, 1);
  int64_t last = 0;
  const int packets = 100'000;
  for (int k = 0; k < packets; ++k) last = link.Admit(k * kUs, 1000).deliver_at_ns;  // overdriven
  const double mbit = packets * 1000.0 * 8 / (static_cast<double>(last) / 1e9) / 1e6;
  EXPECT_NEAR(mbit, 37.5, 37.5 * 1e-6);
}

TEST(LinkModelTest, DropTailOnBytesAndOnPackets) {
  LinkParams p;
  p.rate_mbit = 8;  // 1 byte per µs
  p.queue_bytes = 5000;
  LinkModel by_bytes(p, 1);
  int delivered = 0, dropped = 0;
  for (int k = 0; k < 10; ++k) {
    (by_bytes.Admit(0, 1000).verdict == Verdict::kDeliver ? delivered : dropped)++;
  }
  EXPECT_EQ(delivered, 5);
  EXPECT_EQ(dropped, 5);
  // 2 ms later two packets have left the serialiser: room for exactly two more.
  EXPECT_EQ(by_bytes.Admit(2000 * kUs, 1000).verdict, Verdict::kDeliver);
  EXPECT_EQ(by_bytes.Admit(2000 * kUs, 1000).verdict, Verdict::kDeliver);
  EXPECT_EQ(by_bytes.Admit(2000 * kUs, 1000).verdict, Verdict::kDropQueue);

  p.queue_bytes = 0;
  p.queue_packets = 3;
  LinkModel by_packets(p, 1);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(by_packets.Admit(0, 64).verdict, Verdict::kDeliver);
  EXPECT_EQ(by_packets.Admit(0, 64).verdict, Verdict::kDropQueue);
}

TEST(LinkModelTest, LossRateIsWithinBinomialToleranceAndDeterministic) {
  LinkParams p;
  p.loss = 0.02;
  const int n = 200'000;
  std::vector<bool> first;
  for (int run = 0; run < 2; ++run) {
    LinkModel link(p, 42);
    int lost = 0;
    std::vector<bool> pattern;
    for (int k = 0; k < n; ++k) {
      const bool l = link.Admit(k, 100).verdict == Verdict::kDropLoss;
      lost += l;
      pattern.push_back(l);
    }
    const double sigma = std::sqrt(n * p.loss * (1 - p.loss));
    EXPECT_NEAR(lost, n * p.loss, 4 * sigma);
    if (run == 0) first = pattern;
    else EXPECT_EQ(pattern, first) << "same seed must give the same losses";
  }
}

TEST(LinkModelTest, LostPacketsStillOccupyTheLink) {
  LinkParams p;
  p.rate_mbit = 8;  // 1 byte per µs
  p.loss = 1.0;
  LinkModel link(p, 1);
  EXPECT_EQ(link.Admit(0, 1000).verdict, Verdict::kDropLoss);
  EXPECT_EQ(link.backlog_bytes(), 1000);  // serialised, then lost on the wire
}

TEST(LinkModelTest, UniformJitterSpansDelayPlusMinusJitter) {
  LinkParams p;
  p.delay_ms = 20;
  p.jitter_ms = 5;
  LinkModel link(p, 7);
  int64_t min_delay = INT64_MAX, max_delay = 0;
  for (int k = 0; k < 5'000; ++k) {
    const int64_t now = k * 20 * kMs;  // sparser than the jitter span: the order clamp never acts
    const int64_t d = link.Admit(now, 1000).deliver_at_ns - now;
    min_delay = std::min(min_delay, d);
    max_delay = std::max(max_delay, d);
  }
  EXPECT_GE(min_delay, 15 * kMs);
  EXPECT_LT(min_delay, 15 * kMs + 100 * kUs);
  EXPECT_LE(max_delay, 25 * kMs);
  EXPECT_GT(max_delay, 25 * kMs - 100 * kUs);
}

TEST(LinkModelTest, JitterNeverReordersUnlessAllowed) {
  LinkParams p;
  p.delay_ms = 20;
  p.jitter_ms = 5;
  for (bool allow : {false, true}) {
    p.allow_reorder = allow;
    LinkModel link(p, 7);
    int64_t previous = 0;
    int overtaken = 0;
    for (int k = 0; k < 20'000; ++k) {
      const int64_t at = link.Admit(k * 100 * kUs, 1000).deliver_at_ns;
      overtaken += at < previous;
      previous = std::max(previous, at);
    }
    if (allow) {
      EXPECT_GT(overtaken, 100);
    } else {
      EXPECT_EQ(overtaken, 0);
    }
  }
}

TEST(LinkModelTest, NormalJitterHasTheConfiguredSpread) {
  LinkParams p;
  p.delay_ms = 50;
  p.jitter_ms = 2;
  p.jitter_distribution = JitterDistribution::kNormal;
  p.allow_reorder = true;  // measure the raw distribution
  LinkModel link(p, 3);
  const int n = 50'000;
  double sum = 0, sum2 = 0;
  for (int k = 0; k < n; ++k) {
    const double d = (link.Admit(k * kMs, 100).deliver_at_ns - k * kMs) / 1e6;
    sum += d;
    sum2 += d * d;
  }
  const double mean = sum / n;
  EXPECT_NEAR(mean, 50, 0.05);
  EXPECT_NEAR(std::sqrt(sum2 / n - mean * mean), 2, 0.05);
}

TEST(LinkModelTest, ReconfigureAppliesToPacketsAdmittedLater) {
  LinkParams p;
  p.delay_ms = 10;
  LinkModel link(p, 1);
  EXPECT_EQ(link.Admit(0, 100).deliver_at_ns, 10 * kMs);
  p.delay_ms = 40;
  link.Reconfigure(p);
  EXPECT_EQ(link.Admit(kMs, 100).deliver_at_ns, 41 * kMs);
}

}  // namespace
}  // namespace tributary::wan
