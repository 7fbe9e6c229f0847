// GlooCommunicator: the Communicator interface over Gloo (CPU, TCP transport) for a trusted
// inner level, e.g. the machines of one LAN. Gloo headers stay in the .cc.
//
// Trust: Gloo's transport is unauthenticated and unencrypted and its peers are trusted to send
// well-formed data (no NaN/Inf check, no per-peer blame); use it only where every member is
// yours. fp32 sum/mean only (like RingCommunicator), via Gloo's bandwidth-optimal
// AllreduceRingChunked, whose chunks are each reduced once and then broadcast, so every rank
// ends with the same bits.
//
// Rendezvous is Gloo's FileStore: a directory all ranks see (a shared filesystem), one
// `prefix` per group so groups can share it. Failure contract as in communicator.h: a failed
// call (Gloo timeout, a peer gone) leaves `data` as passed in, marks the communicator broken,
// and its status carries what Gloo reported (the peer's address, when Gloo names it: Gloo
// does not say which rank failed); reconnect a group of the survivors with a new prefix.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "collectives/communicator.h"

namespace tributary::collectives {

class GlooCommunicator final : public Communicator {
 public:
  struct Options {
    uint32_t rank = 0;
    uint32_t world = 1;
    std::string host = "127.0.0.1";  // the address this rank's Gloo device binds
    std::string store_dir;           // FileStore directory shared by all ranks
    std::string prefix = "group";    // keys of this group inside store_dir
    // Bounds connecting and every wait inside a collective. Gloo fixes it per connection when
    // the group connects, so CollectiveOptions::deadline cannot shorten it later.
    std::chrono::milliseconds timeout{30000};
  };
  // Blocking until every rank has connected (or the timeout).
  static Result<std::unique_ptr<GlooCommunicator>> Connect(const Options& options);
  ~GlooCommunicator() override;

  Result<CollectiveStats> Allreduce(std::span<float> data, const CollectiveOptions& options) override;
  std::string_view algorithm() const override { return "gloo"; }
  uint32_t rank() const override { return rank_; }
  uint32_t world() const override { return world_; }
  bool broken() const override { return broken_; }
  // Gloo cannot cancel a running collective (gloo::Context::closeConnections does not wake a
  // blocked receive: tried), so a blocked call ends at the Gloo timeout given to Connect. Fine
  // for its use, a trusted LAN level whose members do not freeze silently.
  void Interrupt() override {}

 private:
  struct Impl;
  GlooCommunicator(std::unique_ptr<Impl> impl, uint32_t rank, uint32_t world);
  std::unique_ptr<Impl> impl_;
  uint32_t rank_, world_;
  bool broken_ = false;
};

}  // namespace tributary::collectives
