#include "core/digest.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <cstddef>
#include <random>
#include <utility>
#include <vector>

namespace tributary {
namespace {

TEST(DigestTest, KnownSha256Vector) {
  EXPECT_EQ(ToHex(Sha256Of(std::string_view("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(DigestTest, IncrementalEqualsOneShot) {
  Sha256 h;
  h.Update(std::string_view("a"));
  h.Update(std::string_view("bc"));
  EXPECT_EQ(h.Finish(), Sha256Of(std::string_view("abc")));
}

// Digests are committed to disk and signed (checkpoints, ledgers, receipts), so the library
// behind Sha256 must give the same bytes as the one it replaced (libsodium), at every length
// around SHA-256's 64-byte block and its padding boundary, and for multi-megabyte states fed in
// uneven pieces.
TEST(DigestTest, MatchesLibsodiumAtEveryBlockBoundaryAndOnLargeInputs) {
  ASSERT_GE(sodium_init(), 0);
  std::mt19937 rng(7);
  std::vector<std::byte> data(5'100'003);
  for (auto& b : data) b = static_cast<std::byte>(rng());
  auto sodium = [&](size_t n) {
    Digest d;
    crypto_hash_sha256(d.data(), reinterpret_cast<const unsigned char*>(data.data()), n);
    return d;
  };
  for (size_t n = 0; n <= 200; ++n) {
    ASSERT_EQ(Sha256Of(std::span<const std::byte>(data.data(), n)), sodium(n)) << n << " bytes";
  }
  Sha256 pieces;
  size_t at = 0;
  for (size_t piece = 1; at < data.size(); piece = piece * 3 + 1) {
    const size_t n = std::min(piece % 1'000'003, data.size() - at);
    pieces.Update(std::span<const std::byte>(data.data() + at, n));
    at += n;
  }
  EXPECT_EQ(pieces.Finish(), sodium(data.size()));
}

TEST(DigestTest, AMovedHashContinuesWhereItStopped) {
  Sha256 h;
  h.Update(std::string_view("ab"));
  Sha256 moved = std::move(h);
  moved.UpdateU64(0x0102030405060708ULL);
  Sha256 assigned;
  assigned = std::move(moved);
  assigned.Update(std::string_view("c"));
  Sha256 expected;
  expected.Update(std::string_view("ab"));
  expected.UpdateU64(0x0102030405060708ULL);
  expected.Update(std::string_view("c"));
  EXPECT_EQ(assigned.Finish(), expected.Finish());
}

TEST(DigestTest, HexAndBytesRoundTripAndRejectGarbage) {
  Digest d = Sha256Of(std::string_view("tributary"));
  auto from_hex = DigestFromHex(ToHex(d));
  ASSERT_TRUE(from_hex.ok());
  EXPECT_EQ(*from_hex, d);
  auto from_bytes = DigestFromBytes(DigestToBytes(d));
  ASSERT_TRUE(from_bytes.ok());
  EXPECT_EQ(*from_bytes, d);
  EXPECT_FALSE(DigestFromHex("zz").ok());
  EXPECT_FALSE(DigestFromHex(std::string(64, 'g')).ok());
  EXPECT_FALSE(DigestFromBytes("short").ok());
}

}  // namespace
}  // namespace tributary
