// End-to-end tests of the WAN emulator: real namespaces, TUN devices, UDP probes and iperf3.
// Each skips, saying why, where this process cannot create namespaces (not root, no
// /dev/net/tun, a container without CAP_SYS_ADMIN).
#include "benchmarks/wan/wan_emulator.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>

#include "benchmarks/wan/netns.h"
#include "benchmarks/wan/probe.h"

namespace tributary::wan {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr const char* kPrefix = "wantest";

// Why namespace tests cannot run here, or "" when they can.
const std::string& SkipReason() {
  static const std::string reason = [] {
    Status st = WanEmulator::CheckPrerequisites();
    return st.ok() ? std::string() : "cannot create network namespaces here: " + st.message();
  }();
  return reason;
}

#define SKIP_WITHOUT_NAMESPACES()                           \
  do {                                                      \
    if (!SkipReason().empty()) GTEST_SKIP() << SkipReason(); \
  } while (0)

bool HaveIperf3() { return std::system("iperf3 --version >/dev/null 2>&1") == 0; }

WanConfig TwoPeers(double delay_ms, double rate_mbit = 0) {
  WanConfig c = *PresetConfig("lan", 2);
  c.name_prefix = kPrefix;
  for (auto [i, j] : {std::pair{0, 1}, std::pair{1, 0}}) {
    c.link(i, j).delay_ms = delay_ms;
    c.link(i, j).rate_mbit = rate_mbit;
    c.link(i, j).queue_bytes = AutoQueueBytes(rate_mbit, delay_ms);
  }
  return c;
}

std::vector<std::string> NamespacesOf(const std::string& run_id) {
  std::vector<std::string> mine;
  for (const auto& name : ListNamedNetns()) {
    auto parsed = ParseNamespaceName(name);
    if (parsed && parsed->run_id == run_id) mine.push_back(name);
  }
  return mine;
}

// iperf3 -J's summary: one way, and --bidir with the reverse flow's receiver; an error or a
// summary without its sums is refused, not read as zero.
TEST(Iperf3JsonTest, ReadsOneWayAndBidirSummaries) {
  auto one_way = ParseIperf3Json(R"({"end": {"sum_sent": {"bits_per_second": 97e6, "retransmits": 3},
      "sum_received": {"bits_per_second": 96e6, "seconds": 6.0}}})");
  ASSERT_TRUE(one_way.ok()) << one_way.status().ToString();
  EXPECT_DOUBLE_EQ(one_way->receiver_mbit, 96);
  EXPECT_DOUBLE_EQ(one_way->sender_mbit, 97);
  EXPECT_EQ(one_way->retransmits, 3);
  EXPECT_DOUBLE_EQ(one_way->reverse_receiver_mbit, 0);

  auto both = ParseIperf3Json(R"({"end": {"sum_sent": {"bits_per_second": 93e6},
      "sum_received": {"bits_per_second": 92e6, "seconds": 6.0},
      "sum_sent_bidir_reverse": {"bits_per_second": 90e6},
      "sum_received_bidir_reverse": {"bits_per_second": 89e6}}})");
  ASSERT_TRUE(both.ok()) << both.status().ToString();
  EXPECT_DOUBLE_EQ(both->receiver_mbit, 92);
  EXPECT_DOUBLE_EQ(both->reverse_receiver_mbit, 89);

  auto refused = ParseIperf3Json(R"({"error": "unable to connect to server"})");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), ::testing::HasSubstr("unable to connect"));
  EXPECT_FALSE(ParseIperf3Json(R"({"end": {"sum_sent": {}}})").ok());
  EXPECT_FALSE(ParseIperf3Json("not json").ok());
}

