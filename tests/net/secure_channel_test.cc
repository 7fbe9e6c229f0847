// The secure channel against an active attacker: a relay between client and server that sees
// every length-prefixed record and may tamper with, replay, reorder or truncate them.
#include "net/secure_channel.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "net/io_thread.h"

namespace tributary::net {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

enum class Attack { kNone, kFlipBit, kReplay, kReorder, kTruncate };

// Forwards client->server record by record (applying `attack` to record `target`), and
// server->client bytes unchanged. Records all client->server records.
class Relay {
 public:
  Relay(uint16_t server_port, Attack attack, int target)
      : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        server_port_(server_port), attack_(attack), target_(target) {
    thread_ = std::thread([this] { Run(); });
  }
  ~Relay() {
    // The relay threads may be blocked in reads: wake them with shutdown(2) on the raw fds (an
    // asio socket object must not be closed while another thread uses it), join, then close.
    stopping_ = true;
    for (auto* s : {&client_, &server_}) {
      if (s->is_open()) ::shutdown(s->native_handle(), SHUT_RDWR);
    }
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    if (back_.joinable()) back_.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::vector<std::string> records() {
    std::lock_guard<std::mutex> lock(mu_);
    return records_;
  }

 private:
  void Run() {
    boost::system::error_code ec;
    acceptor_.accept(client_, ec);
    if (ec) return;
    server_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_port_), ec);
    if (ec) return;
    back_ = std::thread([this] {
      char buf[65536];
      boost::system::error_code e;
      for (;;) {
        size_t n = server_.read_some(asio::buffer(buf), e);
        if (e || asio::write(client_, asio::buffer(buf, n), e) != n || e) break;
      }
      ::shutdown(client_.native_handle(), SHUT_RDWR);
    });
    std::string held;
    for (int i = 0;; ++i) {
      unsigned char h[4];
      if (asio::read(client_, asio::buffer(h), ec) != 4 || ec) break;
      uint32_t n = h[0] | h[1] << 8 | h[2] << 16 | uint32_t(h[3]) << 24;
      std::string record(reinterpret_cast<char*>(h), 4);
      std::string body(n, '\0');
      if (asio::read(client_, asio::buffer(body), ec) != n || ec) break;
      record += body;
      {
        std::lock_guard<std::mutex> lock(mu_);
        records_.push_back(record);
      }
      std::string out = record;
      if (i == target_) {
        switch (attack_) {
          case Attack::kFlipBit: out[out.size() / 2] ^= 0x20; break;
          case Attack::kReplay: out += record; break;
          case Attack::kReorder: held = record; out.clear(); break;
          case Attack::kTruncate: out.resize(out.size() / 2); break;
          case Attack::kNone: break;
        }
      } else if (i == target_ + 1 && !held.empty()) {
        out += held;
      }
      asio::write(server_, asio::buffer(out), ec);
      if (attack_ == Attack::kTruncate && i == target_) {
        ::shutdown(server_.native_handle(), SHUT_WR);
        break;
      }
    }
    boost::system::error_code e;
    ::shutdown(server_.native_handle(), SHUT_WR);
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  tcp::socket client_{io_}, server_{io_};
  uint16_t server_port_;
  Attack attack_;
  int target_;
  std::thread thread_, back_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<std::string> records_;
};

class SecureChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = Listener::Bind(io_.context(), "127.0.0.1", 0);
    ASSERT_TRUE(l.ok());
    listener_ = std::move(l).value();
  }

  std::shared_ptr<Connection> DialPort(uint16_t port) {
    auto c = Connection::Dial(io_.context(), "127.0.0.1", port, DeadlineAfter(2s));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return *c;
  }

  // Runs the server side in a thread; returns its handshake result via future.
  std::future<std::pair<Result<PublicKey>, std::shared_ptr<Connection>>> ServeOne(
      const std::string& context = "job-x") {
    return std::async(std::launch::async, [this, context] {
      auto c = listener_->Accept(DeadlineAfter(5s));
      if (!c.ok()) return std::make_pair(Result<PublicKey>(c.status()), std::shared_ptr<Connection>());
      return std::make_pair(ServerHandshake(*c, server_id_, context, DeadlineAfter(5s)), *c);
    });
  }

  IoThread io_{"secure-test"};
  std::unique_ptr<Listener> listener_;
  Identity server_id_ = Identity::Generate();
  Identity client_id_ = Identity::Generate();
};

