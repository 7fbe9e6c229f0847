// Orthonormal DCT-II basis for the dct-topk codec. Basis values come from one function in double
// and are rounded to float once, so encoder and decoder (and every peer of the same build) use
// identical bits. Row k of the length-L basis is the k-th cosine; the inverse is the transpose.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace tributary::collectives::codec {

// √(1/L) for k = 0, else √(2/L), times cos(π·(n + ½)·k / L).
float DctBasisValue(size_t k, size_t n, size_t length);

// The full length×length basis, row-major by k.
std::vector<float> DctBasis(size_t length);

// coefficients[k] = Σ_n basis[k][n]·x[n] for all k < x.size(); `basis_transposed` is the basis
// stored n-major (element [n·L + k]), which makes the inner loop a vectorisable axpy.
void ForwardDct(std::span<const float> x, std::span<const float> basis_transposed,
                std::span<float> coefficients);

}  // namespace tributary::collectives::codec
