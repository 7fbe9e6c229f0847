#include "collectives/float_loops.h"

#include <algorithm>
#include <bit>

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

}  // namespace tributary::collectives
