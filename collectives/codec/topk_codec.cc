#include "collectives/codec/topk_codec.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include "collectives/codec/wire_format.h"

namespace tributary::collectives::codec {
namespace {

// The k-th largest magnitude, found on a copy so `values` keeps its order.
float KthLargestMagnitude(std::span<const float> values, uint64_t k, std::vector<float>& scratch) {
  scratch.resize(values.size());
  for (size_t i = 0; i < values.size(); ++i) scratch[i] = std::fabs(values[i]);
  auto kth = scratch.begin() + static_cast<ptrdiff_t>(values.size() - k);
  std::nth_element(scratch.begin(), kth, scratch.end());
  return *kth;
}

// Indices of the k largest magnitudes, ascending; among equal magnitudes the lowest indices win.
std::vector<uint32_t> SelectTopK(std::span<const float> values, uint64_t k,
                                 std::vector<float>& scratch) {
  std::vector<uint32_t> picked;
  if (k == 0) return picked;
  picked.reserve(k);
  const float threshold = KthLargestMagnitude(values, k, scratch);
  uint64_t above = 0;
  for (float v : values) above += std::fabs(v) > threshold;
  uint64_t ties_left = k - above;
  for (size_t i = 0; i < values.size(); ++i) {
    const float m = std::fabs(values[i]);
    if (m > threshold) {
      picked.push_back(static_cast<uint32_t>(i));
    } else if (m == threshold && ties_left > 0) {
      picked.push_back(static_cast<uint32_t>(i));
      --ties_left;
    }
  }
  return picked;
}

}  // namespace

std::string FormatFraction(double value) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(value);
}

std::string TopKCodec::name() const { return "topk:" + FormatFraction(fraction_); }

uint64_t TopKCodec::KFor(uint64_t n) const {
  if (n == 0) return 0;
  const double k = std::ceil(fraction_ * static_cast<double>(n));
  return std::clamp<uint64_t>(static_cast<uint64_t>(k), 1, n);
}

Result<size_t> TopKCodec::MaxPayloadBytes(size_t numel) const {
  if (numel > kMaxNumel) return InvalidArgument("numel exceeds the maximum");
  return kHeaderBytes + 8 + KFor(numel) * (4 + VarintBytes(numel));
}

Result<std::string> TopKCodec::EncodeAndSubtract(std::span<float> target) {
  const uint64_t k = KFor(target.size());
  const std::vector<uint32_t> picked = SelectTopK(target, k, magnitudes_);
  std::string out;
  TRIB_ASSIGN_OR_RETURN(size_t bound, MaxPayloadBytes(target.size()));
  out.reserve(bound);
  AppendHeader(out, id(), target.size());
  AppendU64(out, k);
  uint64_t previous = 0;
  for (size_t s = 0; s < picked.size(); ++s) {
    AppendVarint(out, s == 0 ? picked[s] : picked[s] - previous);
    previous = picked[s];
  }
  for (uint32_t i : picked) {
    const float value = target[i];
    out.append(reinterpret_cast<const char*>(&value), 4);
    target[i] -= value;
  }
  return out;
}

Result<std::vector<float>> TopKCodec::Decode(std::string_view payload,
                                             size_t expected_numel) const {
  return InCodecContext(DecodeValues(payload, expected_numel), name());
}

Result<std::vector<float>> TopKCodec::DecodeValues(std::string_view payload, size_t n) const {
  TRIB_ASSIGN_OR_RETURN(Reader r, OpenPayload(payload, id(), n));
  TRIB_ASSIGN_OR_RETURN(uint64_t k, r.U64("k"));
  if (k != KFor(n)) {
    return Corruption("k = " + std::to_string(k) + " does not match " + std::to_string(KFor(n)) +
                      " for " + std::to_string(n) + " elements");
  }
  // k ≤ n ≤ kMaxNumel here, so 5·k cannot overflow; each gap takes at least one byte.
  if (r.remaining() < 5 * k) {
    return Corruption("payload truncated: " + std::to_string(k) + " entries need at least " +
                      std::to_string(5 * k) + " bytes, " + std::to_string(r.remaining()) + " left");
  }
  TRIB_ASSIGN_OR_RETURN(std::string_view gap_bytes, r.Bytes(r.remaining() - 4 * k, "indices"));
  TRIB_ASSIGN_OR_RETURN(std::string_view value_bytes, r.Bytes(4 * k, "values"));
  std::vector<float> values(k);
  TRIB_RETURN_IF_ERROR(ReadFiniteFloats(value_bytes, values, "value"));
  std::vector<float> out(n, 0.0f);
  Reader gaps(gap_bytes);
  uint64_t index = 0;
  for (uint64_t s = 0; s < k; ++s) {
    TRIB_ASSIGN_OR_RETURN(uint64_t gap, gaps.Varint("index gap"));
    if (s > 0 && gap == 0) {
      return Corruption("index " + std::to_string(index) + " is repeated (entry " +
                        std::to_string(s) + ")");
    }
    if (gap >= n || (s > 0 && gap >= n - index)) {
      return Corruption("entry " + std::to_string(s) + " has an index out of range for " +
                        std::to_string(n) + " elements");
    }
    index = s == 0 ? gap : index + gap;
    out[index] = values[s];
  }
  if (gaps.remaining() != 0) {
    return Corruption("payload has " + std::to_string(gaps.remaining()) +
                      " trailing bytes after the indices");
  }
  return out;
}

}  // namespace tributary::collectives::codec
