// Asynchronous DiLoCo (mode "diloco-async"): the all-reduce of round r's pseudo-gradient runs
// on its own thread during round r+1's inner steps and its result is applied one round late
// (the one-step delayed outer update of async DiLoCo / Streaming DiLoCo with overlap):
//
//   round 0      : inner steps from x_0 = θ_0 → Δ_0 = x_0 − local; no collective; θ_1 = θ_0
//   round r ≥ 1  : collective of Δ_{r−1} ∥ inner steps from x_r = θ_r − Δ_{r−1} (own) → Δ_r;
//                  θ_{r+1} = θ_r − lr_{r−1}·Nesterov(avg Δ_{r−1})
//   last round   : also averages Δ_last (blocking) and applies it, so every token counts.
//
// Starting from θ_r − own Δ_{r−1} (the "eager" local update) matters: θ_r lacks round r−1's
// work, and restarting from it makes round r re-learn it and the outer step apply it twice
// (that variant diverged; docs/BENCHMARKS.md). θ and the outer momentum stay bit-identical on
// every member; the pending Δ is each peer's own and is not part of the shared state: a peer
// that did not train round r−1 (a late joiner) starts from θ_r and contributes zeros.
#pragma once

#include <chrono>
#include <future>
#include <memory>
#include <span>
#include <vector>

#include "core/status.h"
#include "proto/tributary.pb.h"
#include "runtime/trainer.h"

namespace tributary::runtime {

// The outer learning rate of outer step `outer_step` (0-based): spec.outer_lr(), ramped
// linearly over the first spec.outer_warmup_rounds() outer steps.
double OuterLearningRate(const v1::JobSpec& spec, uint64_t outer_step);

// One Averager call on its own thread over a buffer it owns, so the caller's source survives a
// failed collective (exact retry) and the caller can compute meanwhile. The destructor waits
// for the thread: the averager must return by its own deadline.
class BackgroundAverage {
 public:
  static BackgroundAverage Start(const Averager& average, std::vector<float> values);
  BackgroundAverage() = default;
  BackgroundAverage(BackgroundAverage&&) = default;
  BackgroundAverage& operator=(BackgroundAverage&&) = delete;  // would free a buffer in use
  ~BackgroundAverage();

  bool started() const { return done_.valid(); }
  // Waits for the collective; on success values() holds the group's average.
  Status Wait();
  std::span<float> values() { return state_->values; }
  double seconds() const { return state_ ? state_->seconds : 0; }  // inside the averager

 private:
  struct State {
    std::vector<float> values;
    double seconds = 0;
  };
  std::future<Status> done_;
  std::unique_ptr<State> state_;
};

}  // namespace tributary::runtime
