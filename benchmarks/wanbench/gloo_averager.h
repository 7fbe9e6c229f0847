// The Averager (runtime/trainer.h) that users have today: Gloo's AllreduceRing<float> over
// Gloo's TCP transport, bound to one address, with FileStore rendezvous in a directory every
// rank can see (the emulator's namespaces share the filesystem). Gloo headers stay in the .cc.
//
// AllreduceRing passes the whole buffer around the ring world − 1 times, and each rank sums in
// its own order, so ranks can end with different last bits (docs/BENCHMARKS.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/digest.h"
#include "core/status.h"

namespace tributary::wanbench {

class GlooGroup {
 public:
  struct Options {
    int rank = 0;
    int world = 1;
    std::string host;       // this rank's address (its namespace's)
    std::string store_dir;  // FileStore directory, shared by all ranks
    std::chrono::seconds timeout{300};
  };
  static Result<std::unique_ptr<GlooGroup>> Connect(const Options& options);
  ~GlooGroup();

  // Sum over ranks with AllreduceRing<float>, then divide by world: values become the average.
  Status Average(std::span<float> values);
  Status Barrier();
  // True when every rank passed the same digest.
  Result<bool> SameOnAllRanks(const Digest& digest);
  // Payload bytes this rank has sent in Average: (world − 1) × the buffer per call.
  uint64_t bytes_sent() const;

 private:
  struct Impl;
  explicit GlooGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::wanbench
