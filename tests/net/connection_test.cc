#include "net/connection.h"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>

#include <sys/eventfd.h>
#include <unistd.h>

#include <future>
#include <thread>
#include <vector>

#include "net/io_thread.h"

namespace tributary::net {
namespace {

using namespace std::chrono_literals;

class ConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto listener = Listener::Bind(io_.context(), "127.0.0.1", 0);
    ASSERT_TRUE(listener.ok()) << listener.status().ToString();
    listener_ = std::move(listener).value();
  }

  std::shared_ptr<Connection> DialListener() {
    auto c = Connection::Dial(io_.context(), "127.0.0.1", listener_->port(), DeadlineAfter(2s));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? *c : nullptr;
  }

  // Turns on AEAD records in both directions with fixed test keys.
  static void Seal(Connection& client, Connection& server) {
    Connection::SessionKeys keys;
    for (size_t i = 0; i < keys.tx.size(); ++i) {
      keys.tx[i] = static_cast<uint8_t>(i);
      keys.rx[i] = static_cast<uint8_t>(255 - i);
    }
    client.EnableEncryption(keys);
    server.EnableEncryption({.tx = keys.rx, .rx = keys.tx});
  }

  // A raw, unframed client so tests can send arbitrary bytes.
  tcp::socket RawClient() {
    tcp::socket s(raw_context_);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), listener_->port()));
    return s;
  }

  IoThread io_{"test-io"};
  asio::io_context raw_context_;
  std::unique_ptr<Listener> listener_;
};

TEST_F(ConnectionTest, SendAndReceiveEnvelopeAndRawTail) {
  auto client = DialListener();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());

  v1::Envelope e = MakeEnvelope("job");
  e.mutable_tensor()->set_nbytes(8);
  const std::array<float, 2> payload{1.5f, -2.0f};
  ASSERT_TRUE(client->QueueSend(e, std::as_bytes(std::span(payload))).ok());
  ASSERT_TRUE(client->Flush(DeadlineAfter(2s)).ok());

  auto got = (*server)->Receive(DeadlineAfter(2s));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->tensor().nbytes(), 8u);
  std::array<float, 2> into{};
  ASSERT_TRUE((*server)->ReceiveRaw(std::as_writable_bytes(std::span(into)), DeadlineAfter(2s)).ok());
  EXPECT_EQ(into, payload);
  EXPECT_GT(client->bytes_sent(), 8u);
  EXPECT_EQ((*server)->bytes_received(), client->bytes_sent());
}

// One wake-up per tensor segment: the header is checked on the io thread, and only an accepted
// header's tail is read; a refused one leaves the tail unread and returns the check's error.
TEST_F(ConnectionTest, ReceiveWithTailReadsTheTailOnlyAfterTheCheckAccepts) {
  auto client = DialListener();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  const std::array<float, 2> first{1.5f, -2.0f}, second{3.0f, 4.0f};
  for (const auto* payload : {&first, &second}) {
    v1::Envelope e = MakeEnvelope("job");
    e.mutable_tensor()->set_nbytes(8);
    e.mutable_tensor()->set_offset(payload == &first ? 0 : 2);
    ASSERT_TRUE(client->QueueSend(e, std::as_bytes(std::span(*payload))).ok());
  }
  ASSERT_TRUE(client->Flush(DeadlineAfter(2s)).ok());

  std::array<float, 2> into{};
  auto offset_is = [](uint64_t want) {
    return [want](const v1::Envelope& e) {
      return e.tensor().offset() == want ? Status::Ok() : ProtocolError("wrong offset");
    };
  };
  ASSERT_TRUE((*server)->ReceiveWithTail(offset_is(0), std::as_writable_bytes(std::span(into)),
                                         DeadlineAfter(2s)).ok());
  EXPECT_EQ(into, first);
  into = {};
  Status refused = (*server)->ReceiveWithTail(offset_is(0), std::as_writable_bytes(std::span(into)),
                                              DeadlineAfter(2s));
  EXPECT_EQ(refused.code(), StatusCode::kProtocolError) << refused.ToString();
  EXPECT_EQ(into, (std::array<float, 2>{})) << "a refused header's tail is not read";
  // A deadline while waiting closes the connection, as Receive does.
  auto quiet_client = DialListener();
  auto quiet = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(quiet.ok());
  Status late = (*quiet)->ReceiveWithTail(offset_is(0), std::as_writable_bytes(std::span(into)),
                                          DeadlineAfter(100ms));
  EXPECT_EQ(late.code(), StatusCode::kDeadlineExceeded) << late.ToString();
  EXPECT_TRUE((*quiet)->closed());
}

