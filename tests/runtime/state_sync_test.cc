#include "runtime/state_sync.h"

#include <gtest/gtest.h>

namespace tributary::runtime {
namespace {

using namespace std::chrono_literals;

class StateSyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = StateServer::Start(server_io_, "127.0.0.1", server_id_, "job-s");
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
  }
  StateSource Source() const {
    return {"source", "127.0.0.1", server_->port(), server_id_.public_key()};
  }

  net::IoThread server_io_{"server-io"};
  net::IoThread client_io_{"client-io"};
  net::Identity server_id_ = net::Identity::Generate();
  net::Identity client_id_ = net::Identity::Generate();
  std::unique_ptr<StateServer> server_;
};

TEST_F(StateSyncTest, FetchesMultiChunkStateAndVerifiesTheDigest) {
  std::string state(3 * kStateChunkBytes + 123, '\0');
  for (size_t i = 0; i < state.size(); ++i) state[i] = static_cast<char>(i * 31);
  const Digest digest = Sha256Of(state);
  server_->Publish(4, digest, std::make_shared<const std::string>(state));
  auto got = FetchState(client_io_, client_id_, "job-s", Source(), 4, digest, 1u << 26, DeadlineAfter(10s));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, state);
}

TEST_F(StateSyncTest, WrongDigestStaleRoundOversizeAndImpostorAreRefused) {
  const std::string state = "committed state bytes";
  server_->Publish(2, Sha256Of(state), std::make_shared<const std::string>(state));
  // The coordinator announced another digest: the source's bytes must be refused.
  auto wrong = FetchState(client_io_, client_id_, "job-s", Source(), 2, Sha256Of(std::string_view("x")),
                          1 << 20, DeadlineAfter(5s));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kCorruption);
  auto stale = FetchState(client_io_, client_id_, "job-s", Source(), 3, Sha256Of(state), 1 << 20, DeadlineAfter(5s));
  ASSERT_FALSE(stale.ok());
  EXPECT_NE(stale.status().message().find("holds round 2"), std::string::npos);
  auto big = FetchState(client_io_, client_id_, "job-s", Source(), 2, Sha256Of(state), 4, DeadlineAfter(5s));
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("at most 4"), std::string::npos);
  StateSource impostor = Source();
  impostor.key = net::Identity::Generate().public_key();
  auto forged = FetchState(client_io_, client_id_, "job-s", impostor, 2, Sha256Of(state), 1 << 20, DeadlineAfter(5s));
  ASSERT_FALSE(forged.ok());
  EXPECT_NE(forged.status().message().find("not the expected"), std::string::npos);
}

TEST_F(StateSyncTest, NothingPublishedYetIsAClearRefusal) {
  auto none = FetchState(client_io_, client_id_, "job-s", Source(), 0, Digest{}, 1 << 20, DeadlineAfter(5s));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no committed state"), std::string::npos);
}

// Openings peer to peer: the server offers blobs by digest beside its committed state; a
// fetcher gets exactly the blob it names, and nothing it does not.
TEST_F(StateSyncTest, OfferedBlobsAreServedByDigestOnly) {
  std::string blob(2 * kStateChunkBytes + 7, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>(i * 7);
  const std::string other = "another opening's bulk";
  server_->Offer(Sha256Of(blob), std::make_shared<const std::string>(blob));
  server_->Offer(Sha256Of(other), std::make_shared<const std::string>(other));
  server_->Publish(1, Sha256Of(std::string_view("state")), std::make_shared<const std::string>("state"));
  auto got = FetchBlob(client_io_, client_id_, "job-s", Source(), Sha256Of(blob), blob.size(), DeadlineAfter(10s));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, blob);
  auto second = FetchBlob(client_io_, client_id_, "job-s", Source(), Sha256Of(other), 1 << 20, DeadlineAfter(5s));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(*second, other);
  auto unknown = FetchBlob(client_io_, client_id_, "job-s", Source(), Sha256Of(std::string_view("never offered")),
                           1 << 20, DeadlineAfter(5s));
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("no such blob offered"), std::string::npos) << unknown.status().ToString();
  auto big = FetchBlob(client_io_, client_id_, "job-s", Source(), Sha256Of(blob), 1024, DeadlineAfter(5s));
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("at most 1024"), std::string::npos) << big.status().ToString();
  // The committed state is still served as before.
  auto state = FetchState(client_io_, client_id_, "job-s", Source(), 1, Sha256Of(std::string_view("state")), 1 << 20,
                          DeadlineAfter(5s));
  ASSERT_TRUE(state.ok()) << state.status().ToString();
}

}  // namespace
}  // namespace tributary::runtime
