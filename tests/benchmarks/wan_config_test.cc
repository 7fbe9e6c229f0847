#include "benchmarks/wan/wan_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "benchmarks/wan/netns.h"

namespace tributary::wan {
namespace {

using ::testing::HasSubstr;

// The message of a scenario that must be refused.
std::string Refusal(const std::string& toml) {
  auto c = ParseScenario(toml, "s.toml");
  EXPECT_FALSE(c.ok()) << "accepted:\n" << toml;
  return c.ok() ? "" : c.status().message();
}

TEST(WanPresetTest, PresetsHaveTheAdvertisedNumbers) {
  auto continent = PresetConfig("continent", 3);
  ASSERT_TRUE(continent.ok());
  EXPECT_EQ(continent->num_peers, 3);
  EXPECT_DOUBLE_EQ(continent->link(0, 2).rate_mbit, 1000);
  EXPECT_DOUBLE_EQ(continent->link(2, 0).delay_ms, 15);  // 30 ms RTT
  EXPECT_EQ(continent->link(0, 1).queue_bytes, 3'750'000);  // one BDP

  auto atlantic = PresetConfig("transatlantic", 2);
  ASSERT_TRUE(atlantic.ok());
  EXPECT_DOUBLE_EQ(atlantic->link(0, 1).rate_mbit, 100);
  EXPECT_DOUBLE_EQ(atlantic->link(1, 0).delay_ms, 50);

  auto lan = PresetConfig("lan", 2);
  ASSERT_TRUE(lan.ok());
  EXPECT_DOUBLE_EQ(lan->link(0, 1).rate_mbit, 0);  // unshaped
  EXPECT_DOUBLE_EQ(lan->link(0, 1).delay_ms, 0.05);

  // Between two home peers the sender's 5 Mbit/s uplink is the bottleneck.
  auto home = PresetConfig("home", 2);
  ASSERT_TRUE(home.ok());
  EXPECT_DOUBLE_EQ(home->link(0, 1).rate_mbit, 5);
  EXPECT_DOUBLE_EQ(home->link(0, 1).delay_ms, 20);
  EXPECT_DOUBLE_EQ(home->link(0, 1).loss, 0.01);
  EXPECT_EQ(home->link(0, 1).queue_bytes, 64 * 1024);  // BDP is smaller than the floor

  EXPECT_THAT(PresetConfig("moon", 2).status().message(), HasSubstr("known: lan, continent"));
  EXPECT_FALSE(PresetConfig("lan", 1).ok());
}

TEST(WanPresetTest, HeterogeneousPeersGetAsymmetricLinks) {
  PeerProfile dc = *PresetProfile("continent");
  PeerProfile home = *PresetProfile("home");
  LinkParams down = ComposeLink(dc, home);
  LinkParams up = ComposeLink(home, dc);
  EXPECT_DOUBLE_EQ(down.rate_mbit, 20);  // the home's downlink
  EXPECT_DOUBLE_EQ(up.rate_mbit, 5);     // the home's uplink
  EXPECT_DOUBLE_EQ(down.delay_ms, 17.5); // mean of 15 and 20
  EXPECT_DOUBLE_EQ(up.loss, 0.01);
  EXPECT_DOUBLE_EQ(down.loss, 0.01);
}

TEST(WanScenarioTest, ParsesPeersMatrixAndLinkOverrides) {
  auto c = ParseScenario(R"(
peers = 3
preset = "continent"
subnet = "10.77.5.0/24"
mtu = 9000
seed = 9

[[peer]]
index = 2
preset = "home"
loss = 0.02

[matrix]
delay_ms = [[0, 11, 12], [21, 0, 23], [31, 32, 0]]

[[link]]
from = 0
to = 1
rate_mbit = 250
jitter_ms = 1.5
jitter_distribution = "normal"
queue_packets = 100
)", "s.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_peers, 3);
  EXPECT_EQ(c->subnet, "10.77.5.0/24");
  EXPECT_EQ(c->mtu, 9000);
  EXPECT_EQ(c->seed, 9u);
  EXPECT_DOUBLE_EQ(c->link(1, 0).delay_ms, 21);
  EXPECT_DOUBLE_EQ(c->link(2, 1).delay_ms, 32);
  EXPECT_DOUBLE_EQ(c->link(1, 0).rate_mbit, 1000);
  EXPECT_DOUBLE_EQ(c->link(2, 0).rate_mbit, 5);   // home uplink
  EXPECT_DOUBLE_EQ(c->link(0, 2).rate_mbit, 20);  // home downlink
  EXPECT_DOUBLE_EQ(c->link(0, 2).loss, 0.02);
  const LinkParams& l = c->link(0, 1);
  EXPECT_DOUBLE_EQ(l.rate_mbit, 250);
  EXPECT_DOUBLE_EQ(l.delay_ms, 11);
  EXPECT_DOUBLE_EQ(l.jitter_ms, 1.5);
  EXPECT_EQ(l.jitter_distribution, JitterDistribution::kNormal);
  EXPECT_EQ(l.queue_packets, 100);
  // The queue follows the link's own rate and delay: 250 Mbit/s × 22 ms.
  EXPECT_EQ(l.queue_bytes, 687'500);
}

TEST(WanScenarioTest, RefusesBadFilesWithTheLineAndTheKey) {
  EXPECT_THAT(Refusal("peers = 2\nprest = \"lan\"\n"),
              HasSubstr("s.toml:2: unknown key 'prest'"));
  EXPECT_THAT(Refusal("peers = 2\n[[link]]\nfrom = 0\nto = 1\ndealy_ms = 3\n"),
              HasSubstr("unknown key 'link[0].dealy_ms'"));
  EXPECT_THAT(Refusal("peers = 2\n[[link]]\nfrom = 0\nto = 1\nrate_mbit = -5\n"),
              HasSubstr("link[0].rate_mbit must be in [0, 1000000], got -5"));
  EXPECT_THAT(Refusal("peers = 2\n[[link]]\nfrom = 0\nto = 1\nrate_mbit = \"fast\"\n"),
              HasSubstr("link[0].rate_mbit must be a number"));
  EXPECT_THAT(Refusal("peers = 2\n[[link]]\nfrom = 1\nto = 1\n"), HasSubstr("to itself"));
  EXPECT_THAT(Refusal("peers = 2\n[[link]]\nfrom = 0\nto = 2\n"),
              HasSubstr("link[0].to = 2 is outside 0..1"));
  EXPECT_THAT(Refusal("peers = 2\n[[link]]\nfrom = 0\nto = 1\nloss = 1.5\n"),
              HasSubstr("loss must be in [0, 1]"));
  EXPECT_THAT(Refusal("peers = 3\n[matrix]\ndelay_ms = [[0, 1, 2], [1, 0, 2]]\n"),
              HasSubstr("matrix.delay_ms must have 3 rows (peers = 3), got 2"));
  EXPECT_THAT(Refusal("peers = 2\n[matrix]\nrate_mbit = [[0, 1], [1, 0, 5]]\n"),
              HasSubstr("matrix.rate_mbit[1] must be an array of 2 numbers"));
  EXPECT_THAT(Refusal("peers = 2\n[matrix]\nrate_mbit = [[0, -1], [1, 0]]\n"),
              HasSubstr("matrix.rate_mbit[0][1] must be >= 0"));
  EXPECT_THAT(Refusal("peers = 2\n[matrix]\nbandwidth = [[0, 1], [1, 0]]\n"),
              HasSubstr("unknown key 'matrix.bandwidth'"));
  EXPECT_THAT(Refusal("peers = 2\n[[peer]]\nindex = 0\nup_mbit = -1\n"),
              HasSubstr("peer[0].up_mbit must be >= 0"));
  EXPECT_THAT(Refusal("peers = 2\n[[peer]]\nindex = 0\n[[peer]]\nindex = 0\n"),
              HasSubstr("described twice"));
  EXPECT_THAT(Refusal("peers = 2\n[[peer]]\nindex = 1\npreset = \"moon\"\n"),
              HasSubstr("unknown preset 'moon'"));
  EXPECT_THAT(Refusal("peers = 2\n[[link]]\nfrom = 0\nto = 1\njitter_distribution = \"pareto\"\n"),
              HasSubstr("jitter_distribution must be \"uniform\" or \"normal\""));
  EXPECT_THAT(Refusal("preset = \"lan\"\n"), HasSubstr("needs 'peers = N'"));
  EXPECT_THAT(Refusal("peers = 1\n"), HasSubstr("peers must be between 2 and"));
  EXPECT_THAT(Refusal("peers = 2\nsubnet = \"10.77.0.0\"\n"), HasSubstr("a.b.c.d/prefix"));
  EXPECT_THAT(Refusal("peers = 8\nsubnet = \"10.77.0.0/30\"\n"), HasSubstr("room for 2 hosts"));
  EXPECT_THAT(Refusal("peers = 2\nmtu = 100\n"), HasSubstr("mtu must be between 576"));
  EXPECT_THAT(Refusal("peers = 2\n[matrix\n"), HasSubstr("s.toml:2:"));  // TOML syntax error
  EXPECT_THAT(LoadScenarioFile("/nonexistent/wan.toml").status().message(),
              HasSubstr("cannot read scenario /nonexistent/wan.toml"));
}

TEST(WanScenarioTest, ShippedScenariosParse) {
  const std::string dir = TRIBUTARY_WAN_SCENARIOS;
  auto homes = LoadScenarioFile(dir + "/dc_and_homes.toml");
  ASSERT_TRUE(homes.ok()) << homes.status().ToString();
  EXPECT_DOUBLE_EQ(homes->link(0, 1).rate_mbit, 20);
  EXPECT_DOUBLE_EQ(homes->link(1, 0).rate_mbit, 5);
  EXPECT_DOUBLE_EQ(homes->link(1, 2).rate_mbit, 5);
  EXPECT_DOUBLE_EQ(homes->link(0, 3).delay_ms, 17.5);

  auto regions = LoadScenarioFile(dir + "/three_regions.toml");
  ASSERT_TRUE(regions.ok()) << regions.status().ToString();
  EXPECT_EQ(regions->num_peers, 6);
  EXPECT_DOUBLE_EQ(regions->link(2, 4).delay_ms, 110);
  EXPECT_DOUBLE_EQ(regions->link(4, 5).rate_mbit, 1000);
  EXPECT_EQ(regions->tcp_buffer_bytes, 33554432);

  auto bad = LoadScenarioFile(dir + "/one_bad_link.toml");
  ASSERT_TRUE(bad.ok()) << bad.status().ToString();
  EXPECT_DOUBLE_EQ(bad->link(2, 3).rate_mbit, 50);
  EXPECT_EQ(bad->link(2, 3).queue_packets, 100);
  EXPECT_DOUBLE_EQ(bad->link(3, 2).rate_mbit, 1000);
}

TEST(WanConfigTest, SubnetsAndValidation) {
  auto s = ParseSubnet("10.77.3.9/24");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(FormatIpv4(s->base + 1), "10.77.3.1");
  EXPECT_EQ(s->prefix, 24);
  EXPECT_FALSE(ParseSubnet("10.77.0.0/31").ok());
  EXPECT_FALSE(ParseSubnet("300.1.1.1/24").ok());

  WanConfig c = *PresetConfig("continent", 2);
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.name_prefix = "bad-prefix";
  EXPECT_THAT(ValidateConfig(c).message(), HasSubstr("must not contain '-'"));
  c.name_prefix = "trib";
  c.link(1, 0).delay_ms = -1;
  EXPECT_THAT(ValidateConfig(c).message(), HasSubstr("link 1->0.delay_ms"));
  c.links.pop_back();
  EXPECT_THAT(ValidateConfig(c).message(), HasSubstr("peers × peers"));
}

TEST(WanNamesTest, NamespaceNamesRoundTrip) {
  auto p = ParseNamespaceName("trib-4242-p3");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->run_id, "trib-4242");
  EXPECT_EQ(p->prefix, "trib");
  EXPECT_EQ(p->pid, 4242);
  EXPECT_EQ(p->peer, 3);
  auto second = ParseNamespaceName("wantest-77-2-p10");
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->run_id, "wantest-77-2");
  EXPECT_EQ(second->pid, 77);
  EXPECT_EQ(second->peer, 10);
  for (const char* other : {"trib-p0", "trib-abc-p1", "myns", "trib-1-2-3-p0", "Trib-1-p0",
                            "trib-1-px"}) {
    EXPECT_FALSE(ParseNamespaceName(other).has_value()) << other;
  }
  EXPECT_EQ(PeerNamespace("trib-9", 2), "trib-9-p2");
}

}  // namespace
}  // namespace tributary::wan
