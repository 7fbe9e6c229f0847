#include "collectives/allreduce.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "collectives/codec/codec.h"
#include "collectives/float_loops.h"
#include "net/frame.h"

namespace tributary::collectives {
namespace {

constexpr uint64_t kNoSeq = std::numeric_limits<uint64_t>::max();

// Chunk c covers [Begin(c), Begin(c + 1)): sizes differ by at most one element, so any numel
// works, including numel < world (some chunks are then empty and carry no segments at all).
struct Layout {
  uint64_t numel;
  uint32_t world;
  uint64_t segment_elems;

  uint64_t Begin(uint32_t c) const {
    return c * (numel / world) + std::min<uint64_t>(c, numel % world);
  }
  uint64_t Size(uint32_t c) const { return Begin(c + 1) - Begin(c); }
  uint64_t Segments(uint32_t c) const { return (Size(c) + segment_elems - 1) / segment_elems; }
  uint64_t SegmentBegin(uint32_t c, uint64_t k) const { return Begin(c) + k * segment_elems; }
  uint64_t SegmentSize(uint32_t c, uint64_t k) const {
    return std::min(segment_elems, Begin(c + 1) - SegmentBegin(c, k));
  }
  uint64_t LargestChunk() const { return numel / world + (numel % world != 0); }
};

using codec::FirstNonFinite;
using codec::ValueName;

// Copies `src` to `dst`, which is written once and read back only after a failure: where the
// CPU allows, with streaming stores that bypass the cache (no read-for-ownership, no eviction of
// the tensor the ring is working on).
void SaveStreaming(std::span<const float> src, float* dst) {
  size_t i = 0;
#if defined(__SSE2__)
  for (; i < src.size() && (reinterpret_cast<uintptr_t>(dst + i) & 15) != 0; ++i) dst[i] = src[i];
  for (; i + 4 <= src.size(); i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src.data() + i));
  _mm_sfence();
#endif
  for (; i < src.size(); ++i) dst[i] = src[i];
}

// Sends on a connection finish in queue order; counting them tells which tensor regions the
// zero-copy writes no longer read. Done() runs on the io thread, so this outlives the call.
class SendTracker {
 public:
  void Done(Status status) {
    {
      std::lock_guard lock(mu_);
      ++finished_;
      if (!status.ok() && failure_.ok()) {
        failure_ = std::move(status);
        failed_ = true;
      }
    }
    cv_.notify_all();
  }

  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  Status failure() {
    std::lock_guard lock(mu_);
    return failure_;
  }

  // Waits until send number `seq` (0-based, in queue order) has finished.
  Status WaitFinished(uint64_t seq, Deadline deadline) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_until(lock, deadline, [&] { return finished_ > seq || !failure_.ok(); })) {
      return DeadlineExceeded("queued data was not written in time");
    }
    return failure_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t finished_ = 0;
  Status failure_;
  std::atomic<bool> failed_{false};
};

// One all-reduce call. Step t (of 2 * (world - 1)) sends chunk (rank - t) and receives chunk
// (rank - t - 1) mod world: reduce-scatter while t < world - 1, all-gather after. What step t
// receives is exactly what step t + 1 sends, so each segment is forwarded right after it lands.
class RingAllreduceOp {
 public:
  RingAllreduceOp(Ring& ring, std::span<float> data, const AllreduceOptions& options)
      : ring_(ring),
        data_(data),
        options_(options),
        world_(ring.world()),
        layout_{data.size(), ring.world(),
                std::max<uint64_t>(1, options.segment_bytes / sizeof(float))},
        base_seq_(2 * (world_ - 1), kNoSeq),
        scratch_(std::min(layout_.segment_elems, layout_.LargestChunk())) {}

  Status Run() {
    const uint32_t steps = 2 * (world_ - 1);
    for (uint64_t k = 0; k < layout_.Segments(SendChunk(0)); ++k) {
      TRIB_RETURN_IF_ERROR(QueueSend(0, k));
    }
    for (uint32_t step = 0; step < steps; ++step) {
      const uint32_t chunk = RecvChunk(step);
      for (uint64_t k = 0; k < layout_.Segments(chunk); ++k) {
        TRIB_RETURN_IF_ERROR(step < world_ - 1 ? ReduceSegment(step, k) : GatherSegment(step, k));
        if (step + 1 < steps) TRIB_RETURN_IF_ERROR(QueueSend(step + 1, k));
        if (tracker_->failed()) return SendFailure(tracker_->failure());
      }
    }
    // Every send of this call is counted by the tracker; by now they have almost always left, so
    // this returns without the io-thread round trip a Flush costs.
    if (next_seq_ > 0) {
      Status flushed = tracker_->WaitFinished(next_seq_ - 1, options_.deadline);
      if (!flushed.ok()) return SendFailure(flushed);
    }
    return Status::Ok();
  }

