// Decode never trusts a payload: every malformed one is refused with an error naming what is
// wrong, before any allocation sized by the payload.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>

#include "collectives/codec/codec.h"
#include "collectives/codec/wire_format.h"
#include "tests/collectives/codec/codec_test_util.h"

namespace tributary::collectives::codec {
namespace {

using testing::AllSpecs;
using testing::Contains;
using testing::Gaussian;
using testing::Make;

constexpr size_t kN = 1000;

// Asserts `payload` is refused with `code` and a message containing `needle`.
void ExpectRefused(const Codec& codec, std::string_view payload, size_t numel,
                   const std::string& needle, StatusCode code = StatusCode::kCorruption) {
  auto decoded = codec.Decode(payload, numel);
  ASSERT_FALSE(decoded.ok()) << codec.name() << " accepted a payload that should fail with '"
                             << needle << "'";
  EXPECT_EQ(decoded.status().code(), code) << decoded.status().ToString();
  EXPECT_TRUE(Contains(decoded.status().message(), needle))
      << codec.name() << ": '" << decoded.status().message() << "' does not mention '" << needle
      << "'";
  EXPECT_TRUE(Contains(decoded.status().message(), "codec " + codec.name()))
      << decoded.status().message();
}

std::string ValidPayload(Codec& codec, size_t n = kN) {
  auto payload = codec.Encode(Gaussian(3, n));
  EXPECT_TRUE(payload.ok());
  return *payload;
}

template <typename T>
void Patch(std::string& payload, size_t offset, T value) {
  ASSERT_LE(offset + sizeof(T), payload.size());
  std::memcpy(payload.data() + offset, &value, sizeof(T));
}

TEST(MalformedPayloadTest, HeaderAndSizeProblemsAreRefusedByEveryCodec) {
  for (const std::string& spec : AllSpecs()) {
    auto codec = Make(spec);
    const std::string valid = ValidPayload(*codec);
    ASSERT_TRUE(codec->Decode(valid, kN).ok()) << spec;

    ExpectRefused(*codec, "", kN, "shorter than the 12-byte header");
    ExpectRefused(*codec, valid.substr(0, 11), kN, "shorter than the 12-byte header");
    ExpectRefused(*codec, valid.substr(0, 12), kN, "truncated");
    ExpectRefused(*codec, valid.substr(0, valid.size() - 1), kN, "");
    ExpectRefused(*codec, valid + '\0', kN, "");
    ExpectRefused(*codec, valid + std::string(100, 'x'), kN, "");
    ExpectRefused(*codec, valid, kN - 1, "numel 1000 does not match expected 999");
    ExpectRefused(*codec, valid, kN + 1, "numel 1000 does not match expected 1001");

    std::string magic = valid;
    magic[0] = 'X';
    ExpectRefused(*codec, magic, kN, "bad magic");
    std::string version = valid;
    version[3] = 2;
    ExpectRefused(*codec, version, kN, "format version 2");
    std::string absurd = valid;
    Patch<uint64_t>(absurd, 4, uint64_t{1} << 62);
    ExpectRefused(*codec, absurd, kN, "numel 4611686018427387904 does not match");
    // Claiming 2^62 elements when the caller also expects 2^62: refused before any allocation.
    ExpectRefused(*codec, absurd, size_t{1} << 62, "exceeds the maximum",
                  StatusCode::kInvalidArgument);
    EXPECT_FALSE(codec->MaxPayloadBytes(size_t{1} << 62).ok());

    // Another codec's payload, of the right numel.
    for (const std::string& other_spec : AllSpecs()) {
      if (other_spec == spec) continue;
      auto other = Make(other_spec);
      ExpectRefused(*codec, ValidPayload(*other), kN, "codec id");
    }
  }
}

TEST(MalformedPayloadTest, NonFiniteValuesAreRefused) {
  auto fp32 = Make("fp32");
  std::string p = ValidPayload(*fp32);
  Patch(p, 12 + 4 * 9, std::nanf(""));
  ExpectRefused(*fp32, p, kN, "value[9] is not finite");

  auto fp16 = Make("fp16");
  p = ValidPayload(*fp16);
  Patch<uint16_t>(p, 12 + 2 * 5, 0x7c00);  // +Inf
  ExpectRefused(*fp16, p, kN, "value [5] is Inf or NaN");

  auto bf16 = Make("bf16");
  p = ValidPayload(*bf16);
  Patch<uint16_t>(p, 12 + 2 * 6, 0x7fc0);  // NaN
  ExpectRefused(*bf16, p, kN, "value [6] is Inf or NaN");
}

TEST(MalformedPayloadTest, BlockwiseScalesAndCodesAreChecked) {
  auto int8 = Make("int8");
  const std::string valid = ValidPayload(*int8);
  const size_t scales = 16, codes = 16 + 4 * 16;
  for (float bad : {std::nanf(""), INFINITY, -1.0f, FLT_MAX, FLT_MAX / 100}) {
    std::string p = valid;
    Patch(p, scales + 4 * 3, bad);
    ExpectRefused(*int8, p, kN, "scale[3]");
  }
  std::string p = valid;
  Patch<uint32_t>(p, 12, 128);
  ExpectRefused(*int8, p, kN, "block size 128 does not match 64");
  p = valid;
  Patch<int8_t>(p, codes + 5, -128);
  ExpectRefused(*int8, p, kN, "int8 code [5] is -128");

  auto int4 = Make("int4");
  const std::string odd = ValidPayload(*int4, 7);  // 1 scale, 4 code bytes, one pad nibble
  p = odd;
  p[20] = static_cast<char>(p[20] & 0xf0);
  ExpectRefused(*int4, p, 7, "int4 nibble [0] is 0, not a code");
  p = odd;
  p[23] = static_cast<char>(p[23] | 0x30);
  ExpectRefused(*int4, p, 7, "padding nibble");
}

// Builds a top-k payload for kN elements by hand.
std::string TopKPayload(uint64_t k, const std::vector<std::string>& gap_bytes,
                        const std::vector<float>& values) {
  std::string p;
  AppendHeader(p, CodecId::kTopK, kN);
  AppendU64(p, k);
  for (const std::string& g : gap_bytes) p += g;
  AppendFloats(p, values);
  return p;
}

std::vector<std::string> Gaps(std::initializer_list<uint64_t> gaps) {
  std::vector<std::string> out;
  for (uint64_t g : gaps) {
    out.emplace_back();
    AppendVarint(out.back(), g);
  }
  return out;
}

TEST(MalformedPayloadTest, TopKIndicesAreInRangeStrictlyIncreasingAndCanonical) {
  auto topk = Make("topk:0.003");  // k = 3 for 1000 elements
  const std::vector<float> v{1.0f, -2.0f, 3.0f};
  auto ok = topk->Decode(TopKPayload(3, Gaps({0, 500, 499}), v), kN);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)[0], 1.0f);
  EXPECT_EQ((*ok)[500], -2.0f);
  EXPECT_EQ((*ok)[999], 3.0f);

