#include "collectives/gloo/gloo_communicator.h"

#include <gloo/allreduce_ring_chunked.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "collectives/codec/codec.h"
#include "collectives/gloo/gloo_rendezvous.h"

namespace tributary::collectives {
struct GlooCommunicator::Impl {
  std::shared_ptr<gloo::rendezvous::Context> context;
  // The algorithm is bound to a buffer at construction; one per size, values copied through.
  std::vector<float> buffer;
  std::unique_ptr<gloo::AllreduceRingChunked<float>> allreduce;
  uint64_t bytes_per_call = 0;
};

GlooCommunicator::GlooCommunicator(std::unique_ptr<Impl> impl, uint32_t rank, uint32_t world)
    : impl_(std::move(impl)), rank_(rank), world_(world) {}
GlooCommunicator::~GlooCommunicator() = default;

Result<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Connect(const Options& options) {
  auto impl = std::make_unique<Impl>();
  TRIB_ASSIGN_OR_RETURN(impl->context,
                        ConnectGloo({.rank = options.rank, .world = options.world, .host = options.host,
                                     .store_dir = options.store_dir, .prefix = options.prefix,
                                     .timeout = options.timeout}));
  return std::unique_ptr<GlooCommunicator>(
      new GlooCommunicator(std::move(impl), options.rank, options.world));
}

Result<CollectiveStats> GlooCommunicator::Allreduce(std::span<float> data,
                                                    const CollectiveOptions& options) {
  last_stats_ = {};
  TRIB_ASSIGN_OR_RETURN(auto codec, codec::MakeCodec(options.codec));
  if (codec->name() != "fp32" || options.aggregator.kind != robust::AggregatorKind::kMean) {
    return InvalidArgument("the Gloo backend runs fp32 with the mean only, not codec '" +
                           codec->name() + "' with aggregator '" +
                           robust::ToString(options.aggregator) + "' (use ButterflyCommunicator)");
  }
  if (broken_) return FailedPrecondition("gloo: the group broke in an earlier collective; reconnect");
  const Clock::time_point start = Clock::now();
  if (world_ == 1 || data.empty()) {
    last_stats_.seconds = SecondsSince(start);
    return last_stats_;
  }
  for (size_t i = 0; i < data.size(); ++i) {
    // Gloo would sum a NaN/Inf silently; our contract rejects it before it spreads.
    if (!std::isfinite(data[i])) {
      return InvalidArgument("gloo all-reduce '" + options.tag + "': our own input element " +
                             std::to_string(i) + " is not finite");
    }
  }
  Impl& g = *impl_;
  Status st = GlooCall("all-reduce '" + options.tag + "'", [&] {
    if (!g.allreduce || g.buffer.size() != data.size()) {
      g.buffer.assign(data.size(), 0.0f);
      g.allreduce = std::make_unique<gloo::AllreduceRingChunked<float>>(
          g.context, std::vector<float*>{g.buffer.data()}, static_cast<int>(data.size()));
    }
    std::memcpy(g.buffer.data(), data.data(), data.size_bytes());
    g.allreduce->run();
  });
  last_stats_.seconds = SecondsSince(start);
  if (!st.ok()) {
    broken_ = true;  // `data` untouched: the reduction ran in g.buffer (exact retry)
    return st.WithContext("rank " + std::to_string(rank_) + " of " + std::to_string(world_));
  }
  const float scale = options.average ? 1.0f / static_cast<float>(world_) : 1.0f;
  for (size_t i = 0; i < data.size(); ++i) data[i] = g.buffer[i] * scale;
  // Ring reduce-scatter + all-gather: each rank sends and receives 2(N-1)/N of the tensor.
  last_stats_.bytes_sent = 2 * (world_ - 1) * data.size_bytes() / world_;
  last_stats_.bytes_received = last_stats_.bytes_sent;
  return last_stats_;
}

}  // namespace tributary::collectives