 private:
  uint32_t SendChunk(uint32_t step) const {
    return (ring_.rank() + world_ - step % world_) % world_;
  }
  uint32_t RecvChunk(uint32_t step) const { return (SendChunk(step) + world_ - 1) % world_; }

  std::span<float> Segment(uint32_t chunk, uint64_t k) const {
    return data_.subspan(layout_.SegmentBegin(chunk, k), layout_.SegmentSize(chunk, k));
  }

  Status QueueSend(uint32_t step, uint64_t k) {
    const uint32_t chunk = SendChunk(step);
    std::span<const float> segment = Segment(chunk, k);
    v1::Envelope env = net::MakeEnvelope(ring_.job_id());
    v1::TensorHeader* h = env.mutable_tensor();
    h->set_tag(options_.tag);
    h->set_dtype(v1::DTYPE_F32);
    h->set_numel(layout_.numel);
    h->set_offset(layout_.SegmentBegin(chunk, k));
    h->set_nbytes(segment.size_bytes());
    auto frame = net::EncodeFrame(env);
    if (!frame.ok()) return frame.status();
    if (k == 0) base_seq_[step] = next_seq_;
    ++next_seq_;
    ring_.next().AsyncSend(std::make_shared<const std::string>(std::move(frame).value()),
                           std::as_bytes(segment),
                           [tracker = tracker_](Status st) { tracker->Done(std::move(st)); });
    return Status::Ok();
  }

  // Reads segment k of this step's chunk into `into` after checking its header.
  Status ReceiveSegment(uint32_t step, uint64_t k, std::span<float> into) {
    const uint64_t offset = layout_.SegmentBegin(RecvChunk(step), k);
    Status received = ring_.prev().ReceiveWithTail(
        [this, offset, count = into.size()](const v1::Envelope& header) {
          return CheckSegmentHeader(header, ring_.job_id(), options_.tag, layout_.numel, offset, count);
        },
        std::as_writable_bytes(into), options_.deadline);
    if (!received.ok()) return ReceiveFailure(received);
    return Status::Ok();
  }

  Status ReduceSegment(uint32_t step, uint64_t k) {
    std::span<float> target = Segment(RecvChunk(step), k);
    std::span<float> incoming(scratch_.data(), target.size());
    TRIB_RETURN_IF_ERROR(ReceiveSegment(step, k, incoming));
    // Every reduce-scatter step writes its region for the first time: save it (when asked) block
    // by block right before the add, so the add finds it in cache.
    uint32_t bad = 0;
    constexpr size_t kBlock = 4096;
    for (size_t b = 0; b < target.size(); b += kBlock) {
      const size_t m = std::min(kBlock, target.size() - b);
      BackUp(target.subspan(b, m));
      bad |= AddChecked(target.subspan(b, m), incoming.subspan(b, m));
    }
    if (bad & 1u) return NonFiniteFailure(incoming, target);
    if (bad & 2u) {
      const size_t i = FirstNonFinite(target);
      return InvalidArgument("sum at element " + std::to_string(Offset(target) + i) + " is " +
                             ValueName(target[i]) + " (overflow, or our own input is not finite)");
    }
    // The last reduce-scatter step completes the chunk this rank owns: average it once, here,
    // so the all-gather copies the final values and every rank ends with the same bits.
    if (options_.average && step == world_ - 2) {
      const float n = static_cast<float>(world_);
      for (float& x : target) x /= n;
    }
    return Status::Ok();
  }

  Status GatherSegment(uint32_t step, uint64_t k) {
    // This region went out in reduce-scatter step (step - world + 1) as a zero-copy send; it must
    // have left before the all-gather overwrites it. In a healthy ring it always has (the final
    // value we receive depends on it), so this wait only guards against a misbehaving peer.
    const uint64_t seq = base_seq_[step - (world_ - 1)] + k;
    Status sent = tracker_->WaitFinished(seq, options_.deadline);
    if (!sent.ok()) return SendFailure(sent);
    std::span<float> target = Segment(RecvChunk(step), k);
    // The first all-gather step brings our own chunk, the one region reduce-scatter never wrote.
    if (step == world_ - 1) BackUp(target);
    TRIB_RETURN_IF_ERROR(ReceiveSegment(step, k, target));
    if (!AllFinite(target)) return NonFiniteFailure(target, target);
    return Status::Ok();
  }

 public:
  // Puts back every region saved by BackUp (after a failure).
  void Restore() {
    for (const auto& [offset, size] : saved_) {
      std::copy_n(options_.backup.begin() + static_cast<ptrdiff_t>(offset), size,
                  data_.begin() + static_cast<ptrdiff_t>(offset));
    }
  }

