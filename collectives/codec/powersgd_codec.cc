#include "collectives/codec/powersgd_codec.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "collectives/codec/wire_format.h"
#include "core/seed.h"

namespace tributary::collectives::codec {
namespace {

using Shape = PowerSgdCodec::Shape;

// Row i of M: the valid prefix of the i-th `cols`-wide slice of the flat tensor.
std::span<const float> Row(std::span<const float> m, const Shape& s, size_t i) {
  const size_t begin = i * s.cols;
  return m.subspan(begin, std::min<size_t>(s.cols, m.size() - begin));
}

double Dot(std::span<const float> a, const float* b) {
  double acc[4] = {0, 0, 0, 0};
  size_t j = 0;
  for (; j + 4 <= a.size(); j += 4) {
    for (int u = 0; u < 4; ++u) acc[u] += static_cast<double>(a[j + u]) * b[j + u];
  }
  for (; j < a.size(); ++j) acc[0] += static_cast<double>(a[j]) * b[j];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// Modified Gram-Schmidt on the rank columns of P (stored as rows of `p`, each `len` long).
// A column that is (numerically) in the span of the earlier ones becomes zero rather than noise.
void Orthonormalise(std::vector<double>& p, size_t len, uint32_t rank) {
  for (uint32_t t = 0; t < rank; ++t) {
    double* col = p.data() + t * len;
    double before = 0;
    for (size_t i = 0; i < len; ++i) before += col[i] * col[i];
    for (uint32_t s = 0; s < t; ++s) {
      const double* prev = p.data() + s * len;
      double proj = 0;
      for (size_t i = 0; i < len; ++i) proj += prev[i] * col[i];
      for (size_t i = 0; i < len; ++i) col[i] -= proj * prev[i];
    }
    double norm = 0;
    for (size_t i = 0; i < len; ++i) norm += col[i] * col[i];
    norm = std::sqrt(norm);
    const bool degenerate = !(norm > 1e-6 * std::sqrt(before)) || !std::isfinite(norm);
    for (size_t i = 0; i < len; ++i) col[i] = degenerate ? 0.0 : col[i] / norm;
  }
}

// M̂ = P·Qᵀ restricted to the n real elements. Shared by encoder and decoder so both compute
// every element with the same operations in the same order, bit for bit.
void Reconstruct(const float* pt, const float* qt, const Shape& s, std::span<float> out) {
  for (size_t i = 0; i < s.rows; ++i) {
    const size_t begin = i * s.cols, len = std::min<size_t>(s.cols, out.size() - begin);
    float* row = out.data() + begin;
    std::fill(row, row + len, 0.0f);
    for (uint32_t t = 0; t < s.rank; ++t) {
      const float p = pt[t * s.rows + i];
      const float* q = qt + t * s.cols;
      for (size_t j = 0; j < len; ++j) row[j] += p * q[j];
    }
  }
}

// Fills `q` (rank×cols) with unit rows; a zero row is replaced by a fresh random direction so
// the rank never collapses for good.
void NormaliseWarmStart(std::vector<float>& q, const Shape& s, SeedStream& random) {
  for (uint32_t t = 0; t < s.rank; ++t) {
    std::span<float> row(q.data() + t * s.cols, s.cols);
    double norm = std::sqrt(Dot(row, row.data()));
    if (!(norm > 0) || !std::isfinite(norm)) {
      for (float& x : row) x = static_cast<float>(random.Next() >> 40) * 0x1p-23f - 1.0f;
      norm = std::sqrt(Dot(row, row.data()));
    }
    for (float& x : row) x = static_cast<float>(x / norm);
  }
}

}  // namespace

std::string PowerSgdCodec::name() const {
  std::string n = "powersgd:" + std::to_string(rank_);
  if (cols_ != 0) n += ":" + std::to_string(cols_);
  return n;
}

Shape PowerSgdCodec::ShapeFor(uint64_t n) const {
  if (n == 0) return {};
  Shape s;
  uint64_t cols = cols_ != 0 ? cols_ : static_cast<uint64_t>(std::ceil(std::sqrt(double(n))));
  s.cols = static_cast<uint32_t>(std::clamp<uint64_t>(cols, 1, n));
  s.rows = static_cast<uint32_t>((n + s.cols - 1) / s.cols);
  s.rank = std::min({rank_, s.rows, s.cols});
  return s;
}

Result<size_t> PowerSgdCodec::MaxPayloadBytes(size_t numel) const {
  if (numel > kMaxNumel) return InvalidArgument("numel exceeds the maximum");
  const Shape s = ShapeFor(numel);
  return kHeaderBytes + 12 + 4 * (uint64_t{s.rows} + s.cols) * s.rank;
}

void PowerSgdCodec::Reset() {
  ErrorFeedbackCodec::Reset();
  q_.clear();
  stream_numel_ = 0;
}

void PowerSgdCodec::StartStream(size_t n, const Shape& s) {
  stream_numel_ = n;
  q_.assign(uint64_t{s.rank} * s.cols, 0.0f);
  SeedStream random(DeriveSeed({seed_, n}));
  NormaliseWarmStart(q_, s, random);
}

Result<std::string> PowerSgdCodec::EncodeAndSubtract(std::span<float> target) {
  const size_t n = target.size();
  const Shape s = ShapeFor(n);
  if (q_.empty() || stream_numel_ != n) StartStream(n, s);

  // P = M·Q in double, then orthonormalised, so huge inputs cannot overflow before scaling.
  std::vector<double> p(uint64_t{s.rank} * s.rows);
  for (size_t i = 0; i < s.rows; ++i) {
    std::span<const float> row = Row(target, s, i);
    for (uint32_t t = 0; t < s.rank; ++t) p[t * s.rows + i] = Dot(row, q_.data() + t * s.cols);
  }
  Orthonormalise(p, s.rows, s.rank);
  std::vector<float> pt(p.begin(), p.end());

  // Q = Mᵀ·P, accumulated row by row of M.
  std::vector<double> q(uint64_t{s.rank} * s.cols, 0.0);
  for (size_t i = 0; i < s.rows; ++i) {
    std::span<const float> row = Row(target, s, i);
    for (uint32_t t = 0; t < s.rank; ++t) {
      const double pi = pt[t * s.rows + i];
      double* qrow = q.data() + t * s.cols;
      for (size_t j = 0; j < row.size(); ++j) qrow[j] += pi * row[j];
    }
  }
  std::vector<float> qt(q.size());
  for (size_t j = 0; j < q.size(); ++j) {
    if (!(std::fabs(q[j]) <= FLT_MAX)) {
      return InvalidArgument("input too large: a PowerSGD factor overflows float");
    }
    qt[j] = static_cast<float>(q[j]);
  }

  std::string out;
  TRIB_ASSIGN_OR_RETURN(size_t bytes, MaxPayloadBytes(n));
  out.reserve(bytes);
  AppendHeader(out, id(), n);
  AppendU32(out, s.rows);
  AppendU32(out, s.cols);
  AppendU32(out, s.rank);
  AppendFloats(out, pt);
  AppendFloats(out, qt);

  approx_.resize(n);
  Reconstruct(pt.data(), qt.data(), s, approx_);
  TRIB_RETURN_IF_ERROR(CheckDecodedFinite(approx_));
  for (size_t i = 0; i < n; ++i) target[i] -= approx_[i];

  q_ = std::move(qt);
  SeedStream random(DeriveSeed({seed_, n, 1}));
  NormaliseWarmStart(q_, s, random);
  return out;
}

Result<std::vector<float>> PowerSgdCodec::Decode(std::string_view payload,
                                                 size_t expected_numel) const {
  return InCodecContext(DecodeValues(payload, expected_numel), name());
}

Result<std::vector<float>> PowerSgdCodec::DecodeValues(std::string_view payload, size_t n) const {
  TRIB_ASSIGN_OR_RETURN(Reader r, OpenPayload(payload, id(), n));
  const Shape s = ShapeFor(n);
  TRIB_ASSIGN_OR_RETURN(uint32_t rows, r.U32("rows"));
  TRIB_ASSIGN_OR_RETURN(uint32_t cols, r.U32("cols"));
  TRIB_ASSIGN_OR_RETURN(uint32_t rank, r.U32("rank"));
  if (rows != s.rows || cols != s.cols || rank != s.rank) {
    return Corruption("shape " + std::to_string(rows) + "x" + std::to_string(cols) + " rank " +
                      std::to_string(rank) + " does not match " + std::to_string(s.rows) + "x" +
                      std::to_string(s.cols) + " rank " + std::to_string(s.rank));
  }
  const uint64_t p_count = uint64_t{s.rank} * s.rows, q_count = uint64_t{s.rank} * s.cols;
  TRIB_RETURN_IF_ERROR(ExpectRemaining(r, 4 * (p_count + q_count), "P and Q"));
  std::vector<float> pt(p_count), qt(q_count);
  TRIB_ASSIGN_OR_RETURN(std::string_view p_bytes, r.Bytes(4 * p_count, "P"));
  TRIB_RETURN_IF_ERROR(ReadFiniteFloats(p_bytes, pt, "P"));
  TRIB_ASSIGN_OR_RETURN(std::string_view q_bytes, r.Bytes(4 * q_count, "Q"));
  TRIB_RETURN_IF_ERROR(ReadFiniteFloats(q_bytes, qt, "Q"));
  std::vector<float> out(n);
  Reconstruct(pt.data(), qt.data(), s, out);
  TRIB_RETURN_IF_ERROR(CheckDecodedFinite(out));
  return out;
}

}  // namespace tributary::collectives::codec
