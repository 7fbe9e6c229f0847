#include "collectives/tsp.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace tributary::collectives {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Starts the cyclic tour at node 0 (same cycle, same direction).
std::vector<uint32_t> RotateToZero(std::vector<uint32_t> t) {
  auto it = std::find(t.begin(), t.end(), 0u);
  std::rotate(t.begin(), it, t.end());
  return t;
}

std::vector<uint32_t> NearestNeighbour(const CostMatrix& c, uint32_t start) {
  const size_t n = c.size();
  std::vector<uint32_t> tour{start};
  std::vector<bool> used(n, false);
  used[start] = true;
  for (size_t step = 1; step < n; ++step) {
    const uint32_t from = tour.back();
    uint32_t best = 0;
    double best_cost = kInf;
    bool found = false;
    for (uint32_t j = 0; j < n; ++j) {
      if (used[j]) continue;
      if (!found || c.at(from, j) < best_cost) {
        best = j, best_cost = c.at(from, j), found = true;
      }
    }
    used[best] = true;
    tour.push_back(best);
  }
  return tour;
}

// Improvement must beat this much, so float noise cannot cycle the search.
double Epsilon(double tour_cost) { return 1e-12 * std::max(1.0, std::abs(tour_cost)); }

// One first-improvement 2-opt pass over the cyclic tour (position 0 fixed). True if improved.
bool TwoOptPass(const CostMatrix& c, std::vector<uint32_t>& t) {
  const size_t n = t.size();
  if (n < 4) return false;
  // Prefix sums of the tour's edges forwards (t[k] -> t[k+1]) and backwards (t[k+1] -> t[k]).
  std::vector<double> fwd(n, 0), bwd(n, 0);
  for (size_t k = 0; k + 1 < n; ++k) {
    fwd[k + 1] = fwd[k] + c.at(t[k], t[k + 1]);
    bwd[k + 1] = bwd[k] + c.at(t[k + 1], t[k]);
  }
  const double total = fwd[n - 1] + c.at(t[n - 1], t[0]);
  for (size_t i = 1; i + 1 < n; ++i) {
    for (size_t j = i + 1; j < n; ++j) {
      const uint32_t a = t[i - 1], b = t[i], e = t[j], f = t[(j + 1) % n];
      const double before = c.at(a, b) + (fwd[j] - fwd[i]) + c.at(e, f);
      const double after = c.at(a, e) + (bwd[j] - bwd[i]) + c.at(b, f);
      if (after < before - Epsilon(total)) {
        std::reverse(t.begin() + static_cast<ptrdiff_t>(i), t.begin() + static_cast<ptrdiff_t>(j) + 1);
        return true;
      }
    }
  }
  return false;
}

// One first-improvement Or-opt pass: move a segment of 1..3 consecutive nodes (kept in its
// direction) to between two other consecutive nodes. True if improved.
bool OrOptPass(const CostMatrix& c, std::vector<uint32_t>& t) {
  const size_t n = t.size();
  if (n < 4) return false;
  const double total = TourCost(c, t);
  for (size_t len = 1; len <= 3 && len + 2 <= n; ++len) {
    for (size_t i = 0; i < n; ++i) {
      const uint32_t p = t[(i + n - 1) % n], s0 = t[i], s1 = t[(i + len - 1) % n],
                     q = t[(i + len) % n];
      const double removed = c.at(p, s0) + c.at(s1, q) - c.at(p, q);
      // Candidate gaps (a, b) among the nodes outside the segment, in tour order after q.
      for (size_t k = 0; k + len + 1 < n; ++k) {
        const size_t ai = (i + len + k) % n, bi = (ai + 1) % n;
        const uint32_t a = t[ai], b = t[bi];
        if (a == p) continue;  // b would be s0: the segment's own place
        const double added = c.at(a, s0) + c.at(s1, b) - c.at(a, b);
        if (added < removed - Epsilon(total)) {
          std::vector<uint32_t> seg, rest;
          for (size_t m = 0; m < len; ++m) seg.push_back(t[(i + m) % n]);
          for (size_t m = 0; m < n - len; ++m) rest.push_back(t[(i + len + m) % n]);
          // rest starts at q; insert the segment after a.
          auto pos = std::find(rest.begin(), rest.end(), a) + 1;
          rest.insert(pos, seg.begin(), seg.end());
          t = RotateToZero(std::move(rest));
          return true;
        }
      }
    }
  }
  return false;
}

void LocalSearch(const CostMatrix& c, std::vector<uint32_t>& t) {
  // Each accepted move lowers the cost by more than epsilon, so this ends; the cap is a guard.
  for (int guard = 0; guard < 100000; ++guard) {
    if (OrOptPass(c, t)) continue;
    if (TwoOptPass(c, t)) continue;
    break;
  }
}

}  // namespace

