#include "net/tcp_tuning.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <string>

#include "net/connection.h"
#include "net/io_thread.h"

namespace tributary::net {
namespace {

using namespace std::chrono_literals;

// An IPv4 address of this host other than loopback, to reach ourselves over a "remote" link.
std::optional<std::string> NonLoopbackAddress() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return std::nullopt;
  std::optional<std::string> found;
  for (ifaddrs* a = list; a != nullptr && !found; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
    if ((ntohl(in->sin_addr.s_addr) >> 24) == 127) continue;
    char text[INET_ADDRSTRLEN] = {};
    if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) != nullptr) found = text;
  }
  freeifaddrs(list);
  return found;
}

// Reno is built into every kernel and always allowed; CUBIC when Reno is the default.
std::string BuiltInOtherThanDefault() { return KernelDefaultCongestionControl() == "reno" ? "cubic" : "reno"; }

class TcpTuningTest : public ::testing::Test {
 protected:
  void TearDown() override { SetPreferredCongestionControl(kDefaultCongestionControl); }

  // Both ends of one connection over `host`.
  std::pair<std::shared_ptr<Connection>, std::shared_ptr<Connection>> Pair(const std::string& host) {
    auto listener = Listener::Bind(io_.context(), host, 0);
    EXPECT_TRUE(listener.ok()) << listener.status().ToString();
    if (!listener.ok()) return {};
    auto client = Connection::Dial(io_.context(), host, (*listener)->port(), DeadlineAfter(2s));
    auto server = (*listener)->Accept(DeadlineAfter(2s));
    EXPECT_TRUE(client.ok() && server.ok());
    if (!client.ok() || !server.ok()) return {};
    return {*client, *server};
  }

  // What the kernel runs for a fresh TCP socket once the preference has been applied to it.
  static std::string AppliedToAFreshSocket(bool loopback) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(fd, 0);
    ApplyPreferredCongestionControl(fd, loopback);
    auto running = CongestionControlOf(fd);
    ::close(fd);
    EXPECT_TRUE(running.ok()) << running.status().ToString();
    return running.ok() ? *running : std::string();
  }

  IoThread io_{"tuning-io"};
};

// The rule itself, on any machine: the preference applies unless the link is loopback or the
// preference is empty; a name the kernel refuses leaves its default.
TEST_F(TcpTuningTest, ThePreferenceAppliesExceptOnLoopbackOrWhenEmptyOrRefused) {
  const std::string kernel = KernelDefaultCongestionControl();
  ASSERT_FALSE(kernel.empty());
  const std::string wanted = BuiltInOtherThanDefault();
  SetPreferredCongestionControl(wanted);
  EXPECT_EQ(AppliedToAFreshSocket(/*loopback=*/false), wanted);
  EXPECT_EQ(AppliedToAFreshSocket(/*loopback=*/true), kernel);
  SetPreferredCongestionControl("");
  EXPECT_EQ(AppliedToAFreshSocket(false), kernel);
  SetPreferredCongestionControl("no-such-algorithm");
  EXPECT_EQ(AppliedToAFreshSocket(false), kernel);
}

// A Connection applies it to both ends, and a loopback connection keeps the kernel's default.
TEST_F(TcpTuningTest, ConnectionsToOtherHostsRunThePreferenceAndLoopbackOnesTheDefault) {
  const std::string wanted = BuiltInOtherThanDefault();
  SetPreferredCongestionControl(wanted);
  auto expect_both = [](const auto& ends, const std::string& name) {
    for (const auto& end : {ends.first, ends.second}) {
      auto running = end->congestion_control();
      ASSERT_TRUE(running.ok()) << running.status().ToString();
      EXPECT_EQ(*running, name);
    }
  };
  auto local = Pair("127.0.0.1");
  ASSERT_TRUE(local.first && local.second);
  expect_both(local, KernelDefaultCongestionControl());

  // Reaching ourselves through a non-loopback address needs one; a host without any (a bare
  // container) cannot show this half, and the rule above is tested regardless.
  const auto host = NonLoopbackAddress();
  if (!host) GTEST_SKIP() << "no IPv4 address besides loopback";
  auto remote = Pair(*host);
  ASSERT_TRUE(remote.first && remote.second);
  expect_both(remote, wanted);
  ASSERT_TRUE(remote.first->Send(MakeEnvelope("job"), DeadlineAfter(2s)).ok());
  auto got = remote.second->Receive(DeadlineAfter(2s));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->job_id(), "job");
  // An empty preference, and one the kernel refuses, leave working connections on the default.
  for (const char* preference : {"", "no-such-algorithm"}) {
    SetPreferredCongestionControl(preference);
    auto other = Pair(*host);
    ASSERT_TRUE(other.first && other.second);
    expect_both(other, KernelDefaultCongestionControl());
    ASSERT_TRUE(other.second->Send(MakeEnvelope("job"), DeadlineAfter(2s)).ok());
    ASSERT_TRUE(other.first->Receive(DeadlineAfter(2s)).ok()) << preference;
  }
}

TEST_F(TcpTuningTest, AClosedConnectionSaysSoInsteadOfReadingAReusedDescriptor) {
  auto [client, server] = Pair("127.0.0.1");
  ASSERT_TRUE(client && server);
  client->Close();
  EXPECT_EQ(client->congestion_control().status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(client->RestartCongestionControl().code(), StatusCode::kUnavailable);
}

// A restart re-initialises the algorithm the connection runs and leaves it the same one, on a
// connection that keeps working.
TEST_F(TcpTuningTest, ARestartKeepsTheAlgorithmAndTheConnection) {
  auto [client, server] = Pair("127.0.0.1");
  ASSERT_TRUE(client && server);
  const auto before = client->congestion_control();
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(client->RestartCongestionControl().ok());
    EXPECT_EQ(client->congestion_control().value(), *before);
    ASSERT_TRUE(client->Send(MakeEnvelope("job"), DeadlineAfter(2s)).ok());
    auto got = server->Receive(DeadlineAfter(2s));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(RestartCongestionControl(fd).ok());
  EXPECT_EQ(CongestionControlOf(fd).value(), KernelDefaultCongestionControl());
  ::close(fd);
  EXPECT_FALSE(RestartCongestionControl(fd).ok());  // not a socket any more
}

}  // namespace
}  // namespace tributary::net
