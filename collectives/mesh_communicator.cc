#include "collectives/mesh_communicator.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "collectives/allreduce.h"
#include "collectives/butterfly.h"
#include "collectives/direct_allreduce.h"
#include "collectives/doubling_allreduce.h"

namespace tributary::collectives {
namespace {


// The ring and the butterfly wait inside blocking receives, so they cannot poll a cancellation
// themselves: this thread polls it for them and interrupts the mesh (closing its connections
// makes every wait fail at once). Joined before the call returns.
class CancelWatch {
 public:
  CancelWatch(const FormControl* control, Mesh& mesh) {
    if (control == nullptr || !control->cancelled) return;
    thread_ = std::thread([this, control, &mesh] {
      std::unique_lock lock(mu_);
      while (!done_) {
        if (control->IsCancelled()) {
          fired_ = true;
          mesh.Interrupt();
          return;
        }
        cv_.wait_for(lock, kCollectiveCancelPoll);
      }
    });
  }
  ~CancelWatch() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  bool fired() const { return fired_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> fired_{false};
  std::thread thread_;
};

}  // namespace

std::string_view PathName(MeshCommunicator::Path path) {
  switch (path) {
    case MeshCommunicator::Path::kDirect:
      return "direct";
    case MeshCommunicator::Path::kDoubling:
      return "doubling";
    case MeshCommunicator::Path::kRing:
      return "ring";
    case MeshCommunicator::Path::kButterfly:
      return "butterfly";
  }
  return "?";
}

MeshCommunicator::MeshCommunicator(std::unique_ptr<Mesh> mesh, Options options)
    : mesh_(std::move(mesh)), options_(options) {}

void MeshCommunicator::ReplaceMesh(std::unique_ptr<Mesh> mesh) {
  ring_.reset();  // a view of the old mesh's connections
  mesh_ = std::move(mesh);
}

size_t MeshCommunicator::direct_max_bytes() const {
  return options_.direct_max_bytes.value_or(DirectThresholdBytes(world(), options_.link));
}

size_t MeshCommunicator::doubling_max_bytes() const {
  if (!DoublingFits(world())) return 0;
  return options_.doubling_max_bytes.value_or(
      DoublingThresholdBytes(world(), options_.link, segment_bytes()));
}

size_t MeshCommunicator::segment_bytes() const {
  return options_.segment_bytes > 0 ? options_.segment_bytes : RingSegmentBytes(options_.link);
}

MeshCommunicator::Path MeshCommunicator::PathFor(size_t bytes,
                                                 const CollectiveOptions& options) const {
  if (options.binding) return Path::kButterfly;  // only the butterfly binds contributions
  if (bytes <= direct_max_bytes()) return Path::kDirect;
  auto codec = codec::MakeCodec(options.codec);
  if (codec.ok() && IsPlainSum((*codec)->name(), options.aggregator)) {
    return bytes <= doubling_max_bytes() ? Path::kDoubling : Path::kRing;
  }
  return Path::kButterfly;
}

const CodecState* MeshCommunicator::codec_state(const std::string& stream) const {
  return codec_streams_.Find(stream);
}

Ring& MeshCommunicator::RingView() {
  if (!ring_) {
    const uint32_t n = world(), me = rank();
    std::shared_ptr<net::Connection> next, prev;
    if (n > 1) {
      next = mesh_->peer((me + 1) % n);
      prev = mesh_->peer((me + n - 1) % n);
    }
    ring_ = Ring::Over(me, mesh_->members(), mesh_->job_id(), mesh_->round(), mesh_->attempt(),
                       mesh_->identity(), std::move(next), std::move(prev));
  }
  return *ring_;
}

// RingAllreduce reduces in place; its backup (kept here between calls: a fresh buffer would
// page-fault its way in on every large call) keeps the exact-retry promise. A failure aborts the
// whole mesh (not only the two ring edges), so members that are not our neighbours fail fast too.
Status MeshCommunicator::RunRing(std::span<float> data, const CollectiveOptions& options) {
  Ring& ring = RingView();
  backup_.resize(std::max(backup_.size(), data.size()));
  auto result = RingAllreduce(ring, data,
                              {.tag = options.tag,
                               .deadline = options.deadline,
                               .segment_bytes = segment_bytes(),
                               .average = options.average,
                               .backup = std::span(backup_).first(data.size())});
  if (result.ok()) return Status::Ok();
  mesh_->Abort(result.status(), RingAllreduceBlame(ring, result.status()));
  return result.status();
}

Result<CollectiveStats> MeshCommunicator::Allreduce(std::span<float> data,
                                                    const CollectiveOptions& options) {
  last_stats_ = {};
  TRIB_ASSIGN_OR_RETURN(auto codec, codec::MakeCodec(options.codec));
  const std::string codec_name = codec->name();
  const Path path = PathFor(data.size_bytes(), options);
  last_path_ = path;
  const bool was_broken = broken();
  const Clock::time_point start = Clock::now();
  const uint64_t sent_before = mesh_->bytes_sent();
  const uint64_t received_before = mesh_->bytes_received();
  Status st;
  bool cancelled = false;
  if (path == Path::kDirect) {
    CodecState* state = nullptr;
    if (!IsPlainSum(codec_name, options.aggregator)) {
      TRIB_ASSIGN_OR_RETURN(state, codec_streams_.For(options.stream, codec_name));
    }
    st = DirectAllreduce(*mesh_, data,
                         {.tag = options.tag,
                          .deadline = options.deadline,
                          .codec = options.codec,
                          .aggregator = options.aggregator,
                          .average = options.average,
                          .codec_state = state,
                          .aggregate_threads = options_.aggregate_threads,
                          .control = options.control})
             .status();
  } else if (path == Path::kDoubling) {
    st = DoublingAllreduce(*mesh_, data,
                           {.tag = options.tag,
                            .deadline = options.deadline,
                            .average = options.average,
                            .control = options.control})
             .status();
  } else if (path == Path::kRing) {
    if (was_broken) return FailedPrecondition("the mesh broke in an earlier collective; form a new one");
    CancelWatch watch(options.control, *mesh_);
    st = RunRing(data, options);
    cancelled = !st.ok() && watch.fired();
  } else {
    TRIB_ASSIGN_OR_RETURN(CodecState * state, codec_streams_.For(options.stream, codec_name));
    CancelWatch watch(options.control, *mesh_);
    st = ButterflyAllreduce(*mesh_, data, ButterflyOptionsFor(options, state, options_.aggregate_threads)).status();
    cancelled = !st.ok() && watch.fired();
  }
  last_stats_.bytes_sent = mesh_->bytes_sent() - sent_before;
  last_stats_.bytes_received = mesh_->bytes_received() - received_before;
  last_stats_.seconds = SecondsSince(start);
  if (st.ok()) return last_stats_;
  // A superseded attempt is nobody's fault: our interrupt closed the connections, or a member
  // that learnt it first gave up on us. Whom the algorithm blamed for that does not matter.
  if (cancelled || (options.control && options.control->IsCancelled())) {
    return Aborted(std::string(kCollectiveSuperseded) + " (" + st.message() + ")");
  }
  if (!was_broken) last_stats_.failed_peer = mesh_->failure();
  return st;
}

}  // namespace tributary::collectives
