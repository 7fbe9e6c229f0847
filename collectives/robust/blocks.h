// Deterministic data parallelism: [0, n) is cut into fixed blocks of kBlockElements whose
// boundaries do not depend on the thread count, and blocks are spread over up to `threads`
// threads. Whatever a caller computes per block (values, partial sums) is therefore the same for
// any thread count, and partial sums combined in block order give identical bits.
#pragma once

#include <cstddef>
#include <functional>

namespace tributary::collectives::robust {

inline constexpr size_t kBlockElements = size_t{1} << 14;

inline size_t BlockCount(size_t n) { return (n + kBlockElements - 1) / kBlockElements; }

// Calls fn(block, begin, end) once per block; returns when all are done. fn must be safe to call
// concurrently for different blocks.
void ForEachBlock(size_t n, int threads,
                  const std::function<void(size_t block, size_t begin, size_t end)>& fn);

}  // namespace tributary::collectives::robust
