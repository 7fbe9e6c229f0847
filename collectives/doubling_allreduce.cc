#include "collectives/doubling_allreduce.h"

#include <algorithm>
#include <array>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "collectives/codec/codec.h"
#include "collectives/float_loops.h"
#include "collectives/tensor_exchange.h"

namespace tributary::collectives {
namespace {

using codec::FirstNonFinite;
using codec::ValueName;

// One call on one rank.
class DoublingOp {
 public:
  DoublingOp(Mesh& mesh, std::span<float> data, const DoublingOptions& options, std::string tag)
      : mesh_(mesh), data_(data), options_(options), tag_(std::move(tag)), have_(mesh.world(), false) {
    for (uint32_t bit = 1; bit < world(); bit <<= 1) partners_.push_back(me() ^ bit);
  }

  Status Run() {
    max_abs_[me()] = MaxAbsBits(data_);
    if (max_abs_[me()] >= kNonFiniteBits) {
      const size_t i = FirstNonFinite(data_);
      return InvalidArgument("our own input element " + std::to_string(i) + " is " +
                             ValueName(data_[i]));
    }
    StartReceives();
    // The partial sum we hold: `data_` itself, then the receive buffer of the last partner (the
    // sum is formed in place there, so nothing we have sent is ever overwritten).
    const float* current = data_.data();
    for (size_t k = 0; k < partners_.size(); ++k) {
      const uint32_t partner = partners_[k];
      const bool last = k + 1 == partners_.size();
      TRIB_RETURN_IF_ERROR(Send(partner, current));
      // The last step also waits for every send: the step-0 send reads `data_`, which the
      // result overwrites.
      TRIB_RETURN_IF_ERROR(AwaitArrivals(
          *box_, StepDeadline(k), options_.control, /*need_sends=*/last,
          [&] { return have_[partner]; }, [&](const Arrival& a) { return OnArrival(a); },
          [&] { return TimedOut(); }));
      float* theirs = box_->floats[partner].get();
      if (last) return Finish(current, partner);
      if (AddChecked({theirs, n()}, {current, n()}) & 2u) {
        return Overflow(FirstNonFinite(std::span<const float>(theirs, n())));
      }
      current = theirs;
    }
    return Status::Ok();  // world 1
  }

  const std::optional<PeerFailure>& failure() const { return failure_; }

 private:
  uint32_t me() const { return mesh_.rank(); }
  uint32_t world() const { return mesh_.world(); }
  size_t n() const { return data_.size(); }

  // A silent member is timed out by its partners, and the members further along (waiting on a
  // partner that waits on it) must hear that from them rather than blame the partner: so the
  // wait in step k ends (steps - 1 - k) grace periods before the deadline, a grace being
  // kRelayedAbortGrace or, for a short call, a fraction of it.
  Deadline StepDeadline(size_t k) const {
    const size_t later = partners_.size() - 1 - k;
    if (later == 0) return options_.deadline;
    const Clock::duration grace = std::min<Clock::duration>(
        kRelayedAbortGrace, (options_.deadline - start_) / (2 * partners_.size()));
    return options_.deadline - static_cast<Clock::duration::rep>(later) * grace;
  }

  void StartReceives() {
    box_->ExpectSendsTo(world(), partners_);
    auto expected = std::make_shared<ExpectedTensor>();
    expected->job_id = mesh_.job_id();
    expected->tag = tag_;
    expected->numel = n();
    expected->exact = true;
    expected->max_bytes = data_.size_bytes();
    box_->floats.resize(world());
    for (uint32_t p : partners_) {
      box_->floats[p].reset(new float[n()]);
      box_->ExpectMessage(mesh_.peer(p), p, expected, options_.deadline);
    }
  }

  // `sum` stays unchanged until the send finished: it is `data_` or a partner's buffer that no
  // later step writes.
  Status Send(uint32_t to, const float* sum) {
    const auto tail = std::as_bytes(std::span(sum, n()));
    TRIB_ASSIGN_OR_RETURN(auto frame, TensorFrame(mesh_.job_id(), tag_, n(), me(), tail.size()));
    SendTensorTo(box_, *mesh_.peer(to), to, std::move(frame), tail);
    return Status::Ok();
  }

