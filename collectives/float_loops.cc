#include "collectives/float_loops.h"

#include <algorithm>
#include <bit>
#include <limits>

#include "collectives/codec/codec.h"
#include "core/vector_clones.h"

namespace tributary::collectives {

using codec::NonFinite;

TRIB_VECTOR_CLONES bool AllFinite(std::span<const float> v) {
  uint32_t bad = 0;
  for (float f : v) bad |= NonFinite(f);
  return bad == 0;
}

TRIB_VECTOR_CLONES uint32_t MaxAbsBits(std::span<const float> v) {
  uint32_t max = 0;
  for (float f : v) max = std::max(max, std::bit_cast<uint32_t>(f) & 0x7fffffffu);
  return max;
}

TRIB_VECTOR_CLONES void AddInto(std::span<float> acc, std::span<const float> in) {
  for (size_t i = 0; i < acc.size(); ++i) acc[i] += in[i];
}

TRIB_VECTOR_CLONES uint32_t AddChecked(std::span<float> acc, std::span<const float> in) {
  uint32_t bad_in = 0;
  uint32_t bad_sum = 0;
  for (size_t i = 0; i < acc.size(); ++i) {
    const float s = acc[i] + in[i];
    acc[i] = s;
    bad_in |= NonFinite(in[i]);
    bad_sum |= NonFinite(s);
  }
  return bad_in | (bad_sum << 1);
}

TRIB_VECTOR_CLONES void DivideInto(std::span<float> out, std::span<const float> in, float n) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = in[i] / n;
}

namespace {

bool SumCannotOverflow(std::span<const uint32_t> max_abs_bits) {
  double bound = 0;
  for (uint32_t bits : max_abs_bits) bound += std::bit_cast<float>(bits);
  const double slack = 1 + 0x1p-20 * static_cast<double>(max_abs_bits.size());
  return bound * slack < std::numeric_limits<float>::max();
}

// out = (inputs...) / divisor in L1-sized blocks; the index of the first non-finite sum.
std::optional<size_t> SumInBlocks(std::span<const float* const> inputs, std::span<float> out,
                                  float divisor = 1.0f) {
  constexpr size_t kBlock = 1024;
  float acc[kBlock];
  for (size_t b = 0; b < out.size(); b += kBlock) {
    const size_t m = std::min(kBlock, out.size() - b);
    std::copy(inputs[0] + b, inputs[0] + b + m, acc);
    for (size_t r = 1; r < inputs.size(); ++r) AddInto({acc, m}, {inputs[r] + b, m});
    if (!AllFinite({acc, m})) return b + codec::FirstNonFinite(std::span<const float>(acc, m));
    if (divisor != 1.0f) {
      DivideInto(out.subspan(b, m), {acc, m}, divisor);
    } else {
      std::copy(acc, acc + m, out.begin() + static_cast<std::ptrdiff_t>(b));
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<size_t> SumUnlessOverflow(std::span<const float* const> inputs,
                                        std::span<const uint32_t> max_abs_bits,
                                        std::span<float> data, float* scratch, float divisor) {
  if (SumCannotOverflow(max_abs_bits)) return SumInBlocks(inputs, data, divisor);
  const std::span<float> staged(scratch, data.size());
  if (auto overflow = SumInBlocks(inputs, staged)) return overflow;
  if (divisor != 1.0f) {
    DivideInto(data, staged, divisor);
  } else {
    std::copy(staged.begin(), staged.end(), data.begin());
  }
  return std::nullopt;
}

}  // namespace tributary::collectives