  ExpectRefused(*topk, TopKPayload(3, Gaps({0, 500, 500}), v), kN, "out of range");
  ExpectRefused(*topk, TopKPayload(3, Gaps({1000, 1, 1}), v), kN, "out of range");
  ExpectRefused(*topk, TopKPayload(3, Gaps({0, uint64_t{1} << 63, 1}), v), kN, "out of range");
  ExpectRefused(*topk, TopKPayload(3, Gaps({4, 0, 1}), v), kN, "index 4 is repeated");
  ExpectRefused(*topk, TopKPayload(4, Gaps({0, 1, 1, 1}), {1, 2, 3, 4}), kN,
                "k = 4 does not match 3");
  ExpectRefused(*topk, TopKPayload(uint64_t{1} << 62, Gaps({0, 1, 1}), v), kN,
                "k = 4611686018427387904 does not match 3");
  ExpectRefused(*topk, TopKPayload(3, {std::string("\x85\x00", 2), "\x01", "\x01"}, v), kN,
                "over-long varint");
  ExpectRefused(*topk,
                TopKPayload(3, {"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x7f", "\x01", "\x01"}, v), kN,
                "varint overflows");
  ExpectRefused(*topk, TopKPayload(3, Gaps({0, 1, 1, 7}), v), kN, "trailing bytes");
  ExpectRefused(*topk, TopKPayload(3, Gaps({0, 1}), v), kN, "truncated");
  ExpectRefused(*topk, TopKPayload(3, Gaps({0, 1, 1}), {1.0f, std::nanf(""), 3.0f}), kN,
                "value[1] is not finite");
  ExpectRefused(*topk, TopKPayload(3, {}, {}), kN, "truncated");
}

