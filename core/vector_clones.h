// TRIB_VECTOR_CLONES: compiles a hot loop over tensor elements twice, for AVX2 and for the
// baseline x86-64 the build targets, and lets the loader pick one per machine (GCC/Clang
// target_clones, an ifunc). Some of these loops do not vectorise on baseline SSE2 at all (an
// unsigned 32-bit max has no SSE2 instruction): the finiteness scan of a 256 KiB tensor took
// 21 µs there and 3.7 µs with AVX2, on the all-reduce's critical path twice per call. Only for
// loops whose result does not depend on the vector width (element-wise IEEE operations, integer
// reductions), so every machine computes the same bits.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define TRIB_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TRIB_VECTOR_CLONES
#endif