  Status OnArrival(const Arrival& a) {
    TRIB_RETURN_IF_ERROR(ArrivalFailure(mesh_, a, &failure_));
    const std::span<const float> v(box_->floats[a.peer].get(), n());
    max_abs_[a.peer] = MaxAbsBits(v);
    if (max_abs_[a.peer] >= kNonFiniteBits) {
      const size_t i = FirstNonFinite(v);
      return Blame(a.peer, InvalidArgument("non-finite value " + ValueName(v[i]) + " at element " +
                                           std::to_string(i) + " from " + mesh_.Describe(a.peer)));
    }
    have_[a.peer] = true;
    return Status::Ok();
  }

  // data_ = (current + theirs) [÷ world], `data_` untouched on an overflow.
  Status Finish(const float* current, uint32_t partner) {
    float* theirs = box_->floats[partner].get();
    const uint32_t ours_max = current == data_.data() ? max_abs_[me()] : MaxAbsBits({current, n()});
    const std::array<const float*, 2> inputs{current, theirs};
    const std::array<uint32_t, 2> max_abs{ours_max, max_abs_[partner]};
    const float divisor = options_.average ? static_cast<float>(world()) : 1.0f;
    if (auto i = SumUnlessOverflow(inputs, max_abs, data_, theirs, divisor)) return Overflow(*i);
    return Status::Ok();
  }

  Status Overflow(size_t element) {
    return InvalidArgument("the sum at element " + std::to_string(element) + " overflows float");
  }

  // Names the partner we still wait for; with every partial sum in, the first partner that did
  // not take ours.
  Status TimedOut() {
    for (uint32_t p : partners_) {
      if (!have_[p]) {
        return Blame(p, DeadlineExceeded("still waiting at the deadline for the partial sum of " +
                                         mesh_.Describe(p)));
      }
    }
    const uint32_t unsent = box_->FirstUnsent().value_or(me());
    return Blame(unsent, DeadlineExceeded("our partial sum was not written to " +
                                          mesh_.Describe(unsent) + " by the deadline"));
  }

  Status Blame(uint32_t peer, const Status& why) {
    failure_ = mesh_.FailureOf(peer);
    return why;
  }

  Mesh& mesh_;
  std::span<float> data_;
  const DoublingOptions& options_;
  const std::string tag_;
  std::vector<uint32_t> partners_;  // by step: me ^ 2^k
  std::shared_ptr<ArrivalBox> box_ = std::make_shared<ArrivalBox>();
  std::vector<bool> have_;
  std::vector<uint32_t> max_abs_ = std::vector<uint32_t>(mesh_.world(), 0);  // by rank
  std::optional<PeerFailure> failure_;
  const Clock::time_point start_ = Clock::now();
};

}  // namespace

std::string DoublingWireTag(const std::string& tag, bool average) {
  return tag + "/doubling/" + (average ? "mean" : "sum");
}

Result<CollectiveStats> DoublingAllreduce(Mesh& mesh, std::span<float> data,
                                          const DoublingOptions& options) {
  MeshCall call(mesh, "recursive-doubling", options.tag);
  TRIB_RETURN_IF_ERROR(call.CheckUsable());
  if (!std::has_single_bit(mesh.world())) {
    return InvalidArgument(call.context() + ": needs a power-of-two group");
  }
  if (data.empty() || mesh.world() == 1) return CollectiveStats{};
  call.Start();
  DoublingOp op(mesh, data, options, DoublingWireTag(options.tag, options.average));
  Status st = op.Run();
  if (!st.ok()) {
    // Before `op` goes away: afterwards no queued send reads `data` or op's buffers.
    return AbortFailedCall(mesh, std::move(st), op.failure(), options.control).WithContext(call.context());
  }
  return call.Stats();
}

}  // namespace tributary::collectives
