#include "benchmarks/wanbench/gloo_averager.h"

#include <gloo/allgather_ring.h>
#include <gloo/allreduce_ring.h>
#include <gloo/barrier_all_to_all.h>

#include <cstring>
#include <vector>

#include "collectives/gloo/gloo_rendezvous.h"

namespace tributary::wanbench {
using collectives::GlooCall;

struct GlooGroup::Impl {
  std::shared_ptr<gloo::rendezvous::Context> context;
  std::unique_ptr<gloo::BarrierAllToAll> barrier;
  // AllreduceRing is built once for a buffer (its intended use) and run on every call: the
  // trainer's gradient tensor is a fresh allocation each step, so values are copied through.
  std::vector<float> buffer;
  std::unique_ptr<gloo::AllreduceRing<float>> ring;
  uint64_t bytes_sent = 0;
};

GlooGroup::GlooGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GlooGroup::~GlooGroup() = default;

Result<std::unique_ptr<GlooGroup>> GlooGroup::Connect(const Options& options) {
  auto impl = std::make_unique<Impl>();
  TRIB_ASSIGN_OR_RETURN(
      impl->context,
      collectives::ConnectGloo({.rank = static_cast<uint32_t>(options.rank),
                                .world = static_cast<uint32_t>(options.world),
                                .host = options.host,
                                .store_dir = options.store_dir,
                                .timeout = std::chrono::duration_cast<std::chrono::milliseconds>(options.timeout)}));
  TRIB_RETURN_IF_ERROR(GlooCall("barrier setup", [&] {
    impl->barrier = std::make_unique<gloo::BarrierAllToAll>(impl->context);
  }));
  return std::unique_ptr<GlooGroup>(new GlooGroup(std::move(impl)));
}

Status GlooGroup::Average(std::span<float> values) {
  Impl& g = *impl_;
  if (!g.ring || g.buffer.size() != values.size()) {
    g.buffer.assign(values.size(), 0.0f);
    TRIB_RETURN_IF_ERROR(GlooCall("all-reduce setup", [&] {
      g.ring = std::make_unique<gloo::AllreduceRing<float>>(
          g.context, std::vector<float*>{g.buffer.data()}, static_cast<int>(g.buffer.size()));
    }));
  }
  std::memcpy(g.buffer.data(), values.data(), values.size_bytes());
  TRIB_RETURN_IF_ERROR(GlooCall("all-reduce", [&] { g.ring->run(); }));
  const float scale = 1.0f / static_cast<float>(g.context->size);
  for (size_t i = 0; i < values.size(); ++i) values[i] = g.buffer[i] * scale;
  g.bytes_sent += static_cast<uint64_t>(g.context->size - 1) * values.size_bytes();
  return Status::Ok();
}

Status GlooGroup::Barrier() {
  return GlooCall("barrier", [&] { impl_->barrier->run(); });
}

Result<bool> GlooGroup::SameOnAllRanks(const Digest& digest) {
  std::vector<uint8_t> mine(digest.begin(), digest.end());
  std::vector<uint8_t> all(mine.size() * static_cast<size_t>(impl_->context->size));
  TRIB_RETURN_IF_ERROR(GlooCall("allgather", [&] {
    gloo::AllgatherRing<uint8_t> algo(impl_->context, std::vector<const uint8_t*>{mine.data()}, all.data(),
                                      static_cast<int>(mine.size()));
    algo.run();
  }));
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i] != mine[i % mine.size()]) return false;
  }
  return true;
}

uint64_t GlooGroup::bytes_sent() const { return impl_->bytes_sent; }

}  // namespace tributary::wanbench
