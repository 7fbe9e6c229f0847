#include "collectives/codec/dct.h"

#include <cmath>
#include <numbers>

namespace tributary::collectives::codec {

float DctBasisValue(size_t k, size_t n, size_t length) {
  const double len = static_cast<double>(length);
  const double scale = k == 0 ? std::sqrt(1.0 / len) : std::sqrt(2.0 / len);
  return static_cast<float>(scale * std::cos(std::numbers::pi * (static_cast<double>(n) + 0.5) *
                                             static_cast<double>(k) / len));
}

std::vector<float> DctBasis(size_t length) {
  std::vector<float> basis(length * length);
  for (size_t k = 0; k < length; ++k) {
    for (size_t n = 0; n < length; ++n) basis[k * length + n] = DctBasisValue(k, n, length);
  }
  return basis;
}

void ForwardDct(std::span<const float> x, std::span<const float> basis_transposed,
                std::span<float> coefficients) {
  const size_t len = x.size();
  // No aliasing between the three arrays lets the compiler keep the accumulators in registers.
  float* __restrict__ out = coefficients.data();
  const float* __restrict__ in = x.data();
  const float* __restrict__ basis = basis_transposed.data();
  for (size_t k = 0; k < len; ++k) out[k] = 0.0f;
  for (size_t n = 0; n < len; ++n) {
    const float xn = in[n];
    const float* __restrict__ row = basis + n * len;
    for (size_t k = 0; k < len; ++k) out[k] += xn * row[k];
  }
}

}  // namespace tributary::collectives::codec
