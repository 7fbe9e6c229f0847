#include "collectives/communicator.h"

#include <algorithm>
#include <vector>

#include "collectives/allreduce.h"

namespace tributary::collectives {

RingCommunicator::RingCommunicator(std::unique_ptr<Ring> ring, size_t segment_bytes)
    : ring_(std::move(ring)), segment_bytes_(segment_bytes) {}

Result<CollectiveStats> RingCommunicator::Allreduce(std::span<float> data,
                                                    const CollectiveOptions& options) {
  last_stats_ = {};
  TRIB_ASSIGN_OR_RETURN(auto codec, codec::MakeCodec(options.codec));
  if (codec->name() != "fp32" || options.aggregator.kind != robust::AggregatorKind::kMean) {
    return InvalidArgument(
        "the ring all-reduce runs fp32 with the mean only, not codec '" + codec->name() +
        "' with aggregator '" + robust::ToString(options.aggregator) +
        "': no ring member ever holds another's whole contribution, so compressed or robust "
        "all-reduce needs ButterflyCommunicator");
  }
  if (options.binding) {
    return InvalidArgument("the ring cannot bind contributions (no member sees another's raw "
                           "contribution): a bound all-reduce needs ButterflyCommunicator");
  }
  // RingAllreduce reduces in place; its backup (kept between calls, so large calls do not
  // page-fault a fresh buffer in) makes the exact-retry promise hold.
  backup_.resize(std::max(backup_.size(), data.size()));
  const Clock::time_point start = Clock::now();
  const uint64_t sent_before = ring_->bytes_sent();
  const uint64_t received_before = ring_->bytes_received();
  auto result = RingAllreduce(*ring_, data,
                              {.tag = options.tag,
                               .deadline = options.deadline,
                               .segment_bytes = segment_bytes_,
                               .average = options.average,
                               .backup = std::span(backup_).first(data.size())});
  last_stats_.bytes_sent = ring_->bytes_sent() - sent_before;
  last_stats_.bytes_received = ring_->bytes_received() - received_before;
  last_stats_.seconds = SecondsSince(start);
  if (!result.ok()) {
    last_stats_.failed_peer = RingAllreduceBlame(*ring_, result.status());
    return result.status();
  }
  return last_stats_;
}

ButterflyCommunicator::ButterflyCommunicator(std::unique_ptr<Mesh> mesh, int aggregate_threads)
    : mesh_(std::move(mesh)), aggregate_threads_(aggregate_threads) {}

const CodecState* ButterflyCommunicator::codec_state(const std::string& stream) const {
  return codec_streams_.Find(stream);
}

ButterflyOptions ButterflyOptionsFor(const CollectiveOptions& options, CodecState* state, int aggregate_threads,
                                     ShardRecord* record) {
  return {.tag = options.tag,
          .deadline = options.deadline,
          .codec = options.codec,
          .aggregator = options.aggregator,
          .average = options.average,
          .codec_state = state,
          .aggregate_threads = aggregate_threads,
          .record = record,
          .binding = options.binding};
}

Result<CollectiveStats> ButterflyCommunicator::Allreduce(std::span<float> data,
                                                         const CollectiveOptions& options) {
  last_stats_ = {};
  TRIB_ASSIGN_OR_RETURN(CodecState * state, codec_streams_.For(options.stream, options.codec));
  const bool was_broken = mesh_->broken();
  const Clock::time_point start = Clock::now();
  const uint64_t sent_before = mesh_->bytes_sent();
  const uint64_t received_before = mesh_->bytes_received();
  auto result = ButterflyAllreduce(*mesh_, data, ButterflyOptionsFor(options, state, aggregate_threads_, record_));
  last_stats_.bytes_sent = mesh_->bytes_sent() - sent_before;
  last_stats_.bytes_received = mesh_->bytes_received() - received_before;
  last_stats_.seconds = SecondsSince(start);
  if (!result.ok()) {
    if (!was_broken) last_stats_.failed_peer = mesh_->failure();
    return result.status();
  }
  return last_stats_;
}

}  // namespace tributary::collectives
