#include "runtime/peer.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "collectives/allreduce.h"
#include "collectives/communicator.h"
#include "collectives/mesh.h"
#include "collectives/parallel_ring.h"
#include "collectives/ring.h"
#include "core/clock.h"
#include "core/digest.h"
#include "net/connection.h"
#include "net/frame.h"
#include "net/io_thread.h"
#include "net/secure_channel.h"
#include "runtime/job_spec.h"
#include "runtime/pending_evals.h"
#include "runtime/ring_topology.h"
#include "runtime/state_sync.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"
#include "runtime/compute_device.h"
#include "runtime/contribution_binding.h"
#include "runtime/verification.h"
#include "verifier/opening_bulk.h"

namespace tributary::runtime {

v1::Hardware DetectHardware() {
  v1::Hardware hw;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      hw.set_cpu_model(line.substr(line.find(':') + 2));
      break;
    }
  }
  hw.set_cpu_cores(std::thread::hardware_concurrency());
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);) {
    if (line.rfind("MemTotal:", 0) == 0) {
      hw.set_memory_bytes(std::stoull(line.substr(9)) * 1024);
      break;
    }
  }
  hw.set_gpu("");  // this build trains on the CPU
  return hw;
}

namespace {

using net::Connection;
namespace asio = boost::asio;

std::vector<collectives::RingMember> MembersOf(const v1::RoundStart& start) {
  std::vector<collectives::RingMember> out;
  for (const auto& m : start.members()) {
    collectives::RingMember rm;
    rm.rank = m.rank();
    rm.host = m.host();
    rm.port = static_cast<uint16_t>(m.port());
    rm.name = m.peer_name();
    if (auto key = net::KeyFromBytes(m.public_key()); key.ok()) rm.public_key = *key;
    rm.relay_token = m.relay_token();
    out.push_back(rm);
  }
  return out;
}

bool SameMembers(const std::vector<collectives::RingMember>& a,
                 const std::vector<collectives::RingMember>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].host != b[i].host || a[i].port != b[i].port || a[i].public_key != b[i].public_key ||
        a[i].relay_token != b[i].relay_token) {
      return false;
    }
  }
  return true;
}

// Outcome of handling one coordinator message.
enum class Next { kContinue, kDone };

// Messages from the coordinator, read continuously on the io thread so the training thread can
// poll with short timeouts (a blocking Receive would close the connection when it times out).
//
// It also counts what arrived, so the training thread can tell that the attempt it works on is
// already obsolete: the coordinator only sends a RoundStart (or Abort) after giving up on the
// previous attempt, so one waiting in the queue means "stop waiting for the old group".
struct Mailbox {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Result<v1::Envelope>> items;
  std::atomic<uint64_t> starts_arrived{0}, starts_taken{0};
  std::atomic<uint64_t> syncs_arrived{0}, syncs_taken{0};
  std::atomic<bool> abort_arrived{false};
  std::atomic<bool> closed{false};
  // When the coordinator was last heard from (any frame, its heartbeat echoes included), set on
  // the io thread: an idle peer must tell a silent coordinator from a dead link.
  std::atomic<Clock::time_point> heard_at{Clock::now()};
  std::function<void()> on_superseded;  // set before the first read; runs on the io thread when
                                        // a newer RoundStart, an Abort or the link's end arrives
  std::function<void(const v1::Envelope&)> on_arrival;  // set before the first read; io thread

  bool NewerStartQueued() const { return starts_arrived.load() > starts_taken.load(); }
  bool NewerSyncQueued() const { return syncs_arrived.load() > syncs_taken.load(); }
  // The attempt in progress is obsolete: a newer start or an Abort is queued, or the link ended.
  bool AttemptObsolete() const { return NewerStartQueued() || abort_arrived || closed; }
};

void ReadInto(std::shared_ptr<Connection> connection, std::shared_ptr<Mailbox> box) {
  connection->AsyncReceive([connection, box](Result<v1::Envelope> message) {
    const bool more = message.ok();
    if (message.ok()) {
      box->heard_at = Clock::now();
      // The coordinator answers every heartbeat so that a peer waiting for a round keeps hearing
      // it; the answer carries nothing to act on.
      if (message->has_heartbeat()) return ReadInto(connection, box);
      if (message->has_round_start()) box->starts_arrived++;
      if (message->has_sync_state()) box->syncs_arrived++;
      if (message->has_abort()) box->abort_arrived = true;
      if (box->on_arrival) box->on_arrival(*message);
    } else {
      box->closed = true;
    }
    {
      std::lock_guard<std::mutex> lock(box->mu);
      box->items.push_back(std::move(message));
    }
    box->cv.notify_all();
    if (box->on_superseded && box->AttemptObsolete()) {
      box->on_superseded();
    }
    if (more) ReadInto(connection, box);
  });
}

class PeerSession {
 public:
  explicit PeerSession(const PeerOptions& options)
      : options_(options), io_("peer-io"), heartbeat_timer_(io_.context()) {}

  ~PeerSession() {
    FinishReport();
    DiscardEarlyCollective();  // its thread uses this session's group and io thread
    std::promise<void> stopped;
    asio::post(io_.context(), [this, &stopped] {
      heartbeat_timer_.cancel();
      stopped.set_value();
    });
    stopped.get_future().wait();
  }

  Result<PeerOutcome> Run() {
    TRIB_RETURN_IF_ERROR(LoadIdentity());
    TRIB_ASSIGN_OR_RETURN(ring_listener_, net::Listener::Bind(io_.context(), options_.listen_host, 0));
    TRIB_ASSIGN_OR_RETURN(state_server_,
                          StateServer::Start(io_, options_.listen_host, identity_, options_.job_id));
    TRIB_RETURN_IF_ERROR(ConnectCoordinator(DeadlineAfter(Millis(options_.connect_timeout_ms))));
    for (;;) {
      if (StopRequested()) return Leave("stopped by the operator");
      RunAhead();
      auto message = ReceiveFromCoordinator(DeadlineAfter(Millis(500)));
      if (!message.ok()) {
        if (message.status().code() == StatusCode::kDeadlineExceeded && !CoordinatorLost()) continue;
        if (message.status().code() == StatusCode::kAborted) return message.status();
        spdlog::warn("lost the coordinator: {}", message.status().ToString());
        TRIB_RETURN_IF_ERROR(Reconnect());
        continue;
      }
      TRIB_ASSIGN_OR_RETURN(Next next, Handle(*message));
      if (next == Next::kDone) return outcome_;
    }
  }

 private:
  bool StopRequested() const { return options_.stop && options_.stop->load(); }

  Status LoadIdentity() {
    if (options_.identity_path.empty()) {
      identity_ = net::Identity::Generate();
    } else {
      TRIB_ASSIGN_OR_RETURN(identity_, net::Identity::LoadFile(options_.identity_path));
    }
    spdlog::info("peer identity {}", net::ShortKey(identity_.public_key()));
    return Status::Ok();
  }

  // Between rounds, while the report goes to the coordinator and the next RoundStart comes
  // back (a round trip, plus rank 0's evaluation), the trainer runs the next round's first inner
  // steps (Trainer::Speculate, which decides which jobs may: not DDP, not a recorded step); it
  // stops as soon as the coordinator says anything. Only for a peer that trained the round
  // before: a joiner's start will come from a sync instead.
  void RunAhead() {
    if (!trainer_) return;
    if (!trainer_->has_tentative_round() && outcome_.rounds_contributed == 0) return;
    auto box = mailbox();
    if (!box) return;
    const auto heard = [this, &box] {
      if (StopRequested() || box->closed) return true;
      std::lock_guard<std::mutex> lock(box->mu);
      return !box->items.empty();
    };
    Status st = trainer_->Speculate(heard);
    if (!st.ok()) spdlog::warn("running the next round's steps ahead failed: {}", st.ToString());
  }

