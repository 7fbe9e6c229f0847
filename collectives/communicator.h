// Communicator: one interface over the all-reduce algorithms, so the trainer does not care
// whether its group is a trusted ring or an untrusted butterfly.
//
//   RingCommunicator       Ring + RingAllreduce: pipelined, bandwidth-optimal, fp32 sum/mean
//                          only (no rank ever sees another's whole contribution, so it can
//                          neither decode per-peer payloads nor aggregate robustly).
//   ButterflyCommunicator  Mesh + ButterflyAllreduce: any codec, any robust aggregator; owns
//                          one CodecState per stream (CollectiveOptions::stream) so that error
//                          feedback carries across calls and across membership changes.
//   MeshCommunicator       (mesh_communicator.h) Mesh + every algorithm, chosen per call by
//                          size: the direct path for small tensors, ring or butterfly above.
//
// Failure contract (both): a failed Allreduce names the peer it blames in its status and in
// last_stats().failed_peer (when a peer, not our own input, is to blame), breaks the underlying
// ring/mesh (the others fail fast too), and leaves `data` exactly as it was passed in, together
// with any codec state. So the caller's retry is: form a ring/mesh of the survivors (next
// attempt), Replace...() it here, and call Allreduce again with the same buffer; the result is
// exactly what a group of only the survivors would have computed ("exact retry").
// Argument errors (e.g. a codec the ring cannot run) are InvalidArgument before anything is
// sent and break nothing.
#pragma once

#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "collectives/butterfly.h"
#include "collectives/codec_state.h"
#include "collectives/collective_stats.h"
#include "collectives/form_control.h"
#include "collectives/mesh.h"
#include "collectives/ring.h"
#include "collectives/robust/aggregator.h"
#include "core/clock.h"
#include "core/status.h"

namespace tributary::collectives {

struct CollectiveOptions {
  std::string tag;  // names this collective on the wire; every rank must pass the same one
  Deadline deadline = Deadline::max();
  std::string codec = "fp32";         // codec::MakeCodec spec
  robust::AggregatorSpec aggregator;  // default: mean
  bool average = false;               // false: the sum (world × the aggregate)
  // Which tensor stream this call continues: codec state (error feedback) is kept per stream.
  // Use one per tensor that is reduced repeatedly; a stream's codec may not change silently (a
  // new codec starts the stream over).
  std::string stream;
  // Butterfly only (the ring refuses it): see ContributionBinding. Kept alive by the caller.
  const ContributionBinding* binding = nullptr;
  // MeshCommunicator only: while the call waits, control->cancelled() is polled (every few tens
  // of ms); once it is true the call fails with Aborted (the attempt was superseded). Kept alive
  // by the caller. The other communicators rely on Interrupt().
  const FormControl* control = nullptr;
};

// The butterfly's options for one call: the caller's, plus the stream's codec state, the
// aggregation threads and (optionally) where the shard owner records its work.
ButterflyOptions ButterflyOptionsFor(const CollectiveOptions& options, CodecState* state, int aggregate_threads,
                                     ShardRecord* record = nullptr);

class Communicator {
 public:
  virtual ~Communicator() = default;

  // Replaces `data` on every rank with the aggregate over all ranks. Blocking; see the failure
  // contract above. Every rank must pass the same size and options.
  virtual Result<CollectiveStats> Allreduce(std::span<float> data,
                                            const CollectiveOptions& options) = 0;

  virtual std::string_view algorithm() const = 0;  // "ring" | "butterfly"
  virtual uint32_t rank() const = 0;
  virtual uint32_t world() const = 0;
  // True after a failed collective: Replace...() with a newly formed group before the next call.
  virtual bool broken() const = 0;
  // Makes a collective that another thread is blocked in fail at once (its connections are
  // closed), e.g. when the coordinator has already started a retry without a frozen member.
  // Thread-safe against Allreduce, but not against Replace...(): the caller serialises those.
  virtual void Interrupt() = 0;

  // Stats of the last call, also when it failed (bytes moved so far, time, the blamed peer).
  const CollectiveStats& last_stats() const { return last_stats_; }

 protected:
  CollectiveStats last_stats_;
};

class RingCommunicator final : public Communicator {
 public:
  explicit RingCommunicator(std::unique_ptr<Ring> ring, size_t segment_bytes = 1 << 20);

  // fp32 and mean only; anything else is InvalidArgument. A failure blames the neighbour the
  // ring saw fail (a ring only sees its two neighbours, so ranks further away blame the
  // neighbour whose abort reached them first: combine the members' reports to find the cause).
  Result<CollectiveStats> Allreduce(std::span<float> data,
                                    const CollectiveOptions& options) override;

  std::string_view algorithm() const override { return "ring"; }
  uint32_t rank() const override { return ring_->rank(); }
  uint32_t world() const override { return ring_->world(); }
  bool broken() const override { return ring_->broken(); }
  void Interrupt() override { ring_->Interrupt(); }

  Ring& ring() { return *ring_; }
  // After a failure: continue on a ring of the survivors.
  void ReplaceRing(std::unique_ptr<Ring> ring) { ring_ = std::move(ring); }

 private:
  std::unique_ptr<Ring> ring_;
  size_t segment_bytes_;
  std::vector<float> backup_;  // RingAllreduce's copy of `data` (exact retry)
};

class ButterflyCommunicator final : public Communicator {
 public:
  explicit ButterflyCommunicator(std::unique_ptr<Mesh> mesh, int aggregate_threads = 1);

  Result<CollectiveStats> Allreduce(std::span<float> data,
                                    const CollectiveOptions& options) override;

  std::string_view algorithm() const override { return "butterfly"; }
  uint32_t rank() const override { return mesh_->rank(); }
  uint32_t world() const override { return mesh_->world(); }
  bool broken() const override { return mesh_->broken(); }
  void Interrupt() override { mesh_->Interrupt(); }

  Mesh& mesh() { return *mesh_; }
  // After a failure: continue on a mesh of the survivors. Codec states are kept (their
  // contribution residuals survive re-sharding; see codec_state.h).
  void ReplaceMesh(std::unique_ptr<Mesh> mesh) { mesh_ = std::move(mesh); }
  // The stream's codec state, or null before its first call.
  const CodecState* codec_state(const std::string& stream) const;
  // Puts a saved state (CodecState::Clone) back, so that the error feedback of calls whose
  // round did not commit is undone; null: the stream starts over, owing nothing.
  void RestoreCodecState(const std::string& stream, std::unique_ptr<CodecState> state) {
    codec_streams_.Put(stream, std::move(state));
  }
  // When set, the next successful calls record this rank's shard (see ShardRecord).
  void set_record(ShardRecord* record) { record_ = record; }

 private:
  std::unique_ptr<Mesh> mesh_;
  int aggregate_threads_;
  CodecStreams codec_streams_;
  ShardRecord* record_ = nullptr;
};

}  // namespace tributary::collectives
