#include "core/digest.h"

#include <gtest/gtest.h>

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