TEST_F(ConnectionTest, OversizedLengthIsRejectedWithoutReadingBody) {
  auto raw = RawClient();
  auto server = listener_->Accept(DeadlineAfter(2s), /*max_frame_bytes=*/1024);
  ASSERT_TRUE(server.ok());
  const unsigned char header[4] = {0x00, 0x00, 0x00, 0x40};  // 1 GiB
  asio::write(raw, asio::buffer(header));
  auto got = (*server)->Receive(DeadlineAfter(2s));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kProtocolError);
  EXPECT_NE(got.status().message().find("exceeds the maximum"), std::string::npos);
  EXPECT_NE(got.status().message().find("127.0.0.1"), std::string::npos) << "names the peer";
}

TEST_F(ConnectionTest, TruncatedFrameIsNamedAsSuch) {
  auto raw = RawClient();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  const unsigned char partial[] = {100, 0, 0, 0, 1, 2, 3};  // promises 100, sends 3
  asio::write(raw, asio::buffer(partial));
  raw.close();
  auto got = (*server)->Receive(DeadlineAfter(2s));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("truncated frame"), std::string::npos)
      << got.status().ToString();
  EXPECT_NE(got.status().message().find("got 3 of 100"), std::string::npos);
}

TEST_F(ConnectionTest, RandomBytesAreMalformed) {
  auto raw = RawClient();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  const unsigned char junk[] = {6, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  asio::write(raw, asio::buffer(junk));
  auto got = (*server)->Receive(DeadlineAfter(2s));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("malformed frame"), std::string::npos)
      << got.status().ToString();
}

TEST_F(ConnectionTest, SilentPeerHitsDeadlineAndConnectionCloses) {
  auto client = DialListener();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  auto start = Clock::now();
  auto got = (*server)->Receive(DeadlineAfter(200ms));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_LT(SecondsSince(start), 2.0);
  EXPECT_TRUE((*server)->closed());
}

TEST_F(ConnectionTest, PeerCloseIsUnavailable) {
  auto client = DialListener();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  client->Close();
  auto got = (*server)->Receive(DeadlineAfter(2s));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(got.status().message().find("closed the connection"), std::string::npos);
}

// An Accept whose deadline passes just as its connection is accepted returns that connection;
// the cancel it had already posted must not reach the caller's next Accept. (It did: a peer's
// link probe failed with "accept failed: Operation canceled" and its formation took a path that
// hung the peer.) The io thread is held by two gates so the events fall in that order.
TEST_F(ConnectionTest, AnAcceptThatTimedOutAsItsConnectionArrivedLeavesTheNextAcceptAlone) {
  std::promise<void> release_first, release_second;
  std::shared_future<void> first_gate = release_first.get_future().share();
  std::shared_future<void> second_gate = release_second.get_future().share();
  asio::post(io_.context(), [first_gate] { first_gate.wait(); });
  tcp::socket first_client = RawClient();  // waits in the backlog: the io thread is held
  auto first = std::async(std::launch::async, [&] { return listener_->Accept(DeadlineAfter(300ms)); });
  std::this_thread::sleep_for(100ms);
  asio::post(io_.context(), [second_gate] { second_gate.wait(); });
  std::this_thread::sleep_for(400ms);  // past the deadline: its cancel is queued behind the gates
  release_first.set_value();
  auto accepted = first.get();  // the accept completed before the cancel could run
  ASSERT_TRUE(accepted.ok()) << accepted.status().ToString();
  auto second = std::async(std::launch::async, [&] { return listener_->Accept(DeadlineAfter(5s)); });
  std::this_thread::sleep_for(100ms);  // its accept is pending
  release_second.set_value();          // the first call's cancel runs now
  std::this_thread::sleep_for(50ms);
  tcp::socket second_client = RawClient();
  auto next = second.get();
  EXPECT_TRUE(next.ok()) << next.status().ToString();
}

TEST_F(ConnectionTest, DialToClosedPortFailsFast) {
  uint16_t port = listener_->port();
  listener_.reset();
  std::this_thread::sleep_for(50ms);
  auto c = Connection::Dial(io_.context(), "127.0.0.1", port, DeadlineAfter(2s));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
}

