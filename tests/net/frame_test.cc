#include "net/frame.h"

#include <gtest/gtest.h>

#include <array>

namespace tributary::net {
namespace {

std::array<std::byte, 4> LengthPrefix(uint32_t n) {
  return {std::byte(n & 0xff), std::byte((n >> 8) & 0xff), std::byte((n >> 16) & 0xff),
          std::byte((n >> 24) & 0xff)};
}

std::span<const std::byte> Body(const std::string& frame) {
  return std::as_bytes(std::span<const char>(frame.data(), frame.size())).subspan(4);
}

TEST(FrameTest, LengthZeroAndOversizeAreRefusedBeforeAllocation) {
  auto zero = DecodeFrameLength(LengthPrefix(0), 1024);
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.status().message().find("zero length"), std::string::npos);
  auto huge = DecodeFrameLength(LengthPrefix(0xffffffffu), 1024);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kProtocolError);
  EXPECT_NE(huge.status().message().find("exceeds the maximum"), std::string::npos);
  auto fine = DecodeFrameLength(LengthPrefix(1024), 1024);
  ASSERT_TRUE(fine.ok());
  EXPECT_EQ(*fine, 1024u);
}

TEST(FrameTest, EncodeThenParseRoundTrips) {
  v1::Envelope e = MakeEnvelope("job-1");
  e.mutable_hello()->set_peer_name("alice");
  e.mutable_hello()->set_listen_port(4242);
  auto frame = EncodeFrame(e);
  ASSERT_TRUE(frame.ok());
  auto length = DecodeFrameLength(
      std::span<const std::byte, 4>(std::as_bytes(std::span(frame->data(), 4))), 1 << 20);
  ASSERT_TRUE(length.ok());
  EXPECT_EQ(*length, frame->size() - 4);
  auto parsed = ParseEnvelope(Body(*frame));
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->hello().peer_name(), "alice");
  EXPECT_EQ(parsed->hello().listen_port(), 4242u);
  EXPECT_TRUE(CheckEnvelope(*parsed, "job-1").ok());
  EXPECT_EQ(PayloadName(*parsed), "hello");
}

TEST(FrameTest, EncodeRefusesEnvelopeLargerThanMaximum) {
  v1::Envelope e = MakeEnvelope("job");
  e.mutable_error()->set_message(std::string(2000, 'x'));
  auto frame = EncodeFrame(e, 1000);
  EXPECT_FALSE(frame.ok());
}

TEST(FrameTest, RandomBytesAreAMalformedFrame) {
  std::string garbage = "\xff\xff\xff\xff\x0f\x01\x02 definitely not protobuf";
  auto parsed = ParseEnvelope(std::as_bytes(std::span(garbage.data(), garbage.size())));
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), StatusCode::kProtocolError);
  EXPECT_EQ(ErrorCodeFor(parsed.status()), v1::MALFORMED_FRAME);
}

TEST(FrameTest, WrongVersionWrongJobUnknownTypeAreNamed) {
  v1::Envelope e = MakeEnvelope("job-a");
  e.mutable_hello();
  e.set_protocol_version(7);
  Status version = CheckEnvelope(e, "job-a");
  EXPECT_NE(version.message().find("wrong protocol version 7"), std::string::npos);
  EXPECT_EQ(ErrorCodeFor(version), v1::WRONG_PROTOCOL_VERSION);

  e.set_protocol_version(kProtocolVersion);
  Status job = CheckEnvelope(e, "job-b");
  EXPECT_NE(job.message().find("wrong job id"), std::string::npos);
  EXPECT_EQ(ErrorCodeFor(job), v1::WRONG_JOB);

  // A newer sender's message type: field 99 (unknown to this build), no known payload.
  std::string bytes;
  v1::Envelope base = MakeEnvelope("job-a");
  base.SerializeToString(&bytes);
  bytes += std::string("\x9a\x06\x03" "abc", 6);  // field 99, wire type 2, 3 bytes
  auto parsed = ParseEnvelope(std::as_bytes(std::span(bytes.data(), bytes.size())));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  Status unknown = CheckEnvelope(*parsed, "job-a");
  EXPECT_NE(unknown.message().find("unknown message type"), std::string::npos);
  EXPECT_EQ(ErrorCodeFor(unknown), v1::UNKNOWN_MESSAGE_TYPE);
}

// The tensor checks every collective's receiver shares: payload, tag, dtype, shape, each named.
TEST(FrameTest, TensorKindMismatchesAreNamed) {
  v1::Envelope e = MakeEnvelope("job");
  EXPECT_NE(CheckTensorKind(e, "t", 4).message().find("expected a tensor header"), std::string::npos);
  v1::TensorHeader* h = e.mutable_tensor();
  h->set_tag("t");
  h->set_dtype(v1::DTYPE_F32);
  h->set_numel(4);
  EXPECT_TRUE(CheckTensorKind(e, "t", 4).ok());
  Status tag = CheckTensorKind(e, "u", 4);
  EXPECT_EQ(tag.code(), StatusCode::kProtocolError);
  EXPECT_NE(tag.message().find("wrong tag 't'"), std::string::npos) << tag.ToString();
  Status shape = CheckTensorKind(e, "t", 5);
  EXPECT_EQ(shape.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(shape.message().find("tensor of 4 elements, ours has 5"), std::string::npos) << shape.ToString();
  h->set_dtype(v1::DTYPE_UNSPECIFIED);
  Status dtype = CheckTensorKind(e, "t", 4);
  EXPECT_EQ(dtype.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dtype.message().find("wrong dtype"), std::string::npos) << dtype.ToString();
}

}  // namespace
}  // namespace tributary::net
