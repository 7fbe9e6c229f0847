// MakeCodec: spec parsing and the codec factory.
#include "collectives/codec/codec.h"

#include <charconv>
#include <cmath>
#include <vector>

#include "collectives/codec/blockwise_codec.h"
#include "collectives/codec/dct_topk_codec.h"
#include "collectives/codec/fp32_codec.h"
#include "collectives/codec/half_codec.h"
#include "collectives/codec/powersgd_codec.h"
#include "collectives/codec/topk_codec.h"

namespace tributary::collectives::codec {
namespace {

std::vector<std::string_view> Split(std::string_view spec) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    const size_t colon = spec.find(':', start);
    parts.push_back(spec.substr(start, colon - start));
    if (colon == std::string_view::npos) return parts;
    start = colon + 1;
  }
}

Result<uint32_t> ParseUint(std::string_view text, uint32_t min, uint32_t max, const char* what) {
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    return InvalidArgument(std::string(what) + " '" + std::string(text) +
                           "' is not an integer in [" + std::to_string(min) + ", " +
                           std::to_string(max) + "]");
  }
  return value;
}

Result<double> ParseFraction(std::string_view text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !(value > 0.0 && value <= 1.0)) {
    return InvalidArgument("fraction '" + std::string(text) + "' is not a number in (0, 1]");
  }
  return value;
}

Status ExpectArgs(const std::vector<std::string_view>& parts, size_t min, size_t max) {
  const size_t args = parts.size() - 1;
  if (args < min || args > max) {
    return InvalidArgument("'" + std::string(parts[0]) + "' takes " + std::to_string(min) +
                           (max > min ? " to " + std::to_string(max) : std::string()) +
                           " parameter(s), got " + std::to_string(args));
  }
  return Status::Ok();
}

template <typename T, typename... Args>
Result<std::unique_ptr<Codec>> Make(Args&&... args) {
  return std::unique_ptr<Codec>(std::make_unique<T>(std::forward<Args>(args)...));
}

Result<std::unique_ptr<Codec>> Build(const std::vector<std::string_view>& parts,
                                     const CodecOptions& options) {
  const std::string_view kind = parts[0];
  const bool ef = options.error_feedback;
  if (kind == "fp32") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 0, 0));
    return Make<Fp32Codec>();
  }
  if (kind == "fp16" || kind == "bf16") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 0, 0));
    const auto format = kind == "fp16" ? HalfCodec::Format::kFp16 : HalfCodec::Format::kBf16;
    return Make<HalfCodec>(format, ef);
  }
  if (kind == "int8" || kind == "int4") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 0, 1));
    uint32_t block = kDefaultQuantBlock;
    if (parts.size() == 2) {
      TRIB_ASSIGN_OR_RETURN(block, ParseUint(parts[1], 1, kMaxQuantBlock, "block size"));
    }
    return Make<BlockwiseCodec>(kind == "int8" ? 8 : 4, block, ef);
  }
  if (kind == "topk") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 1, 1));
    TRIB_ASSIGN_OR_RETURN(double fraction, ParseFraction(parts[1]));
    return Make<TopKCodec>(fraction, ef);
  }
  if (kind == "powersgd") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 1, 2));
    TRIB_ASSIGN_OR_RETURN(uint32_t rank, ParseUint(parts[1], 1, kMaxPowerSgdRank, "rank"));
    uint32_t cols = 0;
    if (parts.size() == 3) {
      TRIB_ASSIGN_OR_RETURN(cols, ParseUint(parts[2], 1, UINT32_MAX, "columns"));
    }
    return Make<PowerSgdCodec>(rank, cols, options.seed, ef);
  }
  if (kind == "dct-topk") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 1, 2));
    TRIB_ASSIGN_OR_RETURN(double fraction, ParseFraction(parts[1]));
    uint32_t chunk = kDefaultDctChunk;
    if (parts.size() == 3) {
      TRIB_ASSIGN_OR_RETURN(chunk, ParseUint(parts[2], 2, kMaxDctChunk, "chunk"));
    }
    return Make<DctTopKCodec>(fraction, chunk, ef);
  }
  return InvalidArgument("unknown codec '" + std::string(kind) +
                         "' (want fp32, fp16, bf16, int8, int4, topk, powersgd or dct-topk)");
}

}  // namespace

Result<std::unique_ptr<Codec>> MakeCodec(std::string_view spec, const CodecOptions& options) {
  auto codec = Build(Split(spec), options);
  if (!codec.ok()) return codec.status().WithContext("codec spec '" + std::string(spec) + "'");
  return codec;
}

double CompressionRatio(size_t numel, size_t payload_bytes) {
  if (payload_bytes == 0) return 0.0;
  return 4.0 * static_cast<double>(numel) / static_cast<double>(payload_bytes);
}

Result<std::vector<float>> DecodeChecked(const Codec& codec, std::string_view payload, size_t numel) {
  TRIB_ASSIGN_OR_RETURN(std::vector<float> values, codec.Decode(payload, numel));
  if (const size_t i = FirstNonFinite(values); i < values.size()) {
    return InvalidArgument("non-finite value " + ValueName(values[i]) + " at shard element " +
                           std::to_string(i));
  }
  return values;
}

}  // namespace tributary::collectives::codec