v1::Envelope Marked(const std::string& text) {
  v1::Envelope e = MakeEnvelope("job-x");
  e.mutable_error()->set_message(text);
  return e;
}

TEST_F(SecureChannelTest, MutualAuthenticationAndEncryptedTraffic) {
  auto server = ServeOne();
  Relay relay(listener_->port(), Attack::kNone, -1);
  auto client = DialPort(relay.port());
  auto got_server = ClientHandshake(*client, client_id_, "job-x", server_id_.public_key(), DeadlineAfter(5s));
  ASSERT_TRUE(got_server.ok()) << got_server.status().ToString();
  EXPECT_EQ(*got_server, server_id_.public_key());
  auto [got_client, conn] = server.get();
  ASSERT_TRUE(got_client.ok()) << got_client.status().ToString();
  EXPECT_EQ(*got_client, client_id_.public_key());

  const std::array<float, 3> tail{1.0f, 2.0f, 3.0f};
  ASSERT_TRUE(client->QueueSend(Marked("top-secret-marker"), std::as_bytes(std::span(tail))).ok());
  ASSERT_TRUE(client->Flush(DeadlineAfter(2s)).ok());
  auto m = conn->Receive(DeadlineAfter(2s));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->error().message(), "top-secret-marker");
  std::array<float, 3> into{};
  ASSERT_TRUE(conn->ReceiveRaw(std::as_writable_bytes(std::span(into)), DeadlineAfter(2s)).ok());
  EXPECT_EQ(into, tail);
  // Server -> client works too.
  ASSERT_TRUE(conn->Send(Marked("reply"), DeadlineAfter(2s)).ok());
  auto r = client->Receive(DeadlineAfter(2s));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->error().message(), "reply");
  for (const std::string& record : relay.records()) {
    EXPECT_EQ(record.find("top-secret-marker"), std::string::npos) << "plaintext on the wire";
  }
}

class TamperTest : public SecureChannelTest, public ::testing::WithParamInterface<Attack> {};

// Records after the handshake are messages m0, m1, m2. The relay attacks m0 (client record 2).
// Exactly the records that precede the attack are accepted; the first attacked record fails
// and nothing after it is ever delivered.
TEST_P(TamperTest, AttackedRecordFailsAndNothingAfterItIsAccepted) {
  auto server = ServeOne();
  Relay relay(listener_->port(), GetParam(), 2);
  auto client = DialPort(relay.port());
  ASSERT_TRUE(ClientHandshake(*client, client_id_, "job-x", server_id_.public_key(), DeadlineAfter(5s)).ok());
  auto [key, conn] = server.get();
  ASSERT_TRUE(key.ok());
  for (int i = 0; i < 3; ++i) {
    (void)client->Send(Marked("m" + std::to_string(i)), DeadlineAfter(2s));
  }
  // A replay delivers the genuine m0 first; the duplicate is what must fail.
  const int genuine_before_attack = GetParam() == Attack::kReplay ? 1 : 0;
  std::vector<std::string> accepted;
  Status failure;
  for (int i = 0; i < 4; ++i) {
    auto m = conn->Receive(DeadlineAfter(1s));
    if (!m.ok()) {
      failure = m.status();
      break;
    }
    accepted.push_back(m->error().message());
  }
  ASSERT_EQ(static_cast<int>(accepted.size()), genuine_before_attack);
  if (genuine_before_attack) EXPECT_EQ(accepted[0], "m0");
  EXPECT_EQ(failure.code(), StatusCode::kProtocolError) << failure.ToString();
  const char* words = GetParam() == Attack::kTruncate ? "truncated" : "failed authentication";
  EXPECT_NE(failure.message().find(words), std::string::npos) << failure.ToString();
}

INSTANTIATE_TEST_SUITE_P(Attacks, TamperTest,
                         ::testing::Values(Attack::kFlipBit, Attack::kReplay, Attack::kReorder,
                                           Attack::kTruncate),
                         [](const auto& info) {
                           switch (info.param) {
                             case Attack::kFlipBit: return std::string("FlipBit");
                             case Attack::kReplay: return std::string("Replay");
                             case Attack::kReorder: return std::string("Reorder");
                             case Attack::kTruncate: return std::string("Truncate");
                             default: return std::string("None");
                           }
                         });

TEST_F(SecureChannelTest, WrongServerKeyIsRefusedByTheClient) {
  auto server = ServeOne();
  auto client = DialPort(listener_->port());
  const Identity impostor_expected = Identity::Generate();
  auto r = ClientHandshake(*client, client_id_, "job-x", impostor_expected.public_key(), DeadlineAfter(5s));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not the expected"), std::string::npos) << r.status().ToString();
  client->Close();
  (void)server.get();
}