// Sends from worker threads are written from those threads when the stream is free, and handed
// to the strand when the socket is full or another write is in flight. Either way the frames of
// each thread arrive whole and in order, sealed records authenticate (their counters follow the
// wire order), and every byte is counted once. Tails of 3 MiB outgrow the socket buffer, so
// inline writes are cut short and finished by the strand while other threads queue behind.
void ExpectConcurrentSendsArriveInOrder(Connection& client, Connection& server) {
  constexpr int kThreads = 4, kFrames = 60;
  auto tail_floats = [](int thread, int frame) -> size_t {
    return frame % 20 == 7 ? (3u << 20) / sizeof(float) : 1 + 97 * ((thread + frame) % 11);
  };
  std::vector<std::vector<std::vector<float>>> tails(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int f = 0; f < kFrames; ++f) {
      tails[t].emplace_back(tail_floats(t, f), static_cast<float>(1000 * t + f));
    }
  }
  std::vector<std::thread> senders;
  for (int t = 0; t < kThreads; ++t) {
    senders.emplace_back([&, t] {
      for (int f = 0; f < kFrames; ++f) {
        v1::Envelope e = MakeEnvelope("job");
        e.mutable_tensor()->set_offset(t);
        e.mutable_tensor()->set_numel(f);
        e.mutable_tensor()->set_nbytes(tails[t][f].size() * sizeof(float));
        ASSERT_TRUE(client.QueueSend(e, std::as_bytes(std::span(tails[t][f]))).ok());
      }
    });
  }
  // Read only once the socket buffers are full, so that writes are cut short and queue up.
  std::this_thread::sleep_for(100ms);
  std::vector<int> next(kThreads, 0);
  for (int i = 0; i < kThreads * kFrames; ++i) {
    auto got = server.Receive(DeadlineAfter(10s));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    const int t = static_cast<int>(got->tensor().offset());
    const int f = static_cast<int>(got->tensor().numel());
    ASSERT_LT(t, kThreads);
    ASSERT_EQ(f, next[t]) << "thread " << t << "'s frames arrived out of order";
    ++next[t];
    std::vector<float> into(got->tensor().nbytes() / sizeof(float));
    ASSERT_EQ(into.size(), tail_floats(t, f));
    ASSERT_TRUE(server.ReceiveRaw(std::as_writable_bytes(std::span(into)), DeadlineAfter(10s)).ok());
    ASSERT_EQ(into, tails[t][f]) << "thread " << t << " frame " << f;
  }
  for (auto& s : senders) s.join();
  ASSERT_TRUE(client.Flush(DeadlineAfter(5s)).ok());
  EXPECT_EQ(server.bytes_received(), client.bytes_sent());
}

TEST_F(ConnectionTest, SendsFromManyThreadsArriveWholeAndInOrder) {
  auto client = DialListener();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  ExpectConcurrentSendsArriveInOrder(*client, **server);
}

TEST_F(ConnectionTest, SealedSendsFromManyThreadsAuthenticateInOrder) {
  auto client = DialListener();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  Seal(*client, **server);
  ExpectConcurrentSendsArriveInOrder(*client, **server);
  EXPECT_TRUE((*server)->encrypted());
}

// An envelope three frames long (a large model's verifier opening) goes out as fragments and
// comes back whole, on the blocking and the async path, sealed; small traffic around it is
// untouched and in order, and every byte is counted once.
TEST_F(ConnectionTest, AnEnvelopeLargerThanAFrameArrivesWhole) {
  auto client = DialListener();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  Seal(*client, **server);
  v1::Envelope big = MakeEnvelope("job");
  std::string state(2 * kDefaultMaxFrameBytes + 12345, '\0');
  for (size_t i = 0; i < state.size(); ++i) state[i] = static_cast<char>(i * 2654435761u >> 24);
  big.mutable_opening()->set_state(state);
  big.set_signature(std::string(64, 'k'));
  v1::Envelope small = MakeEnvelope("job");
  small.mutable_heartbeat()->set_committed_rounds(5);

  // Received on another thread: the fragments outgrow the socket buffers.
  auto receiver = std::async(std::launch::async, [&] {
    std::vector<Result<v1::Envelope>> got;
    for (int i = 0; i < 3; ++i) got.push_back((*server)->Receive(DeadlineAfter(20s)));
    return got;
  });
  ASSERT_TRUE(client->Send(small, DeadlineAfter(5s)).ok());
  ASSERT_TRUE(client->Send(big, DeadlineAfter(20s)).ok());
  ASSERT_TRUE(client->Send(small, DeadlineAfter(5s)).ok());
  auto received = receiver.get();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(received[i].ok()) << received[i].status().ToString();
    if (i == 1) {
      EXPECT_EQ(received[i]->SerializeAsString(), big.SerializeAsString());
    } else {
      EXPECT_EQ(received[i]->heartbeat().committed_rounds(), 5u);
    }
  }
  std::promise<Result<v1::Envelope>> async_got;
  (*server)->AsyncReceive([&](Result<v1::Envelope> r) { async_got.set_value(std::move(r)); });
  client->AsyncSend(big);
  auto future = async_got.get_future();
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  auto got = future.get();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->opening().state(), state);
  ASSERT_TRUE(client->Flush(DeadlineAfter(5s)).ok());
  EXPECT_EQ((*server)->bytes_received(), client->bytes_sent());
}

