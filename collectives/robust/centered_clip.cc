#include "collectives/robust/centered_clip.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "collectives/robust/blocks.h"

namespace tributary::collectives::robust {
namespace {

// ‖g_i − x‖₂ for every i: per-block partial sums, combined in block order.
std::vector<double> Distances(Contributions inputs, std::span<const float> x, int threads) {
  const size_t n = inputs.size(), d = x.size(), blocks = BlockCount(d);
  std::vector<double> partial(blocks * n, 0.0);
  ForEachBlock(d, threads, [&](size_t b, size_t begin, size_t end) {
    for (size_t i = 0; i < n; ++i) {
      double sum = 0;
      for (size_t j = begin; j < end; ++j) {
        const double diff = static_cast<double>(inputs[i][j]) - x[j];
        sum += diff * diff;
      }
      partial[b * n + i] = sum;
    }
  });
  std::vector<double> dist(n, 0.0);
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t i = 0; i < n; ++i) dist[i] += partial[b * n + i];
  }
  for (double& v : dist) v = std::sqrt(v);
  return dist;
}

// Fills step = (1/n)·Σ w_i·(g_i − x) with w_i = min(1, τ/‖g_i − x‖) and returns ‖step‖₂.
double Step(Contributions inputs, std::span<const float> x, double tau, int threads,
            std::vector<double>& step) {
  const size_t n = inputs.size(), d = x.size(), blocks = BlockCount(d);
  const std::vector<double> dist = Distances(inputs, x, threads);
  std::vector<double> weight(n);
  for (size_t i = 0; i < n; ++i) weight[i] = dist[i] > tau ? tau / dist[i] : 1.0;
  step.assign(d, 0.0);
  std::vector<double> partial(blocks, 0.0);
  ForEachBlock(d, threads, [&](size_t b, size_t begin, size_t end) {
    double sum = 0;
    for (size_t j = begin; j < end; ++j) {
      double s = 0;
      for (size_t i = 0; i < n; ++i) s += weight[i] * (static_cast<double>(inputs[i][j]) - x[j]);
      s /= static_cast<double>(n);
      step[j] = s;
      sum += s * s;
    }
    partial[b] = sum;
  });
  double total = 0;
  for (double p : partial) total += p;
  return std::sqrt(total);
}

std::string Sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

}  // namespace

AggregateResult CenteredClip(Contributions inputs, std::span<const float> start, double tau,
                             uint32_t iterations, double tolerance, int threads) {
  AggregateResult result;
  result.values.assign(start.begin(), start.end());
  std::vector<double> step;
  for (;;) {
    result.fixed_point_residual = Step(inputs, result.values, tau, threads, step);
    if (result.fixed_point_residual <= tolerance || result.iterations == iterations) break;
    for (size_t j = 0; j < step.size(); ++j) {
      result.values[j] = static_cast<float>(result.values[j] + step[j]);
    }
    ++result.iterations;
  }
  return result;
}

Result<double> CenteredClipResidual(Contributions inputs, std::span<const float> x, double tau,
                                    int threads) {
  TRIB_RETURN_IF_ERROR(CheckContributions(inputs));
  if (x.size() != inputs[0].size()) {
    return InvalidArgument("aggregate has " + std::to_string(x.size()) +
                           " elements, contributions have " + std::to_string(inputs[0].size()));
  }
  for (size_t j = 0; j < x.size(); ++j) {
    if (!std::isfinite(x[j])) {
      return InvalidArgument("aggregate element " + std::to_string(j) + " is not finite");
    }
  }
  if (!(tau > 0) || !std::isfinite(tau)) return InvalidArgument("tau must be finite and > 0");
  std::vector<double> step;
  return Step(inputs, x, tau, threads, step);
}

Status CheckCenteredClip(Contributions inputs, std::span<const float> x, double tau,
                         double max_residual, int threads) {
  TRIB_ASSIGN_OR_RETURN(double residual, CenteredClipResidual(inputs, x, tau, threads));
  if (residual <= max_residual) return Status::Ok();
  return Corruption("claimed CenteredClip aggregate is not a fixed point: residual " +
                    Sci(residual) + " exceeds the allowed " + Sci(max_residual));
}

}  // namespace tributary::collectives::robust
