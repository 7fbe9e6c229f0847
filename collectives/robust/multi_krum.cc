#include "collectives/robust/multi_krum.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "collectives/robust/blocks.h"
#include "collectives/robust/coordinate_wise.h"

namespace tributary::collectives::robust {
namespace {

// Squared distances between every pair, n×n; block partial sums combined in block order.
std::vector<double> PairwiseSquaredDistances(Contributions inputs, int threads) {
  const size_t n = inputs.size(), d = inputs[0].size(), blocks = BlockCount(d);
  std::vector<double> partial(blocks * n * n, 0.0);
  ForEachBlock(d, threads, [&](size_t b, size_t begin, size_t end) {
    double* out = partial.data() + b * n * n;
    for (size_t i = 0; i < n; ++i) {
      for (size_t k = i + 1; k < n; ++k) {
        double sum = 0;
        for (size_t j = begin; j < end; ++j) {
          const double diff = static_cast<double>(inputs[i][j]) - inputs[k][j];
          sum += diff * diff;
        }
        out[i * n + k] = out[k * n + i] = sum;
      }
    }
  });
  std::vector<double> dist(n * n, 0.0);
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t p = 0; p < n * n; ++p) dist[p] += partial[b * n * n + p];
  }
  return dist;
}

}  // namespace

AggregateResult MultiKrum(Contributions inputs, uint32_t f, uint32_t m, int threads) {
  const size_t n = inputs.size(), neighbours = n - f - 2;
  const std::vector<double> dist = PairwiseSquaredDistances(inputs, threads);
  std::vector<double> score(n);
  std::vector<double> others;
  for (size_t i = 0; i < n; ++i) {
    others.clear();
    for (size_t k = 0; k < n; ++k) {
      if (k != i) others.push_back(dist[i * n + k]);
    }
    std::sort(others.begin(), others.end());
    score[i] = std::accumulate(others.begin(), others.begin() + neighbours, 0.0);
  }
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return score[a] < score[b]; });
  AggregateResult result;
  result.selected.assign(order.begin(), order.begin() + m);
  std::sort(result.selected.begin(), result.selected.end());
  std::vector<std::span<const float>> chosen;
  for (uint32_t i : result.selected) chosen.push_back(inputs[i]);
  result.values = Mean(chosen, threads);
  return result;
}

}  // namespace tributary::collectives::robust
