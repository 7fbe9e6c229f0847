#include "collectives/parallel_ring.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "collectives/codec/codec.h"
#include "net/frame.h"
#include "proto/tributary.pb.h"

namespace tributary::collectives {

Result<std::unique_ptr<ParallelRing>> ParallelRing::Form(
    net::IoThread& io, net::Listener& listener, uint32_t my_rank,
    const std::vector<RingMember>& members, const std::string& job_id, uint64_t round,
    uint32_t attempt, const net::Identity* identity, Deadline deadline, uint32_t streams,
    FormControl* control) {
  if (streams < 1 || streams > kMaxStreams) {
    return InvalidArgument("streams per ring edge must be 1.." + std::to_string(kMaxStreams) +
                           ", got " + std::to_string(streams));
  }
  if (attempt >> kStreamShift) {
    return InvalidArgument("attempt " + std::to_string(attempt) + " too large for parallel streams");
  }
  std::unique_ptr<ParallelRing> set(new ParallelRing);
  for (uint32_t k = 0; k < streams; ++k) {
    // Sequential formation is safe on one listener: a rank accepts only until its prev's hello
    // of stream k arrives, so stream k+1's hello waits in the backlog for the next Form.
    auto ring = Ring::Form(io, listener, my_rank, members, job_id, round,
                           attempt | (k << kStreamShift), identity, deadline, control);
    if (!ring.ok()) {
      set->Abort();
      return ring.status().WithContext("stream " + std::to_string(k) + " of " + std::to_string(streams));
    }
    set->rings_.push_back(std::move(ring).value());
  }
  return set;
}

bool ParallelRing::broken() const {
  return std::any_of(rings_.begin(), rings_.end(), [](const auto& r) { return r->broken(); });
}

uint64_t ParallelRing::bytes_sent() const {
  uint64_t total = 0;
  for (const auto& r : rings_) total += r->bytes_sent();
  return total;
}

uint64_t ParallelRing::bytes_received() const {
  uint64_t total = 0;
  for (const auto& r : rings_) total += r->bytes_received();
  return total;
}

void ParallelRing::Abort() {
  for (auto& r : rings_) r->Abort();
}

void ParallelRing::Interrupt() {
  for (auto& r : rings_) {
    if (r->world() < 2) continue;
    r->next().Close();
    r->prev().Close();
  }
}

Result<AllreduceStats> SmallRingAllreduce(Ring& ring, std::span<float> data,
                                          const AllreduceOptions& options) {
  const std::string ctx = "all-reduce '" + options.tag + "' (rank " + std::to_string(ring.rank()) +
                          " of " + std::to_string(ring.world()) + ", latency path)";
  if (ring.broken()) return FailedPrecondition(ctx + ": the ring broke earlier; form a new one");
  const Clock::time_point start = Clock::now();
  const uint64_t sent0 = ring.bytes_sent(), received0 = ring.bytes_received();
  const uint32_t n = ring.world(), me = ring.rank();
  const size_t len = data.size();
  if (n > 1 && len > 0) {
    // Slot r holds rank r's whole tensor. Step s: send slot (me - s), receive slot (me - s - 1).
    std::vector<float> all(static_cast<size_t>(n) * len);
    std::copy(data.begin(), data.end(), all.begin() + static_cast<ptrdiff_t>(me * len));
    auto slot = [&](uint32_t r) { return std::span<float>(all).subspan(r * len, len); };
    Status failed;
    for (uint32_t s = 0; s + 1 < n && failed.ok(); ++s) {
      const uint32_t out = (me + n - s) % n, in = (me + 2 * n - s - 1) % n;
      v1::Envelope env = net::MakeEnvelope(ring.job_id());
      v1::TensorHeader* h = env.mutable_tensor();
      h->set_tag(options.tag);
      h->set_dtype(v1::DTYPE_F32);
      h->set_numel(len);
      h->set_offset(out);  // whose tensor this is
      h->set_nbytes(len * sizeof(float));
      if (Status st = ring.next().QueueSend(env, std::as_bytes(slot(out))); !st.ok()) {
        failed = st.WithContext("sending to next " + ring.DescribeNext());
        break;
      }
      // The header's offset names the slot (whose rank's tensor this is).
      auto check = [&ring, &options, len, in](const v1::Envelope& got) {
        return CheckSegmentHeader(got, ring.job_id(), options.tag, len, in, len);
      };
      Status valid = ring.prev().ReceiveWithTail(check, std::as_writable_bytes(slot(in)), options.deadline);
      if (valid.ok()) {
        for (size_t i = 0; i < len; ++i) {
          if (!std::isfinite(slot(in)[i])) {
            valid = ProtocolError("element " + std::to_string(i) + " of rank " + std::to_string(in) +
                                  "'s tensor is not finite");
            break;
          }
        }
      }
      if (!valid.ok()) failed = valid.WithContext("from prev " + ring.DescribePrev());
    }
    if (failed.ok()) {
      if (Status st = ring.next().Flush(options.deadline); !st.ok()) {
        failed = st.WithContext("sending to next " + ring.DescribeNext());
      }
    }
    if (!failed.ok()) {
      ring.Abort();  // before `all` goes away: no queued send may read it afterwards
      return failed.WithContext(ctx);
    }
    // Rank order on every rank: the same bits everywhere.
    for (size_t i = 0; i < len; ++i) {
      float sum = 0;
      for (uint32_t r = 0; r < n; ++r) sum += all[r * len + i];
      if (!std::isfinite(sum)) {
        return InvalidArgument(ctx + ": sum at element " + std::to_string(i) +
                               " is not finite (overflow, or our own input is not finite)");
      }
      data[i] = options.average ? sum / static_cast<float>(n) : sum;
    }
  }
  return AllreduceStats{ring.bytes_sent() - sent0, ring.bytes_received() - received0,
                        SecondsSince(start)};
}

Result<AllreduceStats> ParallelRingAllreduce(ParallelRing& rings, std::span<float> data,
                                             const AllreduceOptions& options,
                                             size_t latency_bytes) {
  if (data.size_bytes() <= latency_bytes) return SmallRingAllreduce(rings.ring(0), data, options);
  const uint32_t k_streams = rings.streams();
  if (k_streams == 1) return RingAllreduce(rings.ring(0), data, options);
  const Clock::time_point start = Clock::now();
  const uint64_t sent0 = rings.bytes_sent(), received0 = rings.bytes_received();
  std::vector<Status> status(k_streams);
  auto run = [&](uint32_t k) {
    auto [begin, size] = ParallelPart(data.size(), k_streams, k);
    AllreduceOptions o = options;
    o.tag = options.tag + "/s" + std::to_string(k);
    // Every rank runs every part (empty ones included), so the rings stay in step.
    auto r = RingAllreduce(rings.ring(k), data.subspan(begin, size), o);
    if (!r.ok()) status[k] = r.status().WithContext("stream " + std::to_string(k));
  };
  // A part that fails aborts its own ring, so its neighbours fail too; the other parts still
  // complete on every rank (they share no connection with it), so joining cannot hang.
  std::vector<std::thread> threads;
  for (uint32_t k = 1; k < k_streams; ++k) threads.emplace_back(run, k);
  run(0);
  for (auto& t : threads) t.join();
  for (const Status& s : status) {
    if (!s.ok()) {
      rings.Abort();
      return s;
    }
  }
  return AllreduceStats{rings.bytes_sent() - sent0, rings.bytes_received() - received0,
                        SecondsSince(start)};
}

ParallelRingCommunicator::ParallelRingCommunicator(std::unique_ptr<ParallelRing> rings,
                                                   size_t segment_bytes)
    : rings_(std::move(rings)), segment_bytes_(segment_bytes) {}

Result<CollectiveStats> ParallelRingCommunicator::Allreduce(std::span<float> data,
                                                            const CollectiveOptions& options) {
  last_stats_ = {};
  TRIB_ASSIGN_OR_RETURN(auto codec, codec::MakeCodec(options.codec));
  if (codec->name() != "fp32" || options.aggregator.kind != robust::AggregatorKind::kMean) {
    return InvalidArgument("the parallel ring runs fp32 with the mean only, not codec '" +
                           codec->name() + "' with aggregator '" +
                           robust::ToString(options.aggregator) + "' (use ButterflyCommunicator)");
  }
  // Exact retry. The buffer is kept between calls: a DDP job calls this every step, and a fresh
  // allocation of the model's size would page-fault in each time (as RingCommunicator's backup_).
  backup_.assign(data.begin(), data.end());
  auto result = ParallelRingAllreduce(*rings_, data,
                                      {.tag = options.tag,
                                       .deadline = options.deadline,
                                       .segment_bytes = segment_bytes_,
                                       .average = options.average});
  if (!result.ok()) {
    std::copy(backup_.begin(), backup_.end(), data.begin());
    // Blame as the ring does: the neighbour whose connection an error names.
    const std::string& message = result.status().message();
    Ring& ring = rings_->ring(0);
    if (ring.world() > 1) {
      for (const RingMember* m : {&ring.prev_member(), &ring.next_member()}) {
        if (message.find("'" + m->name + "'") != std::string::npos) {
          last_stats_.failed_peer = PeerFailure{m->rank, m->name, std::nullopt};
          break;
        }
      }
    }
    return result.status();
  }
  last_stats_.bytes_sent = result->bytes_sent;
  last_stats_.bytes_received = result->bytes_received;
  last_stats_.seconds = result->seconds;
  return last_stats_;
}

}  // namespace tributary::collectives
