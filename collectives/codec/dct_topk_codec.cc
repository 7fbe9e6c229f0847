#include "collectives/codec/dct_topk_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "collectives/codec/dct.h"
#include "collectives/codec/topk_codec.h"
#include "collectives/codec/wire_format.h"

namespace tributary::collectives::codec {
namespace {

std::vector<float> Transpose(const std::vector<float>& m, size_t len) {
  std::vector<float> t(m.size());
  for (size_t r = 0; r < len; ++r) {
    for (size_t c = 0; c < len; ++c) t[c * len + r] = m[r * len + c];
  }
  return t;
}

// out[n] = Σ_s values[s]·rows[s][n], summed in s order. Encoder and decoder both call this, so
// the encoder subtracts exactly what the decoder reconstructs.
void InverseSparse(std::span<const float* const> rows, std::span<const float> values,
                   std::span<float> out) {
  std::fill(out.begin(), out.end(), 0.0f);
  for (size_t s = 0; s < values.size(); ++s) {
    const float v = values[s];
    const float* row = rows[s];
    for (size_t n = 0; n < out.size(); ++n) out[n] += v * row[n];
  }
}

// The k largest |coefficients| (lower frequency wins a tie), returned in increasing frequency.
// `order` is scratch, kept by the caller so the per-chunk loop does not allocate.
void SelectFrequencies(std::span<const float> coef, size_t k, std::vector<uint8_t>& order,
                       std::vector<uint8_t>& picked) {
  order.resize(coef.size());
  std::iota(order.begin(), order.end(), uint8_t{0});
  std::partial_sort(order.begin(), order.begin() + static_cast<ptrdiff_t>(k), order.end(),
                    [&](uint8_t a, uint8_t b) {
                      const float ma = std::fabs(coef[a]), mb = std::fabs(coef[b]);
                      return ma > mb || (ma == mb && a < b);
                    });
  picked.assign(order.begin(), order.begin() + static_cast<ptrdiff_t>(k));
  std::sort(picked.begin(), picked.end());
}

}  // namespace

DctTopKCodec::DctTopKCodec(double fraction, uint32_t chunk, bool error_feedback)
    : ErrorFeedbackCodec(error_feedback),
      fraction_(fraction),
      chunk_(chunk),
      k_(static_cast<uint32_t>(
          std::clamp<long>(std::lround(fraction * chunk), 1, static_cast<long>(chunk)))),
      basis_(DctBasis(chunk)),
      basis_t_(Transpose(basis_, chunk)) {}

std::string DctTopKCodec::name() const {
  return "dct-topk:" + FormatFraction(fraction_) + ":" + std::to_string(chunk_);
}

uint64_t DctTopKCodec::TotalCoefficients(uint64_t n) const {
  return (n / chunk_) * k_ + std::min<uint64_t>(k_, n % chunk_);
}

Result<size_t> DctTopKCodec::MaxPayloadBytes(size_t numel) const {
  if (numel > kMaxNumel) return InvalidArgument("numel exceeds the maximum");
  return kHeaderBytes + 8 + 5 * TotalCoefficients(numel);
}

const std::vector<float>& DctTopKCodec::BasisFor(size_t len, bool transposed) {
  if (len == chunk_) return transposed ? basis_t_ : basis_;
  if (tail_len_ != len) {
    tail_len_ = len;
    tail_basis_ = DctBasis(len);
    tail_basis_t_ = Transpose(tail_basis_, len);
  }
  return transposed ? tail_basis_t_ : tail_basis_;
}

Result<std::string> DctTopKCodec::EncodeAndSubtract(std::span<float> target) {
  const size_t n = target.size();
  const uint64_t total = TotalCoefficients(n);
  std::string out;
  AppendHeader(out, id(), n);
  AppendU32(out, chunk_);
  AppendU32(out, k_);
  const size_t freq_at = out.size(), value_at = freq_at + total;
  out.resize(value_at + 4 * total);

  std::vector<float> coef(chunk_), approx(chunk_), values;
  std::vector<uint8_t> order, picked;
  std::vector<const float*> rows;
  size_t written = 0;
  for (size_t begin = 0; begin < n; begin += chunk_) {
    const size_t len = std::min<size_t>(chunk_, n - begin);
    std::span<float> x = target.subspan(begin, len);
    ForwardDct(x, BasisFor(len, true), std::span(coef).first(len));
    SelectFrequencies(std::span(coef).first(len), std::min<size_t>(k_, len), order, picked);
    const std::vector<float>& basis = BasisFor(len, false);
    values.clear();
    rows.clear();
    for (uint8_t f : picked) {
      values.push_back(coef[f]);
      rows.push_back(basis.data() + f * len);
    }
    std::memcpy(out.data() + freq_at + written, picked.data(), picked.size());
    std::memcpy(out.data() + value_at + 4 * written, values.data(), 4 * values.size());
    written += picked.size();
    InverseSparse(rows, values, std::span(approx).first(len));
    for (size_t i = 0; i < len; ++i) x[i] -= approx[i];
  }
  return out;
}

Result<std::vector<float>> DctTopKCodec::Decode(std::string_view payload,
                                                size_t expected_numel) const {
  return InCodecContext(DecodeValues(payload, expected_numel), name());
}

Result<std::vector<float>> DctTopKCodec::DecodeValues(std::string_view payload, size_t n) const {
  TRIB_ASSIGN_OR_RETURN(Reader r, OpenPayload(payload, id(), n));
  TRIB_ASSIGN_OR_RETURN(uint32_t chunk, r.U32("chunk"));
  TRIB_ASSIGN_OR_RETURN(uint32_t k, r.U32("k"));
  if (chunk != chunk_ || k != k_) {
    return Corruption("chunk " + std::to_string(chunk) + " k " + std::to_string(k) +
                      " does not match chunk " + std::to_string(chunk_) + " k " +
                      std::to_string(k_));
  }
  const uint64_t total = TotalCoefficients(n);
  TRIB_RETURN_IF_ERROR(ExpectRemaining(r, 5 * total, "frequencies and coefficients"));
  TRIB_ASSIGN_OR_RETURN(std::string_view freqs, r.Bytes(total, "frequencies"));
  TRIB_ASSIGN_OR_RETURN(std::string_view value_bytes, r.Bytes(4 * total, "coefficients"));
  std::vector<float> values(total);
  TRIB_RETURN_IF_ERROR(ReadFiniteFloats(value_bytes, values, "coefficient"));

  std::vector<float> out(n);
  std::vector<float> tail_rows;  // only the tail chunk's needed basis rows are computed
  std::vector<const float*> rows;
  size_t read = 0;
  for (size_t begin = 0; begin < n; begin += chunk_) {
    const size_t len = std::min<size_t>(chunk_, n - begin), count = std::min<size_t>(k_, len);
    rows.clear();
    if (len != chunk_) tail_rows.resize(count * len);
    for (size_t s = 0; s < count; ++s) {
      const size_t f = static_cast<uint8_t>(freqs[read + s]);
      if (f >= len || (s > 0 && f <= static_cast<uint8_t>(freqs[read + s - 1]))) {
        return Corruption("chunk at " + std::to_string(begin) + ": frequency " + std::to_string(f) +
                          " is out of range or not strictly increasing");
      }
      if (len == chunk_) {
        rows.push_back(basis_.data() + f * len);
      } else {
        for (size_t i = 0; i < len; ++i) tail_rows[s * len + i] = DctBasisValue(f, i, len);
        rows.push_back(tail_rows.data() + s * len);
      }
    }
    InverseSparse(rows, std::span(values).subspan(read, count), std::span(out).subspan(begin, len));
    read += count;
  }
  TRIB_RETURN_IF_ERROR(CheckDecodedFinite(out));
  return out;
}

}  // namespace tributary::collectives::codec
