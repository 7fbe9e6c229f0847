// Asymmetric travelling-salesman tours over a dense cost matrix, for ordering a ring.
//
// cost(i, j) is the cost of the directed edge i -> j (need not equal cost(j, i)); +infinity
// forbids the edge. A tour visits every node once and returns to its start; it is reported as
// the visiting order starting at node 0, and its cost is the sum of its n edges.
//
//   SolveExact      Held–Karp dynamic programme, O(2^n n^2) time, O(2^n n) memory: optimal.
//                   n <= kMaxExactNodes (memory), InvalidArgument above.
//   SolveHeuristic  nearest neighbour from every start, then local search to a local optimum:
//                   Or-opt (move a segment of 1–3 nodes elsewhere, direction kept: the moves
//                   that suit an asymmetric matrix) and 2-opt (reverse a segment; its cost is
//                   re-summed in the new direction, since reversing changes edge costs).
//   Solve           exact up to `exact_limit` nodes, heuristic above.
// All three are deterministic (ties go to the lower index), so every member that solves the
// same matrix gets the same tour.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/status.h"

namespace tributary::collectives {

class CostMatrix {
 public:
  CostMatrix() = default;
  explicit CostMatrix(size_t n, double fill = 0) : n_(n), v_(n * n, fill) {}
  size_t size() const { return n_; }
  double& at(size_t i, size_t j) { return v_[i * n_ + j]; }
  double at(size_t i, size_t j) const { return v_[i * n_ + j]; }

 private:
  size_t n_ = 0;
  std::vector<double> v_;
};

struct Tour {
  std::vector<uint32_t> order;  // starts at 0; empty for n == 0
  double cost = 0;              // +infinity when no tour avoids the forbidden edges
  bool exact = false;           // proven optimal
};

inline constexpr size_t kMaxExactNodes = 18;

double TourCost(const CostMatrix& cost, const std::vector<uint32_t>& order);
Result<Tour> SolveExact(const CostMatrix& cost);
Tour SolveHeuristic(const CostMatrix& cost);
Tour Solve(const CostMatrix& cost, size_t exact_limit = 12);

}  // namespace tributary::collectives