  // ---------------------------------------------------------------- coordinator link
  std::shared_ptr<Connection> coordinator() {
    std::lock_guard<std::mutex> lock(mu_);
    return coordinator_;
  }

  bool CoordinatorLost() {
    auto c = coordinator();
    if (!c || c->closed()) return true;
    // The coordinator answers every heartbeat, so it never goes quiet for long while it lives.
    // Only a silence far past any round counts as a dead link: its event loop may be busy.
    auto box = mailbox();
    if (!box) return true;
    return SecondsSince(box->heard_at.load()) * 1000 > 2.0 * spec_.round_timeout_ms() + 30000;
  }

  Status ConnectCoordinator(Deadline deadline) {
    TRIB_ASSIGN_OR_RETURN(auto conn, Connection::Dial(io_.context(), options_.coordinator_host,
                                                      options_.coordinator_port, deadline));
    TRIB_ASSIGN_OR_RETURN(net::PublicKey key,
                          net::ClientHandshake(*conn, identity_, "tributary-coordinator",
                                               options_.coordinator_key, deadline));
    v1::Envelope hello = net::MakeEnvelope(options_.job_id);
    v1::Hello* h = hello.mutable_hello();
    h->set_role(v1::ROLE_PEER);
    h->set_peer_name(options_.name);
    // Behind NAT our ports are unreachable, so we announce none.
    h->set_listen_port(options_.relay_only ? 0 : ring_listener_->port());
    h->set_sync_port(options_.relay_only ? 0 : state_server_->port());
    h->set_relay_only(options_.relay_only);
    h->set_invite_token(options_.invite_token);
    *h->mutable_hardware() = hardware_;
    if (trainer_) {
      h->set_committed_rounds(trainer_->completed_rounds());
      if (trainer_->completed_rounds() > 0) h->set_state_digest(DigestToBytes(trainer_->CommittedStateDigest()));
      // A round reported but not yet ruled on: kept until the coordinator says (OnHelloAck).
      if (trainer_->has_tentative_round()) h->set_reported_state_digest(DigestToBytes(tentative_state_));
    }
    net::SignEnvelope(identity_, hello);
    TRIB_RETURN_IF_ERROR(conn->Send(hello, deadline));
    auto ack = conn->Receive(deadline);
    if (!ack.ok()) return ack.status().WithContext("coordinator");
    // An Error may come before the coordinator knows our job; read it before the job check.
    TRIB_RETURN_IF_ERROR(net::CheckEnvelope(*ack, "").WithContext("coordinator"));
    if (ack->has_error()) {
      return Aborted("coordinator refused: " + v1::ErrorCode_Name(ack->error().code()) + ": " +
                     ack->error().message());
    }
    TRIB_RETURN_IF_ERROR(net::CheckEnvelope(*ack, options_.job_id).WithContext("coordinator"));
    if (!ack->has_hello_ack()) return ProtocolError("coordinator answered Hello with " + net::PayloadName(*ack));
    coordinator_key_ = key;
    {
      std::lock_guard<std::mutex> lock(mu_);
      coordinator_ = conn;
      mailbox_ = std::make_shared<Mailbox>();
      mailbox_->on_superseded = [this] { InterruptActiveGroup(); };
      mailbox_->on_arrival = [this](const v1::Envelope& e) { MaybePrefetchBulk(e); };
      ReadInto(conn, mailbox_);
    }
    spdlog::info("connected to coordinator {} at {}:{}", net::ShortKey(key), options_.coordinator_host,
                 options_.coordinator_port);
    return OnHelloAck(ack->hello_ack());
  }

  Status OnHelloAck(const v1::HelloAck& ack) {
    relay_port_ = static_cast<uint16_t>(ack.relay_port());
    if (trainer_) {  // a reconnect: the job and shard are known
      if (!trainer_->has_tentative_round()) return Status::Ok();
      const uint64_t round = trainer_->completed_rounds();
      if (ack.reported_round_committed() && ack.committed_rounds() == round + 1) {
        spdlog::info("round {} was committed while the coordinator was out of reach; committing it here", round);
        return CommitReportedRound(round);
      }
      AbandonTentativeRound();
      return Status::Ok();
    }
    spec_ = ack.spec();
    job_id_ = JobIdOf(spec_);
    if (job_id_ != options_.job_id) {
      return ProtocolError("coordinator's job spec hashes to " + job_id_ + ", not the job id " +
                           options_.job_id + " we asked for");
    }
    TRIB_RETURN_IF_ERROR(ValidateJobSpec(spec_));
    // Building a large model and measuring its speed can outlast the liveness timeout: beat first.
    StartHeartbeats();
    TRIB_ASSIGN_OR_RETURN(TrainingData data, LoadTrainingData(options_.corpus_dir, spec_));
    shard_ = ack.shard();
    // Resolved once: the trainer runs on it and the verifier's class names it ("cuda" -> "cuda:0").
    TRIB_ASSIGN_OR_RETURN(const std::string device, ResolveComputeDevice(options_.device));
    TRIB_ASSIGN_OR_RETURN(trainer_, Trainer::Create(spec_, data, WorkerPlacement{shard_, spec_.num_peers(), 0}, device));
    if (!spec_.initial_theta_digest().empty() && ack.committed_rounds() == 0 &&
        DigestToBytes(trainer_->ThetaDigest()) != spec_.initial_theta_digest()) {
      // Round 0 starts from θ_0, and the coordinator holds every member's first step to the
      // job's; this build would be refused there (a later joiner downloads θ instead).
      auto want = DigestFromBytes(spec_.initial_theta_digest());
      return FailedPrecondition("this peer's θ_0 (sha256 " + ShortHex(trainer_->ThetaDigest()) +
                                "…) is not the job's (sha256 " + (want.ok() ? ShortHex(*want) : std::string("?")) +
                                "…): its libtorch initialises the model differently from the build that created the "
                                "job, and a verifying job's round 0 must start from the job's θ_0");
    }
    if (options_.adversary) trainer_->SetStepTamper(options_.adversary->step);
    if (spec_.verify_samples() > 0) {  // prover and verifier (runtime/verification.h)
      verification_ = std::make_unique<PeerVerification>(spec_, job_id_, data, &identity_, options_.adversary, device);
      trainer_->SetStepObserver(verification_->Observer());
      verification_->SetBulkTransport(BulkTransport());
      {
        std::lock_guard<std::mutex> lock(prefetch_mu_);
        prefetch_wanted_ = [v = verification_.get()](const v1::VerifyRequest& q) { return v->WantsBulk(q); };
      }
    }
    PublishState();
    // The coordinator may already have started a round with us: no throwaway steps to time here
    // (they held round 0 up by 0.35 s on a loaded host). The speed comes from the rounds trained
    // (RunAttempt) and goes with the next Hello.
    spdlog::info("joined job {} ({} mode, H={}, {} rounds) as shard {}/{}: {} parameters", job_id_,
                 ModeName(spec_.mode()), spec_.inner_steps(), spec_.rounds(), shard_, spec_.num_peers(),
                 trainer_->num_parameters());
    return Status::Ok();
  }

