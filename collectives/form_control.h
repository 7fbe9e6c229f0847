// FormControl: how the caller steers a ring or mesh formation that is in progress, and what it
// learns when formation fails.
//
// Formation waits for other members, so a member that froze (SIGSTOP, a pulled cable) would hold
// everyone until the deadline. The caller usually learns first that the attempt is obsolete
// (the coordinator already started a retry without that member): `cancelled` is polled every
// few tens of milliseconds on the forming thread and, once it returns true, Form gives up with
// Aborted. `blamed_rank` names the member formation was waiting for when it failed, so the
// caller can tell the coordinator whom to leave out of the retry.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "core/clock.h"

namespace tributary::collectives {

struct FormControl {
  std::function<bool()> cancelled;       // optional; must be cheap and thread-safe
  std::optional<uint32_t> blamed_rank;   // out: set by a failed Form when a member is to blame

  bool IsCancelled() const { return cancelled && cancelled(); }
};

// An all-reduce (CollectiveOptions::control) polls cancelled() this often while it waits on
// peers, and reports a cancellation as Aborted with this message.
inline constexpr Millis kCollectiveCancelPoll{20};
inline constexpr const char* kCollectiveSuperseded =
    "gave up the all-reduce: the attempt was superseded";

// Members hear a retry's RoundStart milliseconds apart, so a member may still be forming the
// previous attempt when a faster one greets it for the new one. It answers ATTEMPT_AHEAD (not a
// rejection), and the dialer greets it again every kRegreetDelay for up to kAheadPatience: a
// member forming an obsolete attempt notices its RoundStart within one cancellation poll. One
// still behind after that is stuck elsewhere, and formation fails naming it.
inline constexpr Millis kRegreetDelay{100};
inline constexpr Millis kAheadPatience{1000};
// A hello for (round, attempt) is ahead of a member forming (my_round, my_attempt).
inline bool HelloIsAhead(uint64_t round, uint32_t attempt, uint64_t my_round, uint32_t my_attempt) {
  return round > my_round || (round == my_round && attempt > my_attempt);
}

}  // namespace tributary::collectives
