#include "runtime/async_outer.h"

#include <algorithm>

#include "core/clock.h"

namespace tributary::runtime {

double OuterLearningRate(const v1::JobSpec& spec, uint64_t outer_step) {
  const uint32_t warmup = spec.outer_warmup_rounds();
  if (warmup == 0 || outer_step >= warmup) return spec.outer_lr();
  return spec.outer_lr() * static_cast<double>(outer_step + 1) / warmup;
}

BackgroundAverage BackgroundAverage::Start(const Averager& average, std::vector<float> values) {
  BackgroundAverage out;
  out.state_ = std::make_unique<State>();
  out.state_->values = std::move(values);
  State* state = out.state_.get();  // stable: the unique_ptr moves, the State does not
  out.done_ = std::async(std::launch::async, [&average, state]() -> Status {
    const auto start = Clock::now();
    Status st;
    try {
      st = average(std::span<float>(state->values));
    } catch (const std::exception& e) {
      st = Internal(std::string("averager threw: ") + e.what());
    }
    state->seconds = SecondsSince(start);
    return st;
  });
  return out;
}

BackgroundAverage::~BackgroundAverage() {
  if (done_.valid()) done_.wait();
}

Status BackgroundAverage::Wait() {
  if (!done_.valid()) return FailedPrecondition("no collective in flight");
  return done_.get();
}

}  // namespace tributary::runtime