TEST(WanEmulatorTest, CreatesNamespacesWithAddressesAndRemovesThem) {
  SKIP_WITHOUT_NAMESPACES();
  WanConfig c = *PresetConfig("lan", 3);
  c.name_prefix = kPrefix;
  auto wan = WanEmulator::Start(c);
  ASSERT_TRUE(wan.ok()) << wan.status().ToString();
  const std::string run = (*wan)->run_id();
  EXPECT_THAT(run, HasSubstr(std::string(kPrefix) + "-" + std::to_string(::getpid())));
  EXPECT_EQ(NamespacesOf(run).size(), 3u);
  EXPECT_EQ((*wan)->Namespace(2), run + "-p2");
  EXPECT_EQ((*wan)->Address(2), "10.77.0.3");
  // `ip netns exec` sees the namespace and the address on the TUN interface.
  std::vector<std::string> argv = (*wan)->ExecPrefix(1);
  for (const char* a : {"ip", "-4", "-o", "addr", "show", "dev", "twan0"}) argv.push_back(a);
  auto out = RunCommand(argv, DeadlineAfter(5s));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->exit_code, 0);
  EXPECT_THAT(out->output, HasSubstr("inet 10.77.0.2/24"));
  (*wan)->Stop();
  EXPECT_TRUE(NamespacesOf(run).empty());
  (*wan)->Stop();  // idempotent
}

TEST(WanEmulatorTest, RoundTripTimeMatchesTheConfiguredDelay) {
  SKIP_WITHOUT_NAMESPACES();
  auto wan = WanEmulator::Start(TwoPeers(25));
  ASSERT_TRUE(wan.ok()) << wan.status().ToString();
  auto rtt = MeasureUdpRtt(**wan, 0, 1, 30, 20ms, 2000ms);
  ASSERT_TRUE(rtt.ok()) << rtt.status().ToString();
  EXPECT_EQ(rtt->received, 30);
  EXPECT_NEAR(rtt->median_ms, 50.0, 2.0);
  EXPECT_GE(rtt->min_ms, 50.0);  // never faster than the wire
  // The path changes while running.
  LinkParams slower = (*wan)->config().link(0, 1);
  slower.delay_ms = 40;
  ASSERT_TRUE((*wan)->UpdateLink(0, 1, slower).ok());
  auto after = MeasureUdpRtt(**wan, 0, 1, 10, 20ms, 2000ms);
  ASSERT_TRUE(after.ok());
  EXPECT_NEAR(after->median_ms, 65.0, 2.0);
}

TEST(WanEmulatorTest, Iperf3ThroughputMatchesTheRate) {
  SKIP_WITHOUT_NAMESPACES();
  if (!HaveIperf3()) GTEST_SKIP() << "iperf3 is not installed";
  const double rate = 100;
  auto wan = WanEmulator::Start(TwoPeers(5, rate));
  ASSERT_TRUE(wan.ok()) << wan.status().ToString();
  auto r = RunIperf3(**wan, /*server=*/1, /*client=*/0, /*seconds=*/4, /*omit=*/1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // iperf3 reports TCP payload; the emulator shapes IP bytes. A full 1500-byte packet carries
  // 1448 payload bytes (20 B IPv4, 20 B TCP, 12 B timestamps), so the payload rate can reach
  // at most rate × 1448/1500. Compare the IP-level rate with the setting.
  const int mtu = (*wan)->config().mtu;
  const double ip_level = r->receiver_mbit * mtu / (mtu - 52);
  EXPECT_NEAR(ip_level, rate, rate * 0.05) << "iperf3 goodput " << r->receiver_mbit << " Mbit/s";
  EXPECT_LE(r->receiver_mbit, rate);
  const EmulatorStats s = (*wan)->Stats();
  EXPECT_EQ(s.tun_dropped[0], 0u) << "the emulator itself could not keep up";
}

TEST(WanEmulatorTest, LossMatchesTheProbability) {
  SKIP_WITHOUT_NAMESPACES();
  WanConfig c = TwoPeers(2);
  c.link(0, 1).loss = 0.1;
  auto wan = WanEmulator::Start(c);
  ASSERT_TRUE(wan.ok()) << wan.status().ToString();
  const int n = 4000;
  auto count = CountOneWay(**wan, 0, 1, n, 200, 50us);
  ASSERT_TRUE(count.ok()) << count.status().ToString();
  ASSERT_EQ(count->sent, n);
  const double p = 0.1, sigma = std::sqrt(n * p * (1 - p));
  EXPECT_NEAR(count->received, n * (1 - p), 4 * sigma);
  const EmulatorStats s = (*wan)->Stats();
  EXPECT_EQ(s.link(0, 1, 2).dropped_loss + static_cast<uint64_t>(count->received),
            static_cast<uint64_t>(n));
  // The reverse link has no loss.
  auto back = CountOneWay(**wan, 1, 0, 500, 200, 50us);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->received, 500);
}

