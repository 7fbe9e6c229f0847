#include "net/tcp_tuning.h"

#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <fstream>
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

std::string KernelDefault() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_congestion_control");
  std::string name;
  in >> name;
  return name;
}

// Reno is built into every kernel and always allowed; CUBIC when Reno is the default.
std::string BuiltInOtherThanDefault() { return KernelDefault() == "reno" ? "cubic" : "reno"; }

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

  IoThread io_{"tuning-io"};
};

TEST_F(TcpTuningTest, LinksToOtherHostsGetThePreferredAlgorithmAndStillCarryFrames) {
  const auto host = NonLoopbackAddress();
  if (!host) GTEST_SKIP() << "no IPv4 address besides loopback";
  const std::string wanted = BuiltInOtherThanDefault();
  SetPreferredCongestionControl(wanted);
  auto [client, server] = Pair(*host);
  ASSERT_TRUE(client && server);
  for (auto* end : {&client, &server}) {
    auto running = (*end)->congestion_control();
    ASSERT_TRUE(running.ok()) << running.status().ToString();
    EXPECT_EQ(*running, wanted);
  }
  ASSERT_TRUE(client->Send(MakeEnvelope("job"), DeadlineAfter(2s)).ok());
  auto got = server->Receive(DeadlineAfter(2s));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->job_id(), "job");
}

TEST_F(TcpTuningTest, LoopbackAndAnEmptyPreferenceKeepTheKernelDefault) {
  SetPreferredCongestionControl(BuiltInOtherThanDefault());
  auto [client, server] = Pair("127.0.0.1");
  ASSERT_TRUE(client && server);
  EXPECT_EQ(*client->congestion_control(), KernelDefault());
  EXPECT_EQ(*server->congestion_control(), KernelDefault());

  const auto host = NonLoopbackAddress();
  if (!host) GTEST_SKIP() << "no IPv4 address besides loopback";
  SetPreferredCongestionControl("");
  auto [remote_client, remote_server] = Pair(*host);
  ASSERT_TRUE(remote_client && remote_server);
  EXPECT_EQ(*remote_client->congestion_control(), KernelDefault());
  EXPECT_EQ(*remote_server->congestion_control(), KernelDefault());
}

TEST_F(TcpTuningTest, AnAlgorithmTheKernelRefusesLeavesAWorkingConnectionOnTheDefault) {
  const auto host = NonLoopbackAddress();
  if (!host) GTEST_SKIP() << "no IPv4 address besides loopback";
  SetPreferredCongestionControl("no-such-algorithm");
  auto [client, server] = Pair(*host);
  ASSERT_TRUE(client && server);
  EXPECT_EQ(*client->congestion_control(), KernelDefault());
  ASSERT_TRUE(server->Send(MakeEnvelope("job"), DeadlineAfter(2s)).ok());
  auto got = client->Receive(DeadlineAfter(2s));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
}

TEST_F(TcpTuningTest, AClosedConnectionSaysSoInsteadOfReadingAReusedDescriptor) {
  auto [client, server] = Pair("127.0.0.1");
  ASSERT_TRUE(client && server);
  client->Close();
  EXPECT_EQ(client->congestion_control().status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace tributary::net
