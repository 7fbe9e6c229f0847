// Asynchronous DiLoCo (mode "diloco-async"): the all-reduce of round r's pseudo-gradient runs
// on its own thread during round r+1's inner steps and enters the local model at the apply step
// k (job key async_apply_step; ceil(H/2) by default), in the manner of Streaming DiLoCo with
// overlapping communication:
//
//   round 0      : inner steps from x_0 = θ_0 → Δ_0 = x_0 − local; no collective; θ_1 = θ_0
//   round r ≥ 1  : collective of Δ_{r−1} ∥ inner steps 0..k−1 from x_r = θ_r − f·Δ_{r−1} (own);
//                  at step k: θ_{r+1} = θ_r − lr_{r−1}·Nesterov(avg Δ_{r−1}), and the local model
//                  moves by θ_{r+1} − x_r; steps k..H−1 continue; Δ_r = θ_{r+1} − local
//   last round   : also averages Δ_last (blocking) and applies it, so every token counts.
//
// The collective of Δ_{r−1} need not wait for round r's RoundStart: a peer starts it when it
// reports round r−1 (Trainer::StartNextDelayedAverage), and round r takes it if the group is
// unchanged, so the coordinator's round trip overlaps it too.
//
// async_apply_when_ready makes k the earliest step instead of the step: when the average has not
// arrived by k, the steps go on and it enters before the first step after it has (before step
// H−1 at the latest). θ_{r+1} does not depend on that step, so every member still agrees on it;
// only each peer's own Δ_r does, and a run no longer repeats bit for bit.
//
// Starting from θ_r − f·own Δ_{r−1} (the "eager" local update) matters: θ_r lacks round r−1's
// work, and restarting from it makes round r re-learn it and the outer step apply it twice
// (that variant diverged; docs/BENCHMARKS.md). f (job key async_eager_fraction, 0.75 by default)
// is less than 1 because one peer's Δ is a noisy guess at the group's: at batch 8 and H = 10,
// f = 0.75 ended 0.05–0.13 lower in eval loss than f = 1 on three seeds; 0.5 and 1.25 did no
// better than 1 (docs/BENCHMARKS.md, "The eager fraction"). Applying the group's average at
// step k rather than at the round's end matters too: until then the local model carries its
// own round-(r−1) noise instead of the group's average, and carrying it for whole rounds kept
// the model on a plateau that synchronous DiLoCo left (batch 8, H = 10: eval loss 2.32 against
// 1.97 after 600 steps; applied at step 5: 2.12). k = H is the plain one-round delay; k must
// come after the collective or the steps wait for it. The steps before k do not depend on the
// collective, so a retry after it failed resumes at k (exact retry). θ and the outer momentum
// stay bit-identical on every member; the pending Δ is each peer's own and is not part of the
// shared state: a peer that did not train round r−1 (a late joiner) starts from θ_r and
// contributes zeros.
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
  // The collective has returned (Wait() will not block).
  bool ready() const { return done_.valid() && done_.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }
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