TEST(WanEmulatorTest, JitterDoesNotReorderPackets) {
  SKIP_WITHOUT_NAMESPACES();
  WanConfig c = TwoPeers(10);
  c.link(0, 1).jitter_ms = 5;
  auto wan = WanEmulator::Start(c);
  ASSERT_TRUE(wan.ok()) << wan.status().ToString();
  auto count = CountOneWay(**wan, 0, 1, 1000, 100, 100us);
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count->received, 1000);
  EXPECT_TRUE(std::is_sorted(count->order.begin(), count->order.end()));
}

TEST(WanEmulatorTest, DropTailQueueDropsWhatTheLinkCannotHold) {
  SKIP_WITHOUT_NAMESPACES();
  WanConfig c = TwoPeers(1, /*rate_mbit=*/10);
  c.link(0, 1).queue_bytes = 0;
  c.link(0, 1).queue_packets = 20;
  auto wan = WanEmulator::Start(c);
  ASSERT_TRUE(wan.ok()) << wan.status().ToString();
  // 1000 datagrams of 1028 IP bytes offered at ~80 Mbit/s to a 10 Mbit/s link with 20 slots.
  auto count = CountOneWay(**wan, 0, 1, 1000, 1000, 100us);
  ASSERT_TRUE(count.ok());
  const EmulatorStats s = (*wan)->Stats();
  EXPECT_GT(s.link(0, 1, 2).dropped_queue, 500u);
  EXPECT_EQ(s.link(0, 1, 2).dropped_queue + static_cast<uint64_t>(count->received), 1000u);
  EXPECT_TRUE(std::is_sorted(count->order.begin(), count->order.end()));
}

// --- The CLI: signals, the sweeper, and refusing without privileges --------------------------

struct Child {
  pid_t pid = -1;
  int out = -1;  // stdout + stderr
};

// Starts tributary-wanem with `args`; `uid` >= 0 drops to that user first.
Child SpawnWanem(const std::vector<std::string>& args, int uid = -1) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  std::vector<std::string> argv = {TRIBUTARY_WANEM_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlive the test
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    if (uid >= 0 && (::setgid(static_cast<gid_t>(uid)) != 0 || ::setuid(static_cast<uid_t>(uid)) != 0)) {
      ::_exit(99);
    }
    ::execv(cargv[0], cargv.data());
    ::_exit(98);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

// Reads the child's output until it contains `marker` (true) or the deadline / EOF (false).
bool ReadUntil(int fd, const std::string& marker, std::string& text, Millis timeout) {
  const Deadline deadline = DeadlineAfter(timeout);
  char buf[4096];
  while (text.find(marker) == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    const long left = MillisLeft(deadline);
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) return false;
    text.append(buf, static_cast<size_t>(n));
  }
  return true;
}

// "tributary-wanem: run wantest-123, ..." → "wantest-123".
std::string RunIdFromBanner(const std::string& text) {
  const std::string key = "run ";
  const size_t at = text.find(key);
  if (at == std::string::npos) return "";
  const size_t end = text.find(',', at);
  return text.substr(at + key.size(), end - at - key.size());
}

