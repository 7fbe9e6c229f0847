// The element loops every fp32 all-reduce path runs over whole tensors: finiteness scans, sums,
// the average. One translation unit, built for AVX2 and for the baseline ISA
// (core/vector_clones.h); every loop is element-wise or an integer reduction, so any machine
// computes the same bits. Branch-free, so they vectorise; codec::FirstNonFinite finds the
// culprit on the rare failure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace tributary::collectives {

// No NaN or ±Inf in `v`.
bool AllFinite(std::span<const float> v);
// The largest |x| as its bit pattern (for finite floats the patterns order like the values); at
// least 0x7f800000 when some element is not finite.
uint32_t MaxAbsBits(std::span<const float> v);
inline constexpr uint32_t kNonFiniteBits = 0x7f800000u;
// acc[i] += in[i].
void AddInto(std::span<float> acc, std::span<const float> in);
// acc[i] += in[i], with flags: bit 0 says `in` held a non-finite value, bit 1 that a sum is
// non-finite (an overflow, or `acc` was not finite).
uint32_t AddChecked(std::span<float> acc, std::span<const float> in);
// out[i] = in[i] / n (`out` may be `in`).
void DivideInto(std::span<float> out, std::span<const float> in, float n);

// data = (inputs[0] + inputs[1] + ...) / divisor, summed left to right (the same bits on every
// machine) in blocks that stay in L1; every input is data.size() finite floats, with MaxAbsBits
// `max_abs_bits`. When those rule an overflow out (the usual case) the sum goes straight into
// `data`, which may be one of the inputs (each block is read before it is written). Otherwise
// it is staged in `scratch` (data.size() floats, may be an input other than `data`, is
// overwritten) so that an overflow leaves `data` untouched; the overflowing element's index is
// returned.
std::optional<size_t> SumUnlessOverflow(std::span<const float* const> inputs,
                                        std::span<const uint32_t> max_abs_bits,
                                        std::span<float> data, float* scratch, float divisor);

}  // namespace tributary::collectives
