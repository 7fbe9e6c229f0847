// Whole-tensor messages between the members of a Mesh: the pieces the direct all-reduce and
// recursive doubling share. Each peer sends a call at most one message, so a message is told
// apart by its connection; its header is checked (job, tag, dtype, numel, claimed sender, size)
// before a byte of payload is read, and the payload lands in that sender's slot.
//
// Threads: the calling thread reads the peers' messages itself, inside ArrivalBox::Take: it
// waits in poll() on the connections whose message is still due and reads each as it becomes
// readable (a receive handed to an io thread costs the caller a second wake-up per message).
// Finished and failed sends are reported into the box by whichever thread completes them; a
// report wakes a polling caller through the box's eventfd. The box is shared (shared_ptr) with
// those send handlers, so it outlives a call that failed while sends were in flight.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "collectives/form_control.h"
#include "collectives/mesh.h"
#include "core/clock.h"
#include "core/status.h"

namespace tributary::collectives {

// What a peer's single message must look like.
struct ExpectedTensor {
  std::string job_id;
  std::string tag;
  uint64_t numel = 0;
  uint64_t max_bytes = 0;  // exact: exactly this many bytes; else at most (a codec's bound)
  bool exact = false;
};

Status CheckTensorHeader(const v1::Envelope& env, const ExpectedTensor& e, uint32_t sender);

// One peer's message (or why it did not come), or a failed send to that peer.
struct Arrival {
  uint32_t peer = 0;
  bool sending = false;                // a send to `peer` failed
  Status status;                       // transport or header failure
  std::optional<std::string> relayed;  // the peer sent an Error instead
};

class ArrivalBox {
 public:
  ArrivalBox();
  ~ArrivalBox();
  ArrivalBox(const ArrivalBox&) = delete;
  ArrivalBox& operator=(const ArrivalBox&) = delete;

  // Per-sender slots: exact messages land in floats[p] (numel floats each), others in payloads[p].
  std::vector<std::unique_ptr<float[]>> floats;
  std::vector<std::string> payloads;

  // The one message `peer` sends this call, due on `conn` by `deadline`: Take reads it (header
  // checked before a byte of payload is read, then the payload into the peer's slot) and turns
  // it, a relayed Error, or the failure into an Arrival. Caller's thread only.
  void ExpectMessage(std::shared_ptr<net::Connection> conn, uint32_t peer,
                     std::shared_ptr<const ExpectedTensor> expected, Deadline deadline);

  // The ranks this call sends to (before any send starts).
  void ExpectSendsTo(uint32_t world, const std::vector<uint32_t>& targets);
  void Push(Arrival a);
  // Our sends usually finish while the caller still waits for messages, so a finished send
  // wakes it only when it waits for exactly that: an extra wake-up is a context switch on the
  // latency path. (Waiting through Connection::Flush would cost a round trip to each io thread.)
  void SendDone(uint32_t peer);
  // What arrived, reading due messages as they come, until something did, `until` passed or
  // (when `wait_for_sends`) every send finished. *all_sent says whether every send has finished.
  // Caller's thread only.
  std::deque<Arrival> Take(Deadline until, bool wait_for_sends, bool* all_sent);
  bool AllSent();
  // A target whose send has not finished.
  std::optional<uint32_t> FirstUnsent();

 private:
  struct Due {
    std::shared_ptr<net::Connection> conn;
    uint32_t peer = 0;
    std::shared_ptr<const ExpectedTensor> expected;
    Deadline deadline;
  };
  Arrival Read(const Due& due);
  void Wake();  // mu_ held

  std::vector<Due> due_;  // caller's thread only
  int wake_fd_ = -1;      // eventfd: a report for a caller polling (-1: Take polls in 5 ms slices)
  std::mutex mu_;
  std::condition_variable cv_;
  bool polling_ = false;
  std::deque<Arrival> arrivals_;
  std::vector<bool> sent_to_;  // by rank: true unless a send to it is still outstanding
  uint32_t sends_wanted_ = 0, sends_done_ = 0;
  bool awaiting_sends_ = false;
};

// Sends `frame` + `tail` to `to` on `conn`, reporting to `box` (SendDone, or an Arrival with
// `sending`). `keep` is held until the send completed (the tail's owner, if not the caller).
void SendTensorTo(const std::shared_ptr<ArrivalBox>& box, net::Connection& conn, uint32_t to,
                  std::shared_ptr<const std::string> frame, std::span<const std::byte> tail,
                  std::shared_ptr<const void> keep = nullptr);

// What an Arrival that is not a message says: a relayed abort (blaming the rank it names,
// reported by its sender) or a failed send or receive (blaming that peer). Sets *failure and
// returns the error; Ok for a message that arrived (its content is the caller's to check).
Status ArrivalFailure(const Mesh& mesh, const Arrival& a, std::optional<PeerFailure>* failure);

// The encoded frame that precedes a payload of `nbytes`: TensorHeader{tag, DTYPE_F32, numel,
// offset = sender, nbytes}.
Result<std::shared_ptr<const std::string>> TensorFrame(const std::string& job_id,
                                                       const std::string& tag, uint64_t numel,
                                                       uint32_t sender, uint64_t nbytes);

// Waits, handing every Arrival to `handle` (evidence order, see HandleArrivals), until
// have_all() is true and, when `need_sends`, every send finished. Ends with Aborted once
// control->cancelled() (polled every kCollectiveCancelPoll) is true, and with timed_out() at
// `deadline`.
template <typename HaveAll, typename Handle, typename TimedOut>
Status AwaitArrivals(ArrivalBox& box, Deadline deadline, const FormControl* control, bool need_sends,
                     HaveAll have_all, Handle handle, TimedOut timed_out) {
  const bool polling = control && control->cancelled;
  auto take = [&](Deadline until) {
    bool ignored = false;
    return box.Take(until, false, &ignored);
  };
  for (;;) {
    if (have_all() && (!need_sends || box.AllSent())) return Status::Ok();
    const Deadline until =
        polling ? std::min(deadline, DeadlineAfter(kCollectiveCancelPoll)) : deadline;
    bool all_sent = false;
    std::deque<Arrival> arrivals = box.Take(until, need_sends && have_all(), &all_sent);
    TRIB_RETURN_IF_ERROR(HandleArrivals(arrivals, deadline, take, handle));
    if (have_all() && (!need_sends || all_sent)) return Status::Ok();
    if (polling && control->IsCancelled()) {
      return Aborted(kCollectiveSuperseded);
    }
    if (arrivals.empty() && Clock::now() >= deadline) return timed_out();
  }
}

// Ends a failed call: a superseded attempt (control->cancelled()) becomes Aborted and blames
// nobody (a member that learnt it first may have given up on us before we polled it ourselves);
// then the mesh is aborted with whom we blame. Returns the status to report.
Status AbortFailedCall(Mesh& mesh, Status st, std::optional<PeerFailure> blamed,
                       const FormControl* control);

}  // namespace tributary::collectives
