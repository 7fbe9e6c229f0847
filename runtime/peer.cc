#include "runtime/peer.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>

#include "collectives/allreduce.h"
#include "collectives/ring.h"
#include "core/clock.h"
#include "core/digest.h"
#include "net/connection.h"
#include "net/frame.h"
#include "net/io_thread.h"
#include "runtime/job_spec.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"

namespace tributary::runtime {
namespace {

using net::Connection;

std::vector<collectives::RingMember> MembersOf(const v1::RoundStart& start) {
  std::vector<collectives::RingMember> out;
  for (const auto& m : start.members()) {
    out.push_back({m.rank(), m.host(), static_cast<uint16_t>(m.port()), m.peer_name()});
  }
  return out;
}

bool SameMembers(const std::vector<collectives::RingMember>& a,
                 const std::vector<collectives::RingMember>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].rank != b[i].rank || a[i].host != b[i].host || a[i].port != b[i].port) return false;
  }
  return true;
}

class PeerSession {
 public:
  explicit PeerSession(const PeerOptions& options) : options_(options), io_("peer-io") {}

  Result<PeerOutcome> Run() {
    TRIB_RETURN_IF_ERROR(Join());
    for (;;) {
      TRIB_ASSIGN_OR_RETURN(v1::Envelope message, ReceiveFromCoordinator(idle_deadline()));
      switch (message.payload_case()) {
        case v1::Envelope::kRoundStart: {
          Status st = RunRound(message.round_start());
          if (!st.ok()) {
            ReportFailure(message.round_start().round(), st);
            return st;
          }
          break;
        }
        case v1::Envelope::kJobDone:
          spdlog::info("job {} done after {} rounds", job_id_, outcome_.rounds_completed);
          return outcome_;
        default:
          return ProtocolError("coordinator sent an unexpected " + net::PayloadName(message));
      }
    }
  }

 private:
  Deadline idle_deadline() const {
    // Between rounds the coordinator may be waiting on the slowest peer for a whole round.
    return DeadlineAfter(Millis(2 * spec_.round_timeout_ms() + 10000));
  }

  Status Join() {
    TRIB_ASSIGN_OR_RETURN(listener_, net::Listener::Bind(io_.context(), options_.listen_host, 0));
    TRIB_ASSIGN_OR_RETURN(
        coordinator_,
        Connection::Dial(io_.context(), options_.coordinator_host, options_.coordinator_port,
                         DeadlineAfter(Millis(options_.connect_timeout_ms))));
    v1::Envelope hello = net::MakeEnvelope(options_.job_id);
    hello.mutable_hello()->set_role(v1::ROLE_PEER);
    hello.mutable_hello()->set_peer_name(options_.name);
    hello.mutable_hello()->set_listen_port(listener_->port());
    const Deadline deadline = DeadlineAfter(Millis(options_.connect_timeout_ms));
    TRIB_RETURN_IF_ERROR(coordinator_->Send(hello, deadline));
    TRIB_ASSIGN_OR_RETURN(v1::Envelope ack, ReceiveFromCoordinator(deadline));
    if (ack.payload_case() != v1::Envelope::kHelloAck) {
      return ProtocolError("coordinator answered Hello with " + net::PayloadName(ack));
    }
    spec_ = ack.hello_ack().spec();
    job_id_ = JobIdOf(spec_);
    if (job_id_ != options_.job_id) {
      return ProtocolError("coordinator's job spec hashes to " + job_id_ + ", not the job id " +
                           options_.job_id + " we asked for");
    }
    TRIB_RETURN_IF_ERROR(ValidateJobSpec(spec_));
    TRIB_ASSIGN_OR_RETURN(data_, LoadTrainingData(options_.corpus_dir, spec_));
    spdlog::info("joined job {} ({} mode, H={}, {} rounds); listening for ring on {}:{}", job_id_,
                 ModeName(spec_.mode()), spec_.inner_steps(), spec_.rounds(),
                 options_.listen_host, listener_->port());
    return Status::Ok();
  }

  // Receives one message from the coordinator, turning Error/Abort into a failed Status.
  Result<v1::Envelope> ReceiveFromCoordinator(Deadline deadline) {
    auto message = coordinator_->Receive(deadline);
    if (!message.ok()) return message.status().WithContext("coordinator");
    TRIB_RETURN_IF_ERROR(net::CheckEnvelope(*message, options_.job_id).WithContext("coordinator"));
    if (message->has_error()) {
      return Aborted("coordinator refused: " + v1::ErrorCode_Name(message->error().code()) + ": " +
                     message->error().message());
    }
    if (message->has_abort()) {
      return Aborted("coordinator aborted round " + std::to_string(message->abort().round()) +
                     ": " + message->abort().reason());
    }
    return message;
  }

  Status EnsureTrainer(uint32_t rank, uint32_t world) {
    if (trainer_ && rank == rank_ && world == world_) return Status::Ok();
    if (trainer_) {
      return FailedPrecondition("group changed from rank " + std::to_string(rank_) + "/" +
                                std::to_string(world_) + " to " + std::to_string(rank) + "/" +
                                std::to_string(world) + "; re-sharding needs the launcher");
    }
    rank_ = rank;
    world_ = world;
    TRIB_ASSIGN_OR_RETURN(trainer_, Trainer::Create(spec_, data_, WorkerPlacement{rank, world, 0}));
    spdlog::info("rank {}/{}: model has {} parameters", rank, world, trainer_->num_parameters());
    return Status::Ok();
  }