double TourCost(const CostMatrix& cost, const std::vector<uint32_t>& order) {
  const size_t n = order.size();
  if (n < 2) return 0;
  double sum = 0;
  for (size_t k = 0; k < n; ++k) sum += cost.at(order[k], order[(k + 1) % n]);
  return sum;
}

Result<Tour> SolveExact(const CostMatrix& c) {
  const size_t n = c.size();
  if (n > kMaxExactNodes) {
    return InvalidArgument("exact TSP supports at most " + std::to_string(kMaxExactNodes) +
                                   " nodes, got " + std::to_string(n));
  }
  Tour tour;
  tour.exact = true;
  if (n == 0) return tour;
  if (n <= 2) {
    for (uint32_t i = 0; i < n; ++i) tour.order.push_back(i);
    tour.cost = TourCost(c, tour.order);
    return tour;
  }
  // Node 0 is the fixed start; subsets range over nodes 1..n-1 (bit k-1 for node k).
  // dp[S][k] = cheapest path 0 -> ... -> k visiting exactly S (k in S).
  const size_t m = n - 1, subsets = size_t{1} << m;
  std::vector<double> dp(subsets * m, kInf);
  std::vector<uint8_t> parent(subsets * m, 0);  // previous node (0 = start)
  for (size_t k = 0; k < m; ++k) dp[(size_t{1} << k) * m + k] = c.at(0, k + 1);
  for (size_t s = 1; s < subsets; ++s) {
    for (size_t k = 0; k < m; ++k) {
      if (!(s >> k & 1)) continue;
      const size_t prev_set = s & ~(size_t{1} << k);
      if (prev_set == 0) continue;
      double best = kInf;
      uint8_t arg = 0;
      for (size_t j = 0; j < m; ++j) {
        if (!(prev_set >> j & 1)) continue;
        const double v = dp[prev_set * m + j] + c.at(j + 1, k + 1);
        if (v < best) best = v, arg = static_cast<uint8_t>(j + 1);
      }
      dp[s * m + k] = best;
      parent[s * m + k] = arg;
    }
  }
  const size_t full = subsets - 1;
  double best = kInf;
  size_t last = 0;
  for (size_t k = 0; k < m; ++k) {
    const double v = dp[full * m + k] + c.at(k + 1, 0);
    if (v < best) best = v, last = k;
  }
  // Walk the parents back from the last node.
  std::vector<uint32_t> rev;
  size_t s = full, k = last;
  while (true) {
    rev.push_back(static_cast<uint32_t>(k + 1));
    const uint8_t p = parent[s * m + k];
    s &= ~(size_t{1} << k);
    if (p == 0) break;
    k = p - 1u;
  }
  tour.order.push_back(0);
  tour.order.insert(tour.order.end(), rev.rbegin(), rev.rend());
  tour.cost = best;
  if (!std::isfinite(best)) tour.cost = kInf;
  return tour;
}

Tour SolveHeuristic(const CostMatrix& c) {
  const size_t n = c.size();
  Tour best;
  if (n == 0) return best;
  // Forbidden edges get a finite penalty that outweighs any tour of allowed edges, so the
  // local search still compares tours that use them (and steers away from them).
  double max_finite = 0;
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (std::isfinite(c.at(i, j))) max_finite = std::max(max_finite, std::abs(c.at(i, j)));
    }
  }
  CostMatrix search(n);
  const double penalty = (max_finite + 1) * static_cast<double>(n) * 4;
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) search.at(i, j) = std::isfinite(c.at(i, j)) ? c.at(i, j) : penalty;
  }
  // Nearest neighbour from every start; local search on the best few.
  std::vector<std::pair<double, std::vector<uint32_t>>> starts;
  for (uint32_t s = 0; s < n; ++s) {
    auto t = RotateToZero(NearestNeighbour(search, s));
    starts.emplace_back(TourCost(search, t), std::move(t));
  }
  std::stable_sort(starts.begin(), starts.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  const size_t tries = std::min<size_t>(starts.size(), n <= 64 ? n : 8);
  double best_search = kInf;
  for (size_t i = 0; i < tries; ++i) {
    std::vector<uint32_t> t = std::move(starts[i].second);
    LocalSearch(search, t);
    const double v = TourCost(search, t);
    if (best.order.empty() || v < best_search) best_search = v, best.order = std::move(t);
  }
  best.cost = TourCost(c, best.order);
  return best;
}

Tour Solve(const CostMatrix& cost, size_t exact_limit) {
  if (cost.size() <= std::min(exact_limit, kMaxExactNodes)) {
    auto exact = SolveExact(cost);
    if (exact.ok()) return std::move(exact).value();
  }
  return SolveHeuristic(cost);
}

}  // namespace tributary::collectives
