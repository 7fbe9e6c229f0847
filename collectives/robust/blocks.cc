#include "collectives/robust/blocks.h"

#include <algorithm>
#include <atomic>
#include <system_error>
#include <thread>
#include <vector>

namespace tributary::collectives::robust {

void ForEachBlock(size_t n, int threads,
                  const std::function<void(size_t block, size_t begin, size_t end)>& fn) {
  const size_t blocks = BlockCount(n);
  auto run = [&](size_t b) { fn(b, b * kBlockElements, std::min(n, (b + 1) * kBlockElements)); };
  const size_t workers = std::min<size_t>(blocks, static_cast<size_t>(std::max(threads, 1)));
  if (workers <= 1) {
    for (size_t b = 0; b < blocks; ++b) run(b);
    return;
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t b = next++; b < blocks; b = next++) run(b);
  };
  std::vector<std::jthread> pool;
  try {
    for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
  } catch (const std::system_error&) {
    // Out of threads: the blocks are handed out dynamically, so fewer workers only cost time.
  }
  work();
}

}  // namespace tributary::collectives::robust