TEST(MalformedPayloadTest, PowerSgdShapeFactorsAndOverflowAreChecked) {
  auto codec = Make("powersgd:4");
  const std::string valid = ValidPayload(*codec);  // 32×32, rank 4: P at 24, Q at 24 + 512
  std::string p = valid;
  Patch<uint32_t>(p, 20, 3);
  ExpectRefused(*codec, p, kN, "shape 32x32 rank 3 does not match 32x32 rank 4");
  p = valid;
  Patch<uint32_t>(p, 12, 0x7fffffff);
  ExpectRefused(*codec, p, kN, "does not match");
  p = valid;
  Patch(p, 24 + 4 * 7, INFINITY);
  ExpectRefused(*codec, p, kN, "P[7] is not finite");
  p = valid;
  Patch(p, 24 + 512 + 4 * 2, std::nanf(""));
  ExpectRefused(*codec, p, kN, "Q[2] is not finite");
  p = valid;
  for (int t = 0; t < 4; ++t) {
    Patch(p, 24 + 4 * (t * 32), 1e20f);        // P[t][row 0]
    Patch(p, 24 + 512 + 4 * (t * 32), 1e20f);  // Q[t][col 0]
  }
  ExpectRefused(*codec, p, kN, "overflows");
}

TEST(MalformedPayloadTest, DctFrequenciesCoefficientsAndOverflowAreChecked) {
  auto codec = Make("dct-topk:0.03");  // chunk 64, k 2; 15 full chunks + a tail of 40
  const std::string valid = ValidPayload(*codec);
  const size_t freqs = 20, values = 20 + 32;
  std::string p = valid;
  Patch<uint32_t>(p, 16, 3);
  ExpectRefused(*codec, p, kN, "chunk 64 k 3 does not match chunk 64 k 2");
  p = valid;
  p[freqs] = 5;
  p[freqs + 1] = 5;
  ExpectRefused(*codec, p, kN, "not strictly increasing");
  p = valid;
  p[freqs + 1] = static_cast<char>(64);
  ExpectRefused(*codec, p, kN, "chunk at 0: frequency 64 is out of range");
  p = valid;
  p[freqs + 30] = 1;
  p[freqs + 31] = 40;  // the tail chunk is only 40 long
  ExpectRefused(*codec, p, kN, "chunk at 960: frequency 40");
  p = valid;
  Patch(p, values + 4 * 4, std::nanf(""));
  ExpectRefused(*codec, p, kN, "coefficient[4] is not finite");

  auto dense = Make("dct-topk:1:8");  // every coefficient of one chunk of 8
  std::string big;
  AppendHeader(big, CodecId::kDctTopK, 8);
  AppendU32(big, 8);
  AppendU32(big, 8);
  for (char f = 0; f < 8; ++f) big.push_back(f);
  AppendFloats(big, std::vector<float>(8, FLT_MAX));
  ExpectRefused(*dense, big, 8, "overflows");
}

}  // namespace
}  // namespace tributary::collectives::codec