// A blocking receive off the io thread reads on the caller's thread (poll()): closing the
// connection from another thread (a collective's Interrupt) must still end it at once, as our
// own close, not as the peer's.
TEST_F(ConnectionTest, CloseFromAnotherThreadEndsABlockedReceiveAtOnce) {
  auto client = DialListener();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  std::thread closer([conn = *server] {
    std::this_thread::sleep_for(100ms);
    conn->Close();
  });
  const auto start = Clock::now();
  std::array<float, 4> into{};
  Status st = (*server)->ReceiveRaw(std::as_writable_bytes(std::span(into)), DeadlineAfter(20s));
  closer.join();
  EXPECT_LT(SecondsSince(start), 5.0);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("was closed"), std::string::npos) << st.ToString();
  // And the closed connection refuses the next receive instead of waiting.
  auto again = (*server)->Receive(DeadlineAfter(20s));
  EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);
}

// Two receives at once would interleave their reads of one stream: a blocking receive while an
// async one is outstanding is refused, and the async one still gets its frame.
TEST_F(ConnectionTest, BlockingReceiveWhileAnAsyncOneIsOutstandingIsRefused) {
  auto client = DialListener();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  std::promise<Result<v1::Envelope>> got;
  (*server)->AsyncReceive([&got](Result<v1::Envelope> r) { got.set_value(std::move(r)); });
  auto refused = (*server)->Receive(DeadlineAfter(2s));
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition) << refused.status().ToString();
  EXPECT_FALSE((*server)->closed());
  ASSERT_TRUE(client->Send(MakeEnvelope("job"), DeadlineAfter(2s)).ok());
  auto future = got.get_future();
  ASSERT_EQ(future.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(future.get().ok());
  // With nothing outstanding any more, the blocking receive works.
  ASSERT_TRUE(client->Send(MakeEnvelope("job"), DeadlineAfter(2s)).ok());
  EXPECT_TRUE((*server)->Receive(DeadlineAfter(2s)).ok());
}

// A frame whose tail stops short: the caller's read waits for the rest until the deadline,
// then closes the connection (it cannot be resynchronised) and says so.
TEST_F(ConnectionTest, TailCutShortHitsTheDeadlineAndCloses) {
  auto raw = RawClient();
  auto server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(server.ok());
  const std::array<char, 6> half{1, 2, 3, 4, 5, 6};
  asio::write(raw, asio::buffer(half));
  std::array<float, 4> into{};
  const auto start = Clock::now();
  Status st = (*server)->ReceiveRaw(std::as_writable_bytes(std::span(into)), DeadlineAfter(200ms));
  EXPECT_EQ(st.code(), StatusCode::kDeadlineExceeded) << st.ToString();
  EXPECT_LT(SecondsSince(start), 2.0);
  EXPECT_TRUE((*server)->closed());
  EXPECT_EQ((*server)->bytes_received(), half.size()) << "what arrived is counted, as on the strand";
}

// WaitReadable: the connections with something to read, closed ones at once, an empty answer
// for a wake-up or the deadline.
TEST_F(ConnectionTest, WaitReadableNamesTheReadyConnections) {
  auto a = DialListener();
  auto a_server = listener_->Accept(DeadlineAfter(2s));
  auto b = DialListener();
  auto b_server = listener_->Accept(DeadlineAfter(2s));
  ASSERT_TRUE(a_server.ok() && b_server.ok());
  std::vector<Connection*> both{a_server->get(), b_server->get()};
  const int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(wake, 0);

  auto start = Clock::now();
  EXPECT_TRUE(Connection::WaitReadable(both, wake, DeadlineAfter(150ms)).empty());
  EXPECT_GE(SecondsSince(start), 0.1);

  ASSERT_TRUE(b->Send(MakeEnvelope("job"), DeadlineAfter(2s)).ok());
  EXPECT_EQ(Connection::WaitReadable(both, wake, DeadlineAfter(5s)), std::vector<size_t>{1});
  ASSERT_TRUE((*b_server)->Receive(DeadlineAfter(2s)).ok());

  const uint64_t one = 1;
  ASSERT_EQ(::write(wake, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
  start = Clock::now();
  EXPECT_TRUE(Connection::WaitReadable(both, wake, DeadlineAfter(20s)).empty());
  EXPECT_LT(SecondsSince(start), 5.0);

  a->Close();  // the peer's end of the stream is readable
  EXPECT_EQ(Connection::WaitReadable(both, -1, DeadlineAfter(5s)), std::vector<size_t>{0});
  (*b_server)->Close();  // ours: ready at once, its receive fails naming it
  EXPECT_EQ(Connection::WaitReadable(both, -1, DeadlineAfter(5s)), (std::vector<size_t>{1}));
  ::close(wake);
}

TEST_F(ConnectionTest, SendAfterCloseFailsInsteadOfHanging) {
  auto client = DialListener();
  client->Close();
  Status st = client->Send(MakeError("job", v1::INTERNAL_ERROR, "x"), DeadlineAfter(1s));
  EXPECT_FALSE(st.ok());
}

}  // namespace
}  // namespace tributary::net