TEST_F(SecureChannelTest, ReplayedHandshakeIsRejected) {
  // Session 1, observed by the relay.
  auto server1 = ServeOne();
  std::vector<std::string> captured;
  {
    Relay relay(listener_->port(), Attack::kNone, -1);
    auto client = DialPort(relay.port());
    ASSERT_TRUE(ClientHandshake(*client, client_id_, "job-x", std::nullopt, DeadlineAfter(5s)).ok());
    ASSERT_TRUE(server1.get().first.ok());
    captured = relay.records();
    client->Close();
  }
  ASSERT_GE(captured.size(), 2u);
  // Session 2: an attacker without the client's key replays Init and Finish verbatim.
  auto server2 = ServeOne();
  asio::io_context raw_io;
  tcp::socket s(raw_io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), listener_->port()));
  asio::write(s, asio::buffer(captured[0]));
  unsigned char h[4];
  asio::read(s, asio::buffer(h));
  std::string reply(h[0] | h[1] << 8 | h[2] << 16, '\0');
  asio::read(s, asio::buffer(reply));
  asio::write(s, asio::buffer(captured[1]));
  auto [key, conn] = server2.get();
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find("failed to prove"), std::string::npos) << key.status().ToString();
}

TEST_F(SecureChannelTest, ClientClaimingAnotherKeyIsRejected) {
  // A forger sends the victim's public key but can only sign with its own secret key.
  auto server = ServeOne();
  auto c = DialPort(listener_->port());
  const Identity victim = Identity::Generate();
  const Identity forger = Identity::Generate();
  // Drive the protocol by hand: Init with the victim's key...
  v1::Envelope init = MakeEnvelope("job-x");
  init.mutable_handshake_init()->set_static_key(KeyToBytes(victim.public_key()));
  init.mutable_handshake_init()->set_ephemeral_key(std::string(32, '\x09'));
  init.mutable_handshake_init()->set_random(std::string(32, '\x01'));
  ASSERT_TRUE(c->Send(init, DeadlineAfter(2s)).ok());
  auto reply = c->Receive(DeadlineAfter(2s));
  ASSERT_TRUE(reply.ok());
  // ...then a Finish signed by the forger over garbage.
  v1::Envelope finish = MakeEnvelope("job-x");
  finish.mutable_handshake_finish()->set_signature(SignatureToBytes(forger.Sign("anything")));
  ASSERT_TRUE(c->Send(finish, DeadlineAfter(2s)).ok());
  auto [key, conn] = server.get();
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find("failed to prove"), std::string::npos);
}

TEST_F(SecureChannelTest, WrongContextIsRefused) {
  auto server = ServeOne("job-x");
  auto c = DialPort(listener_->port());
  auto r = ClientHandshake(*c, client_id_, "job-y", std::nullopt, DeadlineAfter(2s));
  auto [key, conn] = server.get();
  EXPECT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find("wrong job id"), std::string::npos) << key.status().ToString();
}

TEST(IdentityTest, KeygenWritesPrivateFileRefusesOverwriteAndLoads) {
  const fs::path dir = fs::temp_directory_path() / ("trib-id-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "peer.key").string();
  Identity id = Identity::Generate();
  ASSERT_TRUE(id.WriteFile(path).ok());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  Status again = Identity::Generate().WriteFile(path);
  EXPECT_EQ(again.code(), StatusCode::kFailedPrecondition);
  auto loaded = Identity::LoadFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->public_key(), id.public_key());
  EXPECT_TRUE(VerifySignature(id.public_key(), "msg", loaded->Sign("msg")));
  EXPECT_FALSE(VerifySignature(id.public_key(), "msh", loaded->Sign("msg")));

  ::chmod(path.c_str(), 0644);
  auto exposed = Identity::LoadFile(path);
  ASSERT_FALSE(exposed.ok());
  EXPECT_NE(exposed.status().message().find("chmod 600"), std::string::npos);

  const std::string junk = (dir / "junk.key").string();
  {
    std::ofstream(junk) << "not a key\n";
  }
  ::chmod(junk.c_str(), 0600);
  EXPECT_EQ(Identity::LoadFile(junk).status().code(), StatusCode::kCorruption);
  EXPECT_EQ(Identity::LoadFile((dir / "none").string()).status().code(), StatusCode::kNotFound);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tributary::net