  Status RunRound(const v1::RoundStart& start) {
    const uint64_t round = start.round();
    if (round != outcome_.rounds_completed) {
      return ProtocolError("coordinator started round " + std::to_string(round) +
                           " but this peer has completed " +
                           std::to_string(outcome_.rounds_completed));
    }
    const auto members = MembersOf(start);
    if (start.your_rank() >= members.size()) return ProtocolError("rank outside the member list");
    TRIB_RETURN_IF_ERROR(EnsureTrainer(start.your_rank(), static_cast<uint32_t>(members.size())));
    const Deadline deadline = DeadlineAfter(Millis(spec_.round_timeout_ms()));
    if (!ring_ || !SameMembers(members, ring_members_)) {
      ring_.reset();
      TRIB_ASSIGN_OR_RETURN(ring_, collectives::Ring::Form(io_, *listener_, rank_, members,
                                                          job_id_, round, deadline));
      ring_members_ = members;
    }

    uint64_t collective = 0, sent = 0, received = 0;
    Averager average = [&](std::span<float> values) -> Status {
      collectives::AllreduceOptions opts;
      opts.tag = "r" + std::to_string(round) + "/c" + std::to_string(collective++);
      opts.deadline = deadline;
      opts.average = true;
      auto stats = collectives::RingAllreduce(*ring_, values, opts);
      if (!stats.ok()) return stats.status();
      sent += stats->bytes_sent;
      received += stats->bytes_received;
      return Status::Ok();
    };
    auto stats = trainer_->RunRound(average);
    if (!stats.ok()) {
      ring_.reset();  // closing our ring sockets tells the neighbours at once
      return stats.status();
    }
    v1::Envelope report = net::MakeEnvelope(job_id_);
    v1::RoundReport* r = report.mutable_round_report();
    r->set_round(round);
    r->set_rank(rank_);
    const Digest theta = trainer_->ThetaDigest();
    r->set_theta_digest(DigestToBytes(theta));
    r->set_train_loss(stats->train_loss);
    r->set_tokens(stats->tokens);
    r->set_bytes_sent(sent);
    r->set_bytes_received(received);
    r->set_compute_seconds(stats->compute_seconds);
    r->set_comm_seconds(stats->comm_seconds);
    if (start.evaluate() && rank_ == 0) {
      TRIB_ASSIGN_OR_RETURN(double eval, trainer_->EvalLoss());
      r->set_has_eval(true);
      r->set_eval_loss(eval);
      outcome_.last_eval_loss = eval;
    }
    TRIB_RETURN_IF_ERROR(coordinator_->Send(report, deadline).WithContext("sending round report"));
    spdlog::info("round {} done: loss {:.4f}, θ {}, compute {:.2f} s, comm {:.2f} s, {} bytes sent",
                 round, stats->train_loss, ShortHex(theta), stats->compute_seconds,
                 stats->comm_seconds, sent);

    TRIB_ASSIGN_OR_RETURN(v1::Envelope end, ReceiveFromCoordinator(idle_deadline()));
    if (!end.has_round_end() || end.round_end().round() != round) {
      return ProtocolError("expected RoundEnd for round " + std::to_string(round) + ", got " +
                           net::PayloadName(end));
    }
    if (!end.round_end().ok()) return Aborted("round " + std::to_string(round) + " failed: " + end.round_end().error());
    for (const auto& d : end.round_end().theta_digests()) {
      if (d != DigestToBytes(theta)) {
        return Corruption("θ digest mismatch after round " + std::to_string(round));
      }
    }
    outcome_.rounds_completed = round + 1;
    outcome_.rank = rank_;
    outcome_.bytes_sent += sent;
    outcome_.bytes_received += received;
    outcome_.theta_digest = ToHex(theta);
    return MaybeCheckpoint(round);
  }

  Status MaybeCheckpoint(uint64_t round) {
    if (options_.checkpoint_dir.empty() || spec_.checkpoint_every() == 0) return Status::Ok();
    if ((round + 1) % spec_.checkpoint_every() != 0 && round + 1 != spec_.rounds()) {
      return Status::Ok();
    }
    std::error_code ec;
    std::filesystem::create_directories(options_.checkpoint_dir, ec);
    const std::string path =
        options_.checkpoint_dir + "/" + job_id_ + "-rank" + std::to_string(rank_) + ".ckpt";
    TRIB_RETURN_IF_ERROR(trainer_->SaveCheckpoint(path));
    spdlog::info("checkpoint after round {} written to {}", round, path);
    return Status::Ok();
  }

  void ReportFailure(uint64_t round, const Status& status) {
    spdlog::error("round {} failed: {}", round, status.ToString());
    if (!coordinator_ || coordinator_->closed()) return;
    v1::Envelope abort = net::MakeEnvelope(job_id_.empty() ? options_.job_id : job_id_);
    abort.mutable_abort()->set_round(round);
    abort.mutable_abort()->set_reason(status.ToString());
    (void)coordinator_->Send(abort, DeadlineAfter(Millis(1000)));
  }

  PeerOptions options_;
  net::IoThread io_;
  std::unique_ptr<net::Listener> listener_;
  std::shared_ptr<Connection> coordinator_;
  v1::JobSpec spec_;
  std::string job_id_;
  TrainingData data_;
  std::unique_ptr<Trainer> trainer_;
  uint32_t rank_ = 0, world_ = 0;
  std::unique_ptr<collectives::Ring> ring_;
  std::vector<collectives::RingMember> ring_members_;
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
