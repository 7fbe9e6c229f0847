// MeshCommunicator: one Mesh, every all-reduce algorithm, the path chosen per call.
//
//   tensor ≤ direct_max_bytes()    DirectAllreduce (direct_allreduce.h): 0.5 RTT, any codec and
//                                  aggregator (no binding).
//   fp32 + mean, ≤ doubling_max    DoublingAllreduce (doubling_allreduce.h): log2(N) exchanges
//     _bytes() (power-of-two N≥4)  of the whole partial sum.
//   fp32 + mean above that         RingAllreduce over the mesh's ring edges (rank r sends to
//                                  r+1 on the mesh connection between them): bandwidth-optimal.
//   otherwise, or with a binding   ButterflyAllreduce (robust aggregation, codecs, binding).
// The thresholds and the ring's segment size come from path_choice.h's model over the group's
// link estimate; every member must be built with the same Options (from the link matrix the
// coordinator shares), so every member takes the same path. A disagreement fails at once: each
// path has its own wire tag.
//
// Failure contract as Communicator's: a failed call names the peer it blames (last_stats()),
// aborts the mesh so the others fail fast, and leaves `data` and the codec states as they were
// (exact retry after ReplaceMesh with a mesh of the survivors). With CollectiveOptions::control,
// a superseded attempt ends the call with Aborted on every path; Interrupt() ends it with
// Unavailable. Used by one thread at a time (Interrupt excepted).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "collectives/codec_state.h"
#include "collectives/communicator.h"
#include "collectives/mesh.h"
#include "collectives/path_choice.h"
#include "collectives/ring.h"

namespace tributary::collectives {

struct MeshCommunicatorOptions {
  // The group's measured link (GroupLink of the shared matrix); none: not measured, and the
  // thresholds are path_choice.h's unmeasured ones.
  std::optional<LinkEstimate> link;
  std::optional<size_t> direct_max_bytes;  // overrides the model's threshold
  std::optional<size_t> doubling_max_bytes;  // overrides the model's (0: never doubling)
  size_t segment_bytes = 0;                // the ring's; 0: RingSegmentBytes(link)
  int aggregate_threads = 1;               // robust aggregation; never changes the result
};

class MeshCommunicator final : public Communicator {
 public:
  using Options = MeshCommunicatorOptions;
  enum class Path { kDirect, kDoubling, kRing, kButterfly };

  explicit MeshCommunicator(std::unique_ptr<Mesh> mesh, Options options = {});

  Result<CollectiveStats> Allreduce(std::span<float> data,
                                    const CollectiveOptions& options) override;

  std::string_view algorithm() const override { return "mesh"; }
  uint32_t rank() const override { return mesh_->rank(); }
  uint32_t world() const override { return mesh_->world(); }
  bool broken() const override { return mesh_->broken() || (ring_ && ring_->broken()); }
  void Interrupt() override { mesh_->Interrupt(); }

  Mesh& mesh() { return *mesh_; }
  // After a failure: continue on a mesh of the survivors (codec states are kept).
  void ReplaceMesh(std::unique_ptr<Mesh> mesh);
  // New link estimates (every member at the same call); the next call uses them.
  void set_link(const LinkEstimate& link) { options_.link = link; }

  // The path a call of `bytes` with `options` takes in the current group.
  Path PathFor(size_t bytes, const CollectiveOptions& options) const;
  size_t direct_max_bytes() const;
  // 0 unless the world is a power of two, at least 4.
  size_t doubling_max_bytes() const;
  size_t segment_bytes() const;
  // The path of the last call (also when it failed).
  Path last_path() const { return last_path_; }
  const CodecState* codec_state(const std::string& stream) const;

 private:
  Ring& RingView();
  Status RunRing(std::span<float> data, const CollectiveOptions& options);

  std::unique_ptr<Mesh> mesh_;
  Options options_;
  std::unique_ptr<Ring> ring_;  // over mesh_'s connections; built on first use
  std::vector<float> backup_;   // the ring path's copy of `data` (exact retry)
  CodecStreams codec_streams_;
  Path last_path_ = Path::kDirect;
};

std::string_view PathName(MeshCommunicator::Path path);

}  // namespace tributary::collectives
