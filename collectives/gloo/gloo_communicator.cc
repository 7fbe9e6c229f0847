#include "collectives/gloo/gloo_communicator.h"

#include <gloo/allreduce_ring_chunked.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "collectives/codec/codec.h"

namespace tributary::collectives {
namespace {

// Gloo throws; nothing it throws may leave this file.
template <typename F>
Status GlooCall(const std::string& what, F&& f) {
  try {
    f();
    return Status::Ok();
  } catch (const std::exception& e) {
    return Unavailable("gloo " + what + ": " + e.what());
  }
}

}  // namespace

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
  if (options.world < 1 || options.rank >= options.world) {
    return InvalidArgument("gloo: rank " + std::to_string(options.rank) + " of world " +
                           std::to_string(options.world));
  }
  if (options.store_dir.empty()) return InvalidArgument("gloo: no rendezvous directory");
  auto impl = std::make_unique<Impl>();
  TRIB_RETURN_IF_ERROR(GlooCall("connect (rank " + std::to_string(options.rank) + ")", [&] {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.host;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore files(options.store_dir);
    gloo::rendezvous::PrefixStore store(options.prefix, files);
    impl->context = std::make_shared<gloo::rendezvous::Context>(static_cast<int>(options.rank),
                                                                static_cast<int>(options.world));
    impl->context->setTimeout(options.timeout);
    impl->context->connectFullMesh(store, device);
  }));
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
