// Time vocabulary: every network wait takes a Deadline.
#pragma once

#include <chrono>

namespace tributary {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
using Millis = std::chrono::milliseconds;

inline Deadline DeadlineAfter(Millis timeout) { return Clock::now() + timeout; }
inline double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}
inline long MillisLeft(Deadline d) {
  return static_cast<long>(std::chrono::duration_cast<Millis>(d - Clock::now()).count());
}

}  // namespace tributary
