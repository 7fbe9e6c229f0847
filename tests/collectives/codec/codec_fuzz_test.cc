// Deterministic fuzzing of every Decode: random byte strings must be refused, and random
// mutations of valid payloads must either be refused or decode to finite values of the right
// size. Nothing may crash, hang or over-allocate (run under ASan to check the latter).
#include <gtest/gtest.h>

#include <cmath>

#include "collectives/codec/codec.h"
#include "collectives/codec/wire_format.h"
#include "core/seed.h"
#include "tests/collectives/codec/codec_test_util.h"

namespace tributary::collectives::codec {
namespace {

using testing::AllSpecs;
using testing::Gaussian;
using testing::Make;

constexpr size_t kN = 37;

std::string RandomBytes(SeedStream& random, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(random.Next());
  return s;
}

void ExpectSaneIfAccepted(const Result<std::vector<float>>& decoded, const std::string& spec) {
  if (!decoded.ok()) return;
  ASSERT_EQ(decoded->size(), kN) << spec;
  for (float v : *decoded) ASSERT_TRUE(std::isfinite(v)) << spec;
}

TEST(CodecFuzzTest, RandomByteStringsAreRefused) {
  for (const std::string& spec : AllSpecs()) {
    auto codec = Make(spec);
    SeedStream random(DeriveSeed({static_cast<uint64_t>(codec->id()), 1}));
    for (int i = 0; i < 10000; ++i) {
      const std::string bytes = RandomBytes(random, random.Below(600));
      auto decoded = codec->Decode(bytes, kN);
      ASSERT_FALSE(decoded.ok()) << spec << " accepted random string " << i;
    }
  }
}

TEST(CodecFuzzTest, RandomBodiesBehindAValidHeaderNeverCrash) {
  for (const std::string& spec : AllSpecs()) {
    auto codec = Make(spec);
    const size_t size = *codec->MaxPayloadBytes(kN);
    SeedStream random(DeriveSeed({static_cast<uint64_t>(codec->id()), 2}));
    for (int i = 0; i < 10000; ++i) {
      std::string bytes;
      AppendHeader(bytes, codec->id(), kN);
      // Half of them exactly the expected size, so the body checks themselves are exercised.
      const size_t body = i % 2 == 0 ? size - kHeaderBytes : random.Below(2 * size);
      bytes += RandomBytes(random, body);
      ExpectSaneIfAccepted(codec->Decode(bytes, kN), spec);
    }
  }
}

TEST(CodecFuzzTest, MutatedValidPayloadsNeverCrash) {
  for (const std::string& spec : AllSpecs()) {
    auto codec = Make(spec);
    SeedStream random(DeriveSeed({static_cast<uint64_t>(codec->id()), 3}));
    const std::string valid = *codec->Encode(Gaussian(9, kN));
    for (int i = 0; i < 10000; ++i) {
      std::string bytes = valid;
      switch (random.Below(4)) {
        case 0:  // flip 1-4 random bits
          for (uint64_t f = random.Below(4) + 1; f > 0; --f) {
            bytes[random.Below(bytes.size())] ^= static_cast<char>(1u << random.Below(8));
          }
          break;
        case 1:  // overwrite a random byte
          bytes[random.Below(bytes.size())] = static_cast<char>(random.Next());
          break;
        case 2:  // truncate
          bytes.resize(random.Below(bytes.size()));
          break;
        default:  // splice random bytes in
          bytes.insert(random.Below(bytes.size() + 1), RandomBytes(random, 1 + random.Below(8)));
          break;
      }
      ExpectSaneIfAccepted(codec->Decode(bytes, kN), spec);
    }
  }
}

}  // namespace
}  // namespace tributary::collectives::codec