  // Openings peer to peer: this peer's state server offers the bulk of its openings (not
  // behind NAT, where nobody can reach it), and as a verifier it fetches a prover's. The
  // download starts when the VerifyRequest arrives (MaybePrefetchBulk, on the io thread), so it
  // overlaps the training that delays the request's handling; Verify then takes the result.
  PeerVerification::BulkTransport BulkTransport() {
    PeerVerification::BulkTransport t;
    if (!options_.relay_only) {
      t.offer = [this](const Digest& digest, std::shared_ptr<const std::string> bulk) {
        state_server_->Offer(digest, std::move(bulk));
      };
    }
    // At most the states before and after a step and a residual (28 bytes a parameter), and half
    // the verifier's time: the other half is left for the opening sent through the coordinator.
    const uint64_t max_bytes = 32 * static_cast<uint64_t>(trainer_->num_parameters()) + (1u << 20);
    const Millis budget((spec_.verify_timeout_ms() ? spec_.verify_timeout_ms() : spec_.round_timeout_ms()) / 2);
    auto fetch = [this, max_bytes, budget](const v1::VerifyRequest& q) -> Result<std::string> {
      const uint64_t bytes = q.opening().bulk_bytes();
      if (bytes > max_bytes) {
        return InvalidArgument("the opening names a bulk of " + std::to_string(bytes) + " bytes, more than this model's " +
                               std::to_string(max_bytes));
      }
      TRIB_ASSIGN_OR_RETURN(const Digest digest, verifier::OpeningBulkDigest(q.opening()));
      TRIB_ASSIGN_OR_RETURN(const StateSource source, StateSourceOf(q.bulk_source()));
      return FetchBlob(io_, identity_, job_id_, source, digest, bytes, DeadlineAfter(budget));
    };
    {
      std::lock_guard<std::mutex> lock(prefetch_mu_);
      bulk_fetch_ = fetch;
    }
    t.fetch = [this, fetch](const v1::VerifyRequest& q) -> Result<std::string> {
      std::shared_future<Result<std::string>> started;
      {
        std::lock_guard<std::mutex> lock(prefetch_mu_);
        auto it = prefetched_.find(q.challenge_id());
        if (it != prefetched_.end()) {
          started = std::move(it->second);
          prefetched_.erase(it);
        }
      }
      return started.valid() ? started.get() : fetch(q);
    };
    return t;
  }

  // On the io thread, as a message arrives: a VerifyRequest whose opening this peer will fetch
  // starts downloading now, on a thread of its own. Only one the coordinator signed.
  void MaybePrefetchBulk(const v1::Envelope& e) {
    if (!e.has_verify_request()) return;
    std::lock_guard<std::mutex> lock(prefetch_mu_);
    if (!bulk_fetch_ || !prefetch_wanted_ || !prefetch_wanted_(e.verify_request())) return;
    if (!net::VerifyEnvelope(coordinator_key_, e)) return;
    const v1::VerifyRequest q = e.verify_request();
    prefetched_[q.challenge_id()] = std::async(std::launch::async, bulk_fetch_, q).share();
  }

