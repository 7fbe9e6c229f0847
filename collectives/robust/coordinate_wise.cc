#include "collectives/robust/coordinate_wise.h"

#include <algorithm>

#include "collectives/robust/blocks.h"

namespace tributary::collectives::robust {
namespace {

// Runs reduce(sorted values of coordinate j) for every j, block-parallel.
template <typename Reduce>
std::vector<float> PerCoordinateSorted(Contributions inputs, int threads, Reduce reduce) {
  const size_t d = inputs[0].size();
  std::vector<float> out(d);
  ForEachBlock(d, threads, [&](size_t, size_t begin, size_t end) {
    std::vector<float> column(inputs.size());
    for (size_t j = begin; j < end; ++j) {
      for (size_t i = 0; i < inputs.size(); ++i) column[i] = inputs[i][j];
      std::sort(column.begin(), column.end());
      out[j] = reduce(column);
    }
  });
  return out;
}

}  // namespace

std::vector<float> Mean(Contributions inputs, int threads) {
  const size_t d = inputs[0].size();
  const double n = static_cast<double>(inputs.size());
  std::vector<float> out(d);
  ForEachBlock(d, threads, [&](size_t, size_t begin, size_t end) {
    for (size_t j = begin; j < end; ++j) {
      double sum = 0;
      for (const auto& g : inputs) sum += g[j];
      out[j] = static_cast<float>(sum / n);
    }
  });
  return out;
}

std::vector<float> TrimmedMean(Contributions inputs, uint32_t trim, int threads) {
  const size_t keep = inputs.size() - 2 * size_t{trim};
  return PerCoordinateSorted(inputs, threads, [&](const std::vector<float>& sorted) {
    double sum = 0;
    for (size_t i = trim; i < trim + keep; ++i) sum += sorted[i];
    return static_cast<float>(sum / static_cast<double>(keep));
  });
}

std::vector<float> CoordinateMedian(Contributions inputs, int threads) {
  const size_t n = inputs.size();
  return PerCoordinateSorted(inputs, threads, [&](const std::vector<float>& sorted) {
    if (n % 2 == 1) return sorted[n / 2];
    return static_cast<float>((static_cast<double>(sorted[n / 2 - 1]) + sorted[n / 2]) / 2.0);
  });
}

}  // namespace tributary::collectives::robust