 private:
  void BackUp(std::span<const float> region) {
    if (options_.backup.empty()) return;
    const uint64_t offset = Offset(region);
    SaveStreaming(region, options_.backup.data() + offset);
    if (!saved_.empty() && saved_.back().first + saved_.back().second == offset) {
      saved_.back().second += region.size();  // contiguous with the last one
    } else {
      saved_.emplace_back(offset, region.size());
    }
  }

  uint64_t Offset(std::span<const float> within_data) const {
    return static_cast<uint64_t>(within_data.data() - data_.data());
  }

  Status NonFiniteFailure(std::span<const float> incoming, std::span<const float> target) {
    const size_t i = FirstNonFinite(incoming);
    return ReceiveFailure(InvalidArgument("non-finite value " + ValueName(incoming[i]) +
                                          " at element " + std::to_string(Offset(target) + i)));
  }
  Status ReceiveFailure(const Status& st) const {
    return st.WithContext("from prev " + ring_.DescribePrev());
  }
  Status SendFailure(const Status& st) const {
    return st.WithContext("sending to next " + ring_.DescribeNext());
  }

  Ring& ring_;
  std::span<float> data_;
  const AllreduceOptions& options_;
  const uint32_t world_;
  const Layout layout_;
  std::vector<uint64_t> base_seq_;  // per step: queue number of its first send
  uint64_t next_seq_ = 0;
  std::vector<float> scratch_;
  std::vector<std::pair<uint64_t, size_t>> saved_;  // regions copied to options_.backup
  std::shared_ptr<SendTracker> tracker_ = std::make_shared<SendTracker>();
};

}  // namespace

Status CheckSegmentHeader(const v1::Envelope& env, const std::string& job_id,
                          const std::string& tag, uint64_t numel, uint64_t offset, uint64_t count) {
  TRIB_RETURN_IF_ERROR(net::CheckEnvelope(env, job_id));
  if (env.has_error()) {
    return Aborted("neighbour reported an error (" + v1::ErrorCode_Name(env.error().code()) +
                   "): " + env.error().message());
  }
  TRIB_RETURN_IF_ERROR(net::CheckTensorKind(env, tag, numel));
  const v1::TensorHeader& h = env.tensor();
  if (h.offset() != offset || h.nbytes() != count * sizeof(float)) {
    return ProtocolError("wrong segment: offset " + std::to_string(h.offset()) + " with " +
                         std::to_string(h.nbytes()) + " bytes, expected offset " +
                         std::to_string(offset) + " with " + std::to_string(count * sizeof(float)) +
                         " bytes");
  }
  return Status::Ok();
}

Result<AllreduceStats> RingAllreduce(Ring& ring, std::span<float> data,
                                     const AllreduceOptions& options) {
  const std::string ctx = "all-reduce '" + options.tag + "' (rank " + std::to_string(ring.rank()) +
                          " of " + std::to_string(ring.world()) + ")";
  if (ring.broken()) {
    return FailedPrecondition(ctx + ": the ring broke in an earlier collective; form a new one");
  }
  if (options.segment_bytes < sizeof(float)) {
    return InvalidArgument(ctx + ": segment_bytes must hold at least one float");
  }
  if (!options.backup.empty() && options.backup.size() != data.size()) {
    return InvalidArgument(ctx + ": the backup must hold exactly as many floats as the data");
  }
  const Clock::time_point start = Clock::now();
  const uint64_t sent_before = ring.bytes_sent();
  const uint64_t received_before = ring.bytes_received();
  if (ring.world() > 1 && !data.empty()) {
    RingAllreduceOp op(ring, data, options);
    Status st = op.Run();
    if (!st.ok()) {
      ring.Abort();  // before `op` and `data` go away: no queued send may read them afterwards
      op.Restore();  // after the abort: no receive writes into `data` any more
      return st.WithContext(ctx);
    }
  }
  AllreduceStats stats;
  stats.bytes_sent = ring.bytes_sent() - sent_before;
  stats.bytes_received = ring.bytes_received() - received_before;
  stats.seconds = SecondsSince(start);
  return stats;
}

std::optional<PeerFailure> RingAllreduceBlame(const Ring& ring, const Status& status) {
  if (ring.world() < 2) return std::nullopt;
  const std::string& message = status.message();
  auto failure = [](const RingMember& m) { return PeerFailure{m.rank, m.name, std::nullopt}; };
  if (message.find("from prev " + ring.DescribePrev()) != std::string::npos) {
    return failure(ring.prev_member());
  }
  if (message.find("sending to next " + ring.DescribeNext()) != std::string::npos) {
    return failure(ring.next_member());
  }
  return std::nullopt;
}

}  // namespace tributary::collectives