  Status Reconnect() {
    FinishReport();
    DiscardEarlyCollective();
    DropGroup();  // a tentative round stays: the coordinator may have committed it (OnHelloAck)
    const Deadline give_up = DeadlineAfter(Millis(options_.reconnect_timeout_ms));
    Millis backoff{200};
    Status last;
    while (Clock::now() < give_up) {
      if (StopRequested()) return Aborted("stopped while reconnecting");
      last = ConnectCoordinator(std::min(give_up, DeadlineAfter(Millis(options_.connect_timeout_ms))));
      if (last.ok()) return Status::Ok();
      if (last.code() == StatusCode::kAborted) return last;  // refused: no point retrying
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, Millis{2000});
    }
    return Unavailable("coordinator unreachable for " + std::to_string(options_.reconnect_timeout_ms) +
                       " ms: " + last.ToString());
  }

  void StartHeartbeats() {
    if (heartbeats_started_.exchange(true)) return;
    ScheduleHeartbeat();
  }

  void ScheduleHeartbeat() {
    heartbeat_timer_.expires_after(HeartbeatInterval(spec_));
    heartbeat_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      if (auto c = coordinator(); c && !c->closed()) {
        v1::Envelope beat = net::MakeEnvelope(job_id_);
        beat.mutable_heartbeat()->set_committed_rounds(committed_rounds_.load());
        c->AsyncSend(beat);
      }
      ScheduleHeartbeat();
    });
  }

  Result<v1::Envelope> ReceiveFromCoordinator(Deadline deadline) {
    std::shared_ptr<Mailbox> box;
    {
      std::lock_guard<std::mutex> lock(mu_);
      box = mailbox_;
    }
    if (!box) return Unavailable("no coordinator connection");
    std::unique_lock<std::mutex> lock(box->mu);
    if (!box->cv.wait_until(lock, deadline, [&] { return !box->items.empty(); })) {
      return DeadlineExceeded("no message from the coordinator yet");
    }
    Result<v1::Envelope> message = std::move(box->items.front());
    box->items.pop_front();
    lock.unlock();
    if (message.ok() && message->has_round_start()) box->starts_taken++;
    if (message.ok() && message->has_sync_state()) box->syncs_taken++;
    if (!message.ok()) return Unavailable(message.status().message());
    TRIB_RETURN_IF_ERROR(net::CheckEnvelope(*message, "").WithContext("coordinator"));
    if (message->has_error()) {
      return Aborted("coordinator refused: " + v1::ErrorCode_Name(message->error().code()) + ": " +
                     message->error().message());
    }
    TRIB_RETURN_IF_ERROR(net::CheckEnvelope(*message, options_.job_id).WithContext("coordinator"));
    const bool announcement = message->has_round_start() || message->has_round_end() ||
                              message->has_sync_state() || message->has_job_done() || message->has_abort();
    if (announcement && !net::VerifyEnvelope(coordinator_key_, *message)) {
      return Unavailable("coordinator's " + net::PayloadName(*message) + " carries no valid signature");
    }
    if (message->has_abort()) {
      return Aborted("coordinator aborted the job at round " + std::to_string(message->abort().round()) +
                     ": " + message->abort().reason());
    }
    return message;
  }

  Status SendSigned(v1::Envelope e) {
    net::SignEnvelope(identity_, e);
    auto c = coordinator();
    if (!c) return Unavailable("no coordinator connection");
    return c->Send(e, DeadlineAfter(Millis(options_.connect_timeout_ms)));
  }

  // ---------------------------------------------------------------- message handling
  Result<Next> Handle(const v1::Envelope& message) {
    FinishReport();
    switch (message.payload_case()) {
      case v1::Envelope::kRoundStart:
        if (Superseded()) {
          // Blocked in a long round or sync, we fell behind: only the newest start matters.
          spdlog::info("skipping round {} attempt {}: a newer RoundStart is queued",
                       message.round_start().round(), message.round_start().attempt());
          return Next::kContinue;
        }
        RunAttempt(message.round_start());
        return Next::kContinue;
      case v1::Envelope::kRoundEnd:
        TRIB_RETURN_IF_ERROR(OnRoundEnd(message.round_end()));
        return Next::kContinue;
      case v1::Envelope::kSyncState:
        if (auto box = mailbox(); box && box->NewerSyncQueued()) return Next::kContinue;
        OnSyncState(message.sync_state());
        return Next::kContinue;
      case v1::Envelope::kOpenRequest:
      case v1::Envelope::kVerifyRequest: {
        if (!verification_) return ProtocolError("verifier request for a job that does not verify");
        TRIB_ASSIGN_OR_RETURN(auto reply, verification_->Handle(message, coordinator_key_));
        if (reply) (void)SendSigned(std::move(*reply));
        return Next::kContinue;
      }
      case v1::Envelope::kJobDone:
        spdlog::info("job {} done: this peer holds {} rounds, contributed to {}", job_id_,
                     outcome_.rounds_completed, outcome_.rounds_contributed);
        return Next::kDone;
      default:
        return ProtocolError("coordinator sent an unexpected " + net::PayloadName(message));
    }
  }

  void RunAttempt(const v1::RoundStart& start) {
    const uint64_t round = start.round();
    if (trainer_->has_tentative_round()) AbandonTentativeRound();  // a retry: start from committed
    if (round != trainer_->completed_rounds()) {
      spdlog::warn("round {} started but this peer holds round {}; asking to sync", round,
                   trainer_->completed_rounds());
      SendReady();
      return;
    }
    auto members = MembersOf(start);
    for (auto& m : members) {
      if (m.relay_token.empty()) continue;
      m.relay_host = options_.coordinator_host;  // the relay runs beside the coordinator
      m.relay_port = relay_port_;
    }
    if (start.your_rank() >= members.size()) {
      spdlog::error("coordinator gave rank {} of {}", start.your_rank(), members.size());
      return;
    }
    rank_ = start.your_rank();
    const Deadline deadline = DeadlineAfter(Millis(spec_.round_timeout_ms()));
    // Measured when the coordinator asks; it orders later rings by them (runtime/ring_topology.h).
    // Like formation: bounded by a share of the round, and given up once the round moved on.
    const std::vector<v1::LinkProbe> links =
        ProbeLinksIfAsked(start, io_, *ring_listener_, members, job_id_, &identity_,
                          FormationDeadline(deadline), [this] { return Superseded(); });
    // Forming the group takes a few round trips per member (0.5–1 s on a 100 ms link). DiLoCo
    // needs the group only for its collectives: synchronous DiLoCo after its inner steps,
    // diloco-async for the delayed collective, which runs beside them. So the group forms on a
    // thread of its own from the round's start, hidden behind compute, and the first collective
    // waits for it. For diloco-async that includes round 0, which has no collective (unless it
    // is the last): round 1's collective then starts at once. Only an async round 0 that probes
    // links leaves it to round 1, whose ring the coordinator may reorder from those probes. Every
    // member decides this from the same spec and RoundStart, so all of them form in the same
    // attempt. DDP needs the group before its first step.
    bool group_ready =
        group_ && !group_->broken() && SameMembers(members, ring_members_) && start.attempt() == 0;
    // The delayed collective this round would start may already run (StartEarlyCollective): kept
    // only when this round is the one it was started for, on the group it was started on.
    const bool early_kept = early_ && early_->round == round && group_ready && early_->group == group_;
    if (!early_kept) DiscardEarlyCollective();
    struct Formation {
      Status status;
      std::optional<uint32_t> suspect;
    };
    const bool forms_beside_steps = spec_.mode() == v1::MODE_DILOCO ||
                                    (spec_.mode() == v1::MODE_DILOCO_ASYNC && !(round == 0 && start.probe_links()));
    // diloco-async's round 0 has no collective (unless it is the job's only round): the group it
    // forms beside the steps warms its connections up for round 1's (WarmUpGroup).
    const bool warms_up = forms_beside_steps && spec_.mode() == v1::MODE_DILOCO_ASYNC && round == 0 &&
                          spec_.rounds() > 1;
    std::atomic<bool> steps_done = false;  // set when TryRound returns; ends the warm-up
    // Owns group_ and ring_members_ while it runs.
    auto form_group = [&](bool warm_up) -> Formation {
      collectives::FormControl control;
      control.cancelled = [this] { return Superseded(); };
      Status formed = FormGroup(members, round, start.attempt(), FormationDeadline(deadline), &control);
      if (formed.ok()) ring_members_ = members;
      if (formed.ok() && warm_up) WarmUpGroup(round, start.attempt(), FormationDeadline(deadline), control, steps_done);
      return {formed, control.blamed_rank};
    };
    std::future<Formation> forming;
    if (!group_ready && forms_beside_steps) forming = std::async(std::launch::async, form_group, warms_up);
    bool formation_failed = false;
    std::optional<uint32_t> formation_suspect;
    auto form = [&]() -> Status {
      Formation formed = forming.valid() ? forming.get() : form_group(false);
      formation_failed = !formed.status.ok();
      formation_suspect = formed.suspect;
      if (formed.status.ok()) group_ready = true;
      return formed.status;
    };
    if (!group_ready && spec_.mode() == v1::MODE_DDP) {
      if (Status formed = form(); !formed.ok()) {
        if (Superseded()) return;  // the coordinator already moved on; nothing to report
        std::vector<uint32_t> suspects;
        if (formation_suspect) suspects.push_back(*formation_suspect);
        return ReportFailure(start, formed, suspects);
      }
    }
    uint64_t collective = early_kept ? 1 : 0, sent = 0, received = 0;
    // A verifying DiLoCo job binds the Δ it sends to a manifest it signs (docs/VERIFIER.md).
    std::optional<AttemptBinding> binding;
    if (BindsContributions()) {
      std::vector<net::PublicKey> keys;
      for (const auto& m : members) keys.push_back(m.public_key);
      binding.emplace(job_id_, &identity_, round, start.attempt(), std::move(keys), rank_);
      if (options_.adversary && options_.adversary->manifest_lies) {
        binding->SetManifestTamper([rank = rank_](std::vector<Digest>& d) { d[(rank + 1) % d.size()][0] ^= 1; });
      }
      if (options_.adversary && options_.adversary->sent_payload) binding->SetPayloadTamper(options_.adversary->sent_payload);
      if (options_.adversary && options_.adversary->owner_aggregate) {
        binding->SetAggregateTamper([hook = options_.adversary->owner_aggregate, round](std::span<float> a) { hook(round, a); });
      }
      if (options_.adversary && options_.adversary->sent_residual) {
        binding->SetResidualTamper([hook = options_.adversary->sent_residual, round](std::span<float> r) { hook(round, r); },
                                   options_.adversary->residual_claim_untampered);
      }
    }
    // `bind`: this call carries the round's Δ (bound when the job verifies); a mix call is not.
    auto allreduce = [&](std::span<float> values, std::string codec, std::string stream, bool bind) -> Status {
      if (!group_ready) {
        TRIB_RETURN_IF_ERROR(form());
        spdlog::info("round {} attempt {}: group of {} formed beside the inner steps", round,
                     start.attempt(), members.size());
        SetActiveGroup(group_);
        if (Superseded()) return Aborted("the attempt was superseded");
      }
      collectives::CollectiveOptions opts =
          CollectiveOptionsFor(round, start.attempt(), "c" + std::to_string(collective++), deadline, std::move(codec),
                               std::move(stream));
      const auto* hooks = options_.adversary;
      bind = bind && binding.has_value();
      if (bind) {
        if (hooks && hooks->sent_delta) hooks->sent_delta(round, values);
        opts.binding = &binding->Bind(values);
      }
      auto stats = group_->Allreduce(values, opts);
      if (bind) SendContributionProofs(round, start.attempt(), *binding);
      if (!stats.ok()) return stats.status();
      if (bind && hooks && hooks->averaged_delta) hooks->averaged_delta(round, values);
      sent += stats->bytes_sent;
      received += stats->bytes_received;
      return Status::Ok();
    };
    Averager average = [&](std::span<float> values) {
      return allreduce(values, runtime::JobCodec(spec_),
                       spec_.mode() == v1::MODE_DDP ? "gradients" : "pseudo-gradient", /*bind=*/true);
    };
    // Members from different groups of the last round average their θ and momentum too:
    // lossless (fp32, no error feedback) so that they end bit-identical, through the job's
    // aggregator so that a robust job stays robust against a member lying about its θ.
    Averager mix;
    if (start.mix()) mix = [&](std::span<float> values) { return allreduce(values, "fp32", "mix", /*bind=*/false); };
    if (group_ready) SetActiveGroup(group_);
    // A start that arrived before the group became interruptible would be missed: look again.
    auto stats = Superseded() ? Result<RoundStats>(Aborted("the attempt was superseded"))
                              : trainer_->TryRound(average, mix);
    steps_done = true;
    if (early_kept && trainer_->has_next_delayed_average()) {
      DiscardEarlyCollective();  // the round ended before the trainer took it (superseded)
    } else if (early_kept) {     // the trainer took it and waited for its thread
      sent += early_->sent;
      received += early_->received;
      early_.reset();
    }
    if (forming.valid()) {  // no collective waited for it (round 0, or a round that failed first)
      if (Formation formed = forming.get(); formed.status.ok()) {
        group_ready = true;
        spdlog::info("round {} attempt {}: group of {} formed beside round {}'s inner steps", round,
                     start.attempt(), members.size(), round);
      } else {
        spdlog::info("round {} attempt {}: forming the group beside the inner steps failed ({}); the next round forms it",
                     round, start.attempt(), formed.status.ToString());
        DropGroup();
      }
    }
    SetActiveGroup(nullptr);
    if (!stats.ok()) {
      std::vector<uint32_t> suspects;
      if (formation_failed) {
        if (formation_suspect) suspects.push_back(*formation_suspect);
      } else if (group_ && group_->last_stats().failed_peer) {
        suspects.push_back(group_->last_stats().failed_peer->rank);
      }
      DropGroup();  // closing our sockets tells the other members at once
      if (Superseded()) return;
      return ReportFailure(start, stats.status(), suspects);
    }
    if (stats->compute_seconds > 0) hardware_.set_tokens_per_second(stats->tokens / stats->compute_seconds);
    reported_codecs_ = CodecStatesNow();
    // Before the report's digests: the collective waits on the slowest member's Δ, and every
    // millisecond it starts sooner is one the next round's apply step may not wait.
    if (group_ready) StartEarlyCollective(round);
    v1::Envelope report = net::MakeEnvelope(job_id_);
    v1::RoundReport* r = report.mutable_round_report();
    r->set_round(round);
    r->set_attempt(start.attempt());
    r->set_rank(rank_);
    // Snapshot now; encoded and hashed beside the next round's first steps (SendReport).
    auto encoding = trainer_->EncodeTentativeState();
    r->set_train_loss(stats->train_loss);
    r->set_tokens(stats->tokens);
    r->set_bytes_sent(sent);
    r->set_bytes_received(received);
    r->set_compute_seconds(stats->compute_seconds);
    r->set_comm_seconds(stats->comm_seconds);
    if (stats->comm_seconds > 0) r->set_bandwidth_bytes_per_second(sent / stats->comm_seconds);
    for (const v1::LinkProbe& link : links) *r->add_links() = link;
    if (binding && binding->encoded_manifest()) r->set_contribution_manifest(*binding->encoded_manifest());
    if (binding) {
      for (std::string& s : binding->AggregateStatements()) r->add_aggregate_statements(std::move(s));
    }
    evaluate_after_commit_.reset();
    if (start.evaluate() && rank_ == 0) {
      if (runtime::EvaluatesBesideTraining(spec_, round)) {
        evaluate_after_commit_ = round;  // on its own thread once the round commits (OnRoundEnd)
      } else {
        auto eval = trainer_->EvalLoss();
        if (eval.ok()) {
          r->set_has_eval(true);
          r->set_eval_loss(*eval);
          pending_eval_ = *eval;
        }
      }
    }
    // The job's last report waits for them: the coordinator finishes the job on that round.
    AttachEarlierEvals(*r, round, /*wait=*/round + 1 >= spec_.rounds());
    pending_sent_ = sent;
    pending_received_ = received;
    std::vector<v1::Envelope> late_commitments;
    if (verification_) {  // the signed Merkle root of this round's steps goes before the report
      // The commitment states the Δ that went out (the manifest's), which a Δ audit checks
      // against the committed steps; unbound rounds state the trainer's.
      auto delta = binding && binding->sent_digest() ? Result<Digest>(*binding->sent_digest())
                                                     : trainer_->PseudoGradientDigest();
      if (binding) {
        verification_->KeepSentResidual(round, binding->TakeSentResidual());
        AttemptBinding::OwnerOpening owned = binding->TakeOwnerOpening();
        verification_->KeepOwnerOpening(round, std::move(owned.contributions), std::move(owned.residual_in));
      }
      auto commitments = verification_->CommitRound(round, start.attempt(), delta.ok() ? *delta : Digest{});
      if (!commitments.ok()) spdlog::error("cannot commit round {}: {}", round, commitments.status().ToString());
      if (commitments.ok()) {
        for (auto& e : commitments->before) (void)SendSigned(std::move(e));
        late_commitments = std::move(commitments->after);
      }
      if (commitments.ok() && spec_.mode() == v1::MODE_DILOCO) {
        auto ends = verification_->ChainEnds(round);
        if (ends.ok()) {
          *r->mutable_chain_ends() = std::move(ends).value();
        } else {
          spdlog::error("cannot state the ends of round {}'s steps: {}", round, ends.status().ToString());
        }
      }
    }
    const std::string summary = fmt::format(
        "round {} attempt {}{}: loss {:.4f}, θ {{}}, compute {:.2f} s, comm {:.2f} s, {} bytes sent", round,
        start.attempt(),
        start.groups() > 1 ? fmt::format(" (group {} of {}{})", start.group(), start.groups(), start.mix() ? ", mixed" : "")
                           : std::string(start.mix() ? " (mixed)" : ""),
        stats->train_loss, stats->compute_seconds, stats->comm_seconds, sent);
    if (!encoding.ok()) return ReportFailure(start, encoding.status());  // not after a TryRound that succeeded
    report_in_flight_ = std::async(std::launch::async, [this, report = std::move(report), encoding = *encoding,
                                                        late = std::move(late_commitments), summary]() mutable {
      SendReport(std::move(report), encoding, std::move(late), summary);
    });
  }

  // On the report's own thread, while the training thread runs the next round's first steps:
  // waits for the state's digests, then sends the report and the commitments that follow it.
  // Writes tentative_theta_ and tentative_state_, which the training thread reads only after
  // FinishReport.
  void SendReport(v1::Envelope report, const std::shared_future<runtime::StateEncoding>& encoding,
                  std::vector<v1::Envelope> late_commitments, const std::string& summary) {
    const runtime::StateEncoding& e = encoding.get();
    tentative_theta_ = e.theta;
    tentative_state_ = e.state;
    report.mutable_round_report()->set_theta_digest(DigestToBytes(e.theta));
    report.mutable_round_report()->set_state_digest(DigestToBytes(e.state));
    Status st = SendSigned(std::move(report));
    if (!st.ok()) spdlog::warn("could not send the round report: {}", st.ToString());
    for (auto& c : late_commitments) (void)SendSigned(std::move(c));
    spdlog::info(fmt::runtime(summary), ShortHex(e.theta));
  }

  // Waits until the last report has gone: whatever comes from the coordinator may answer it, and
  // reads what SendReport wrote.
  void FinishReport() {
    if (report_in_flight_.valid()) report_in_flight_.get();
  }

  // A new group's connections start in TCP slow start, and BBR has not measured their bandwidth
  // yet: the first collective on them took 2-3x a later one (0.5-0.86 s against 0.2-0.3 s on the
  // transatlantic link), past the apply step of diloco-async's round 1. Two all-reduces of zeros
  // with the job's codec and aggregator (so the same path over the same links) warm them up:
  // 1/8 of the job's size, then all of it (at most kWarmUpMaxFloats), which sends what round 1's
  // collective will. Doubling sizes, as slow start does, took twice as long (four calls, 1.06 s
  // against 0.5 s, each paying the latency).
  // The report should not wait for them, and the members must run the same calls: the first
  // carries a flag, 1 from a member whose steps are done, and no member makes the second when
  // its result holds one (the same bits everywhere). Each call has a codec stream of its own,
  // forgotten after it, so the job's error feedback is untouched. Failing only costs the group:
  // the next collective forms anew.
  static constexpr size_t kWarmUpMaxFloats = size_t{1} << 22;
  void WarmUpGroup(uint64_t round, uint32_t attempt, Deadline deadline, const collectives::FormControl& control,
                   const std::atomic<bool>& steps_done) {
    const size_t full = std::min(static_cast<size_t>(trainer_->num_parameters()), kWarmUpMaxFloats);
    if (full == 0) return;
    std::vector<float> values(full);
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t sent = 0;
    int calls = 0;
    for (const size_t size : {std::max<size_t>(full / 8, 1), full}) {
      std::fill(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(size), 0.0f);
      values[0] = steps_done.load() ? 1.0f : 0.0f;
      // Its own name on the wire and its own codec stream: it cannot meet the round's "c0".
      const std::string name = "warm-up/" + std::to_string(calls);
      collectives::CollectiveOptions opts =
          CollectiveOptionsFor(round, attempt, name, deadline, runtime::JobCodec(spec_), name);
      opts.control = &control;
      auto stats = group_->Allreduce(std::span<float>(values.data(), size), opts);
      if (butterfly_ && group_ == butterfly_) butterfly_->RestoreCodecState(opts.stream, nullptr);
      if (!stats.ok()) {
        spdlog::info("round {} attempt {}: warming the group's connections up failed: {}", round, attempt,
                     stats.status().ToString());
        return;
      }
      sent += stats->bytes_sent;
      ++calls;
      if (values[0] != 0.0f) break;
    }
    spdlog::info("round {} attempt {}: warmed the group's connections up in {:.2f} s ({} calls, {} bytes sent)", round,
                 attempt, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), calls, sent);
  }

  // fp32 + mean averages over the pipelined ring; a codec or a robust aggregator needs the
  // butterfly (every shard owner sees each member's contribution). The butterfly's codec state
  // (error feedback) lives in the communicator, which survives membership changes.
  bool UsesButterfly() const { return !UsesRing(spec_); }
  bool BindsContributions() const { return runtime::BindsContributions(spec_); }

  // Each provably bad contribution a sender sent us (a payload that contradicts its signed
  // manifest, or a signed payload that does not decode or is not finite) goes to the
  // coordinator, which checks the proof itself and bans the sender.
  void SendContributionProofs(uint64_t round, uint32_t attempt, AttemptBinding& binding) {
    for (std::string& proof : binding.TakeProofs()) {
      spdlog::error("round {} attempt {}: a contribution contradicts its sender's signed manifest, or its signed "
                    "payload does not decode to finite values; reporting it",
                    round, attempt);
      v1::Envelope e = net::MakeEnvelope(job_id_);
      e.mutable_contribution_proof()->set_round(round);
      e.mutable_contribution_proof()->set_attempt(attempt);
      e.mutable_contribution_proof()->set_mismatch(std::move(proof));
      (void)SendSigned(std::move(e));
    }
  }

  // Forming waits only on the members (a few round trips each), so it gets a fraction of the
  // round: a member that cannot be reached is reported well before the round's deadline.
  Deadline FormationDeadline(Deadline round_deadline) const {
    return std::min(round_deadline, DeadlineAfter(std::max(Millis(10000), 2 * LivenessTimeout(spec_))));
  }

  // Every rank names a collective alike: round, attempt and `name`, which tells the attempt's
  // collectives apart on the wire ("c<index>" for the round's own, in the order they run).
  collectives::CollectiveOptions CollectiveOptionsFor(uint64_t round, uint32_t attempt, const std::string& name,
                                                      Deadline deadline, std::string codec, std::string stream) const {
    collectives::CollectiveOptions opts;
    opts.tag = "r" + std::to_string(round) + "/a" + std::to_string(attempt) + "/" + name;
    opts.deadline = deadline;
    opts.average = true;
    opts.codec = std::move(codec);
    opts.aggregator = aggregator_;
    opts.stream = std::move(stream);
    return opts;
  }

  // diloco-async: round r+1's delayed collective averages the Δ each member reported for round r
  // over the group that ran round r. Waiting for round r+1's RoundStart to start it put the
  // coordinator's round trip (the last report in, the start out) on the critical path: the
  // apply step came before the average. Every member that reported round r starts it at once,
  // as attempt 0 of round r+1 on the group it holds; round r+1 keeps it when its RoundStart
  // names that group and attempt 0 (RunAttempt), and anything else discards it. A member that
  // failed round r drops its group, which fails the others' early collective at once.
  void StartEarlyCollective(uint64_t round) {
    if (spec_.mode() != v1::MODE_DILOCO_ASYNC || round + 1 >= spec_.rounds() || !group_ || group_->broken()) return;
    auto early = std::make_unique<EarlyCollective>();
    early->round = round + 1;
    early->group = group_;
    const collectives::CollectiveOptions opts = CollectiveOptionsFor(
        round + 1, 0, "c0", DeadlineAfter(Millis(spec_.round_timeout_ms())), runtime::JobCodec(spec_), "pseudo-gradient");
    EarlyCollective* e = early.get();  // outlives the call: DiscardEarlyCollective waits for it
    Status started = trainer_->StartNextDelayedAverage([e, opts](std::span<float> values) -> Status {
      auto stats = e->group->Allreduce(values, opts);
      if (!stats.ok()) return stats.status();
      e->sent = stats->bytes_sent;
      e->received = stats->bytes_received;
      return Status::Ok();
    });
    if (!started.ok()) {
      spdlog::warn("cannot start round {}'s collective early: {}", round + 1, started.ToString());
      return;
    }
    spdlog::info("round {}'s delayed collective started as round {} was reported", round + 1, round);
    early_ = std::move(early);
  }

  // Stops the early collective (its group's connections close, so the other members' fail too)
  // and waits for it; the codec streams go back to the state it started from: the reported
  // round's, committed or not.
  void DiscardEarlyCollective() {
    if (!early_) return;
    early_->group->Interrupt();
    trainer_->DiscardNextDelayedAverage();
    if (group_ == early_->group) DropGroup();
    RestoreCodecStates(trainer_->has_tentative_round() ? reported_codecs_ : committed_codecs_);
    spdlog::info("round {}'s early collective discarded", early_->round);
    early_.reset();
  }

  std::shared_ptr<Mailbox> mailbox() {
    std::lock_guard<std::mutex> lock(mu_);
    return mailbox_;
  }

  // True once the attempt in progress is obsolete: a newer RoundStart or an Abort is queued,
  // the coordinator link broke, or the operator asked us to stop.
  bool Superseded() {
    if (StopRequested()) return true;
    auto box = mailbox();
    return !box || box->AttemptObsolete();
  }

  void SetActiveGroup(std::shared_ptr<collectives::Communicator> group) {
    std::lock_guard<std::mutex> lock(active_mu_);
    active_group_ = std::move(group);
  }

  // On the io thread, when a newer RoundStart arrives: a collective blocked on a frozen member
  // fails now instead of at the round's deadline.
  void InterruptActiveGroup() {
    std::lock_guard<std::mutex> lock(active_mu_);
    if (active_group_) active_group_->Interrupt();
  }

  Status FormGroup(const std::vector<collectives::RingMember>& members, uint64_t round,
                   uint32_t attempt, Deadline deadline, collectives::FormControl* control) {
    TRIB_ASSIGN_OR_RETURN(aggregator_, runtime::JobAggregator(spec_));
    if (UsesButterfly()) {
      auto mesh = collectives::Mesh::Form(io_, *ring_listener_, rank_, members, job_id_, round, attempt,
                                          &identity_, deadline, control);
      if (!mesh.ok()) return mesh.status().WithContext("forming the mesh");
      if (butterfly_) {
        butterfly_->ReplaceMesh(std::move(mesh).value());
      } else {
        butterfly_ = std::make_shared<collectives::ButterflyCommunicator>(std::move(mesh).value());
      }
      group_ = butterfly_;
      return Status::Ok();
    }
    if (const uint32_t streams = StreamsPerEdge(spec_); streams > 1) {
      auto rings = collectives::ParallelRing::Form(io_, *ring_listener_, rank_, members, job_id_, round,
                                                   attempt, &identity_, deadline, streams, control);
      if (!rings.ok()) return rings.status().WithContext("forming the ring's " + std::to_string(streams) + " streams");
      group_ = std::make_shared<collectives::ParallelRingCommunicator>(std::move(rings).value());
      spdlog::info("round {} attempt {}: ring of {} with {} TCP streams per edge", round, attempt,
                   members.size(), streams);
      return Status::Ok();
    }
    auto ring = collectives::Ring::Form(io_, *ring_listener_, rank_, members, job_id_, round, attempt,
                                        &identity_, deadline, control);
    if (!ring.ok()) return ring.status().WithContext("forming the ring");
    group_ = std::make_shared<collectives::RingCommunicator>(std::move(ring).value());
    return Status::Ok();
  }

  // Error feedback follows the trainer's commits: what the codec came to owe in a round that did
  // not commit (a retry, a failed or superseded round) is undone with it, so every attempt
  // encodes from the residual the last committed round left. That keeps a retry exact, and it
  // is the chain a verifying job's manifests must continue (docs/VERIFIER.md, "Sent Δ").
  // The states are taken when a round is reported (its collectives are done) and kept when it
  // commits: diloco-async's next collective may already be changing the live ones by then.
  static constexpr std::array<const char*, 2> kCodecStreams = {"pseudo-gradient", "gradients"};
  using CodecStates = std::map<std::string, std::unique_ptr<collectives::CodecState>>;
  CodecStates CodecStatesNow() const {
    CodecStates out;
    if (!butterfly_) return out;
    for (const char* stream : kCodecStreams) {
      const collectives::CodecState* state = butterfly_->codec_state(stream);
      out[stream] = state ? state->Clone() : nullptr;
    }
    return out;
  }
  void RestoreCodecStates(const CodecStates& states) {
    if (!butterfly_) return;
    for (const char* stream : kCodecStreams) {
      auto saved = states.find(stream);
      butterfly_->RestoreCodecState(stream, saved != states.end() && saved->second ? saved->second->Clone() : nullptr);
    }
  }
  void AbandonTentativeRound() {
    DiscardEarlyCollective();  // it averages the abandoned round's Δ
    trainer_->Abandon();
    RestoreCodecStates(committed_codecs_);
    reported_codecs_.clear();
  }

  void DropGroup() {
    if (butterfly_ && group_ == butterfly_) {
      butterfly_->mesh().Abort(Aborted("the round failed at this peer"));
    }
    group_.reset();
  }

  void ReportFailure(const v1::RoundStart& start, const Status& status,
                     const std::vector<uint32_t>& suspects = {}) {
    spdlog::warn("round {} attempt {} failed here: {}", start.round(), start.attempt(), status.ToString());
    v1::Envelope failed = net::MakeEnvelope(job_id_);
    failed.mutable_round_failed()->set_round(start.round());
    failed.mutable_round_failed()->set_attempt(start.attempt());
    failed.mutable_round_failed()->set_reason(status.ToString());
    for (uint32_t r : suspects) {
      if (r != rank_) failed.mutable_round_failed()->add_suspect_ranks(r);
    }
    (void)SendSigned(failed);
  }

  Status OnRoundEnd(const v1::RoundEnd& end) {
    if (!trainer_->has_tentative_round() || end.round() != trainer_->completed_rounds()) {
      return Status::Ok();  // about an attempt we are not part of any more
    }
    if (!end.ok()) {
      AbandonTentativeRound();
      return Aborted("round " + std::to_string(end.round()) + " failed: " + end.error());
    }
    if (end.state_digest() != DigestToBytes(tentative_state_)) {
      // The group committed something else (we were outvoted or out of date): fetch theirs.
      AbandonTentativeRound();
      spdlog::error("round {} committed state {} but this peer computed {}; resyncing", end.round(),
                    Hex(end.state_digest()), ShortHex(tentative_state_));
      return Status::Ok();
    }
    return CommitReportedRound(end.round());
  }

  // The round this peer reported (round == completed_rounds()) is committed with its state.
  Status CommitReportedRound(uint64_t round) {
    TRIB_RETURN_IF_ERROR(trainer_->Commit());
    pending_evals_.Committed(round);
    committed_codecs_ = std::exchange(reported_codecs_, {});
    outcome_.rounds_completed = trainer_->completed_rounds();
    outcome_.rounds_contributed++;
    outcome_.bytes_sent += pending_sent_;
    outcome_.bytes_received += pending_received_;
    outcome_.theta_digest = ToHex(tentative_theta_);
    if (pending_eval_) outcome_.last_eval_loss = *pending_eval_;
    pending_eval_.reset();
    committed_rounds_ = trainer_->completed_rounds();
    if (evaluate_after_commit_ == round) EvaluateBesideTraining(round);
    evaluate_after_commit_.reset();
    PublishState();
    return MaybeCheckpoint();
  }

  // eval_beside_training: the committed θ is copied and evaluated on a thread of its own while
  // the next rounds train; the loss goes with a later report (AttachEarlierEvals).
  void EvaluateBesideTraining(uint64_t round) {
    CollectBackgroundEval(/*wait=*/true);  // one at a time: a slow earlier one is waited for
    Status started = trainer_->StartBackgroundEval(round);
    if (!started.ok()) spdlog::warn("cannot evaluate round {} beside training: {}", round, started.ToString());
  }

  void CollectBackgroundEval(bool wait) {
    if (auto done = trainer_->TakeBackgroundEval(wait)) finished_evals_.push_back(std::move(*done));
  }

  // Every loss not yet acknowledged goes with the report (PendingEvals), the new ones too.
  void AttachEarlierEvals(v1::RoundReport& report, uint64_t round, bool wait) {
    CollectBackgroundEval(wait);
    for (const Trainer::BackgroundEval& e : finished_evals_) {
      if (!e.loss.ok()) {
        spdlog::warn("evaluating round {} beside training failed: {}", e.round, e.loss.status().ToString());
        continue;
      }
      pending_evals_.Add(e.round, *e.loss);
      outcome_.last_eval_loss = *e.loss;
    }
    finished_evals_.clear();
    pending_evals_.AttachTo(report, round);
  }

  static std::string Hex(const std::string& raw) {
    auto d = DigestFromBytes(raw);
    return d.ok() ? ShortHex(*d) : "?";
  }

  void PublishState() {
    state_server_->Publish(trainer_->completed_rounds(), trainer_->CommittedStateDigest(),
                           trainer_->CommittedStateBytes());
  }

  void SendReady(bool sync_failed = false) {
    v1::Envelope ready = net::MakeEnvelope(job_id_);
    ready.mutable_ready()->set_committed_rounds(trainer_->completed_rounds());
    ready.mutable_ready()->set_sync_failed(sync_failed);
    if (trainer_->completed_rounds() > 0) {
      ready.mutable_ready()->set_state_digest(DigestToBytes(trainer_->CommittedStateDigest()));
    }
    (void)SendSigned(ready);
  }

  void OnSyncState(const v1::SyncState& sync) {
    auto digest = DigestFromBytes(sync.state_digest());
    if (!digest.ok()) {
      spdlog::error("coordinator sent a malformed state digest");
      return;
    }
    if (trainer_->has_tentative_round()) AbandonTentativeRound();
    DiscardEarlyCollective();
    if (trainer_->completed_rounds() == sync.committed_rounds() && trainer_->CommittedStateDigest() == *digest) {
      SendReady();  // already there (an earlier instruction for this round got us here)
      return;
    }
    const uint64_t max_bytes = 4 * trainer_->CommittedStateBytes()->size() + (1u << 20);
    const auto start = Clock::now();
    for (const auto& m : sync.sources()) {
      auto source = StateSourceOf(m);
      auto state = source.ok() ? FetchState(io_, identity_, job_id_, *source, sync.committed_rounds(), *digest,
                                            max_bytes, DeadlineAfter(Millis(spec_.round_timeout_ms())))
                               : Result<std::string>(source.status());
      if (!state.ok()) {
        spdlog::warn("state sync from {} failed: {}", m.peer_name(), state.status().ToString());
        continue;
      }
      Status imported = trainer_->ImportState(*state);
      if (!imported.ok()) {
        spdlog::warn("state from {} does not import: {}", m.peer_name(), imported.ToString());
        continue;
      }
      committed_rounds_ = trainer_->completed_rounds();
      outcome_.rounds_completed = trainer_->completed_rounds();
      outcome_.theta_digest = ToHex(trainer_->ThetaDigest());
      PublishState();
      spdlog::info("synced round {} ({} bytes, state {}) from {} in {:.2f} s", sync.committed_rounds(),
                   state->size(), ShortHex(*digest), m.peer_name(), SecondsSince(start));
      SendReady();
      return;
    }
    SendReady(/*sync_failed=*/true);
  }

  Status MaybeCheckpoint() {
    if (options_.checkpoint_dir.empty() || spec_.checkpoint_every() == 0) return Status::Ok();
    const uint64_t done = trainer_->completed_rounds();
    if (done % spec_.checkpoint_every() != 0 && done != spec_.rounds()) return Status::Ok();
    std::error_code ec;
    std::filesystem::create_directories(options_.checkpoint_dir, ec);
    const std::string path =
        options_.checkpoint_dir + "/" + job_id_ + "-shard" + std::to_string(shard_) + ".ckpt";
    TRIB_RETURN_IF_ERROR(trainer_->SaveCheckpoint(path));
    spdlog::info("checkpoint after round {} written to {}", done, path);
    return Status::Ok();
  }

  Result<PeerOutcome> Leave(const std::string& reason) {
    FinishReport();  // the report goes before the leave
    v1::Envelope leave = net::MakeEnvelope(job_id_.empty() ? options_.job_id : job_id_);
    leave.mutable_leave()->set_reason(reason);
    (void)SendSigned(leave);
    if (auto c = coordinator()) (void)c->Flush(DeadlineAfter(Millis(1000)));
    spdlog::info("left the job: {}", reason);
    outcome_.left_early = true;
    return outcome_;
  }

  PeerOptions options_;
  net::IoThread io_;
  asio::steady_timer heartbeat_timer_;
  net::Identity identity_;
  v1::Hardware hardware_ = DetectHardware();
  std::unique_ptr<net::Listener> ring_listener_;
  std::unique_ptr<StateServer> state_server_;
  std::mutex mu_;
  std::shared_ptr<Connection> coordinator_;  // guarded by mu_ (the heartbeat timer reads it)
  std::shared_ptr<Mailbox> mailbox_;         // guarded by mu_
  v1::JobSpec spec_;
  std::string job_id_;
  uint32_t shard_ = 0;
  uint16_t relay_port_ = 0;
  net::PublicKey coordinator_key_{};
  std::unique_ptr<Trainer> trainer_;
  std::unique_ptr<PeerVerification> verification_;  // when the job verifies
  // Openings' bulk downloads started on arrival (MaybePrefetchBulk), by challenge; all guarded
  // by prefetch_mu_ (the io thread starts them, the training thread takes them).
  std::mutex prefetch_mu_;
  std::function<Result<std::string>(const v1::VerifyRequest&)> bulk_fetch_;
  std::function<bool(const v1::VerifyRequest&)> prefetch_wanted_;
  std::map<uint64_t, std::shared_future<Result<std::string>>> prefetched_;
  std::atomic<uint64_t> committed_rounds_{0};
  uint32_t rank_ = 0;
  std::atomic<bool> heartbeats_started_{false};
  std::shared_ptr<collectives::Communicator> group_;  // this round's ring or butterfly
  std::mutex active_mu_;  // guards active_group_: read on the io thread, set on the training thread
  std::shared_ptr<collectives::Communicator> active_group_;  // set while TryRound runs
  std::shared_ptr<collectives::ButterflyCommunicator> butterfly_;  // kept: it owns error feedback
  // Each codec stream's state after the last committed round, and after the round reported and
  // not yet committed (see CodecStatesNow).
  CodecStates committed_codecs_, reported_codecs_;
  // diloco-async: the next round's delayed collective, started when this round was reported
  // (StartEarlyCollective). Its thread writes `sent` and `received` before it returns; the
  // training thread reads them only after the trainer has waited for it.
  struct EarlyCollective {
    uint64_t round = 0;  // the round that takes it
    std::shared_ptr<collectives::Communicator> group;
    uint64_t sent = 0, received = 0;
  };
  std::unique_ptr<EarlyCollective> early_;
  collectives::robust::AggregatorSpec aggregator_;
  std::vector<collectives::RingMember> ring_members_;
  Digest tentative_theta_{}, tentative_state_{};
  std::future<void> report_in_flight_;  // SendReport's thread
  std::optional<double> pending_eval_;
  std::optional<uint64_t> evaluate_after_commit_;  // this attempt's round, when we evaluate it beside training
  std::vector<Trainer::BackgroundEval> finished_evals_;  // collected, not yet in pending_evals_
  PendingEvals pending_evals_;                           // sent until a carrying report commits
  uint64_t pending_sent_ = 0, pending_received_ = 0;
  PeerOutcome outcome_;
};

}  // namespace

Result<PeerOutcome> RunPeer(const PeerOptions& options) {
  if (options.job_id.empty()) return InvalidArgument("a peer needs the job id (--job)");
  if (options.coordinator_port == 0) return InvalidArgument("a peer needs --coordinator HOST:PORT");
  PeerSession session(options);
  return session.Run();
}

}  // namespace tributary::runtime