int WaitStatus(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

TEST(WanCliTest, SigintMakesTheEmulatorRemoveItsNamespaces) {
  SKIP_WITHOUT_NAMESPACES();
  Child child = SpawnWanem({"--peers", "3", "--preset", "continent", "--prefix", kPrefix});
  std::string text;
  ASSERT_TRUE(ReadUntil(child.out, "ready\n", text, 20s)) << text;
  const std::string run = RunIdFromBanner(text);
  ASSERT_EQ(run, std::string(kPrefix) + "-" + std::to_string(child.pid));
  EXPECT_EQ(NamespacesOf(run).size(), 3u);
  ::kill(child.pid, SIGINT);
  const int status = WaitStatus(child.pid);
  ReadUntil(child.out, "\n\n", text, 1s);  // collect the goodbye for the failure message
  ::close(child.out);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_TRUE(NamespacesOf(run).empty()) << text;
  EXPECT_NE(::access((std::string(kOwnerDir) + "/" + run).c_str(), F_OK), 0);
}

TEST(WanCliTest, SweeperRemovesTheNamespacesOfASigkilledRun) {
  SKIP_WITHOUT_NAMESPACES();
  Child child = SpawnWanem({"--peers", "2", "--prefix", kPrefix});
  std::string text;
  ASSERT_TRUE(ReadUntil(child.out, "ready\n", text, 20s)) << text;
  ::close(child.out);
  const std::string run = RunIdFromBanner(text);
  ASSERT_EQ(NamespacesOf(run).size(), 2u);

  // While the owner runs, cleanup refuses.
  CleanupReport refused = CleanupRun(run, /*force=*/false);
  EXPECT_EQ(refused.owner_alive.size(), 2u);
  EXPECT_EQ(NamespacesOf(run).size(), 2u);

  ::kill(child.pid, SIGKILL);
  WaitStatus(child.pid);
  EXPECT_EQ(NamespacesOf(run).size(), 2u) << "SIGKILL leaves the namespaces behind";

  Child cleanup = SpawnWanem({"--cleanup", run});
  std::string report;
  ReadUntil(cleanup.out, "\n\n", report, 10s);
  ::close(cleanup.out);
  const int status = WaitStatus(cleanup.pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << report;
  EXPECT_THAT(report, HasSubstr("removed 2 namespace(s)"));
  EXPECT_TRUE(NamespacesOf(run).empty());
}

TEST(WanCliTest, LibrarySignalHandlerTearsDownBeforeDying) {
  SKIP_WITHOUT_NAMESPACES();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    ::close(fds[0]);
    WanConfig c = TwoPeers(1);
    c.handle_signals = true;
    auto wan = WanEmulator::Start(c);
    const std::string msg = wan.ok() ? (*wan)->run_id() + "\n" : "FAILED " + wan.status().ToString() + "\n";
    [[maybe_unused]] ssize_t w = ::write(fds[1], msg.data(), msg.size());
    for (;;) ::pause();
  }
  ::close(fds[1]);
  std::string text;
  ASSERT_TRUE(ReadUntil(fds[0], "\n", text, 20s)) << text;
  ::close(fds[0]);
  ASSERT_THAT(text, ::testing::Not(HasSubstr("FAILED")));
  const std::string run = text.substr(0, text.size() - 1);
  EXPECT_EQ(NamespacesOf(run).size(), 2u);
  ::kill(pid, SIGTERM);
  const int status = WaitStatus(pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << "status " << status;
  EXPECT_TRUE(NamespacesOf(run).empty());
}

TEST(WanCliTest, RefusesClearlyWithoutPrivileges) {
  SKIP_WITHOUT_NAMESPACES();  // we need root to become someone who is not
  Child child = SpawnWanem({"--peers", "2"}, /*uid=*/65534);
  std::string text;
  ReadUntil(child.out, "\n\n", text, 10s);
  ::close(child.out);
  const int status = WaitStatus(child.pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3) << text;
  EXPECT_THAT(text, HasSubstr("needs root"));
  EXPECT_THAT(text, HasSubstr("CAP_SYS_ADMIN"));
  EXPECT_THAT(text, HasSubstr("CAP_NET_ADMIN"));
}

}  // namespace
}  // namespace tributary::wan
