// Trainer: one worker's model, optimisers and round logic for the two modes.
//
//   ddp    : every inner step averages gradients across the group (Averager) and takes one
//            shared AdamW step — classic data parallelism.
//   diloco : H local AdamW steps without communication, then the pseudo-gradient
//            Δ = θ_global − θ_local is averaged and an outer Nesterov-momentum SGD step updates
//            θ_global (Douillard et al., DiLoCo). The inner AdamW state stays local.
//
// Batches are pure functions of (job seed, shard, num_shards, round, step), so a verifier can
// recompute any step. On one machine and thread count the whole run is bit-reproducible, and a
// checkpoint resumes it bit-exactly. Not thread-safe: one thread drives a Trainer.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/digest.h"
#include "core/status.h"
#include "proto/tributary.pb.h"
#include "runtime/training_data.h"
#include "verifier/chain_ends.h"
#include "verifier/training_state.h"

namespace tributary::runtime {

// Replaces `values` in place by their average over the group. Must give bit-identical results on
// every member. For a single process it is the identity.
using Averager = std::function<Status(std::span<float> values)>;

// A state in its canonical bytes (Trainer::ExportCommittedState) with its digests.
struct StateEncoding {
  std::shared_ptr<const std::string> bytes;
  Digest state{};  // SHA-256 of bytes (CommittedStateDigest / CurrentStateDigest)
  Digest theta{};  // ThetaDigest of the state's θ (tentative encodings only)
};

struct RoundStats {
  uint64_t round = 0;
  double train_loss = 0;       // mean inner-step loss of this round
  uint64_t tokens = 0;         // tokens this worker trained on this round
  double compute_seconds = 0;  // forward + backward + optimiser
  double comm_seconds = 0;     // time inside the Averager
};

struct WorkerPlacement {
  uint32_t shard = 0;       // which slice of the train split this worker samples from
  uint32_t num_shards = 1;
  uint32_t batch_size = 0;  // 0 = the spec's batch_size
};

// What the trainer did in one inner step: the fields of a verifier::StepLeaf (the caller adds the
// job id and determinism class) plus the state the step started from (a prover's opening).
struct StepRecord {
  uint64_t round = 0;
  uint64_t step = 0;      // inner step within the round
  Digest state_before{};  // verifier::StepStateDigest(ThetaDigest, verifier::OptimizerDigest)
  Digest batch{};         // models::BatchDigest of the batch actually trained on
  Digest update{};        // DiLoCo: the state digest after the step; DDP: verifier::FloatsDigest
                          // of the raw local gradient, before averaging and clipping
  double loss = 0;        // the exact value whose bits enter the leaf
  // DiLoCo: the halves of state_before and of update (StepStateDigest(parameters, optimiser)),
  // which a round report's chain ends name (verifier/chain_ends.h).
  verifier::StateHalves halves_before, halves_after;
  verifier::TrainingState before;  // θ and the inner AdamW state before the step
  // DiLoCo, the round's last step only: the state after it (θ_end, whose digest is `update`),
  // from which θ_start − θ_end = Δ can be audited.
  std::optional<verifier::TrainingState> end;
};
using StepObserver = std::function<void(StepRecord record)>;

// Misbehaviour for the attack harness only (tests/adversary, binary tributary_adversary). No
// normal peer sets it; unset, the trainer does exactly what it does without it. In DDP only the
// plan applies (a skipped step contributes a zero gradient); `after` is DiLoCo's.
struct StepTamper {
  struct Plan {
    bool skip = false;                  // claim the step without computing it
    uint32_t shard_shift = 0;           // train on shard (own + shift) mod num_shards
  };
  std::function<Plan(uint64_t round, uint64_t step)> plan;
  // Rewrites θ after the step (before: θ before the step).
  std::function<void(uint64_t round, uint64_t step, std::span<const float> before,
                     std::span<float> after)>
      after;
  // DiLoCo: rewrites the state a round's first step starts from (θ and the AdamW moments)
  // before that step is recorded.
  std::function<void(uint64_t round, verifier::TrainingState& state)> round_start;
};

class Trainer {
 public:
  // `device` (runtime/compute_device.h) holds the model and its inner optimiser; everything
  // the trainer hands out (θ, Δ, gradients, states, digests) is on the CPU whatever it is.
  static Result<std::unique_ptr<Trainer>> Create(const v1::JobSpec& spec, TrainingData data,
                                                 WorkerPlacement placement, std::string_view device = "cpu");
  ~Trainer();

  // Runs round `completed_rounds()`; on success completed_rounds() advances by one.
  Result<RoundStats> RunRound(const Averager& average);

  // Tentative rounds, for groups whose members may fail mid-round. TryRound runs round
  // completed_rounds() but keeps the previous state; Commit() makes the result permanent,
  // Abandon() restores exactly the last committed state. A DiLoCo round retried after Abandon()
  // reuses its pseudo-gradient (the inner steps are not repeated; the source buffer is kept).
  // DDP rounds repeat their steps from the committed state.
  Result<RoundStats> TryRound(const Averager& average);
  // A grouped DiLoCo round whose members hold different committed states (RoundStart.mix):
  // after Δ, `mix` averages [θ ‖ outer momentum] exactly (fp32 mean, no codec) and the outer
  // step starts from that mean, so every member ends bit-identical. Empty `mix` = TryRound above.
  Result<RoundStats> TryRound(const Averager& average, const Averager& mix);
  // diloco-async: starts the next round's delayed collective now, on a thread of its own, over
  // this peer's Δ of the tentative round (exactly what that round's TryRound would send), so it
  // runs while the report travels to the coordinator and the next RoundStart comes back. The
  // next TryRound waits for it at the apply step instead of starting its own. Abandon(),
  // ImportState(), LoadCheckpoint() and DiscardNextDelayedAverage() drop it, waiting for its
  // thread: make `average` fail first (interrupt its group). FailedPrecondition unless the job is
  // diloco-async and a tentative round that is not the job's last holds its Δ.
  Status StartNextDelayedAverage(Averager average);
  void DiscardNextDelayedAverage();
  bool has_next_delayed_average() const;
  Status Commit();
  void Abandon();
  bool has_tentative_round() const;

  // The state every member of a group shares after a committed round (θ plus outer momentum in
  // DiLoCo, θ plus the AdamW state in DDP), in a canonical byte form: what a late joiner
  // downloads. StateDigest covers all of it; importing checks the job id and the digest.
  Result<std::string> ExportCommittedState() const;
  // The same bytes, shared: encoded once per committed state (the report's encoding is reused).
  std::shared_ptr<const std::string> CommittedStateBytes() const;
  Status ImportState(std::string_view bytes);
  Digest CommittedStateDigest() const;
  // Digest of the state Commit() would make permanent now (the committed one if no round is
  // tentative): what members compare before the coordinator commits a round.
  Digest CurrentStateDigest() const;
  // The tentative round's encoding, for its report: the state is snapshot on the calling thread,
  // and the first thread to wait for the future encodes and hashes it (deferred), so the report's
  // thread can while the training thread runs ahead. The future reads nothing this trainer
  // changes; CurrentStateDigest and Commit reuse it. FailedPrecondition without a tentative round.
  Result<std::shared_future<StateEncoding>> EncodeTentativeState();

  // Trains `steps` throwaway steps on a copy of the model and returns tokens per second: the
  // speed of this host at this model (the verifier benchmark). Leaves this trainer's state untouched.
  Result<double> MeasureTokensPerSecond(int steps) const;
  // Mean loss of θ on the job's fixed validation batches.
  Result<double> EvalLoss();
  // eval_beside_training: EvalLoss() of θ as it is now, computed on a thread of its own (on a
  // copy of the model) while this trainer goes on; `round` labels it. One at a time:
  // FailedPrecondition while an earlier one has not been taken. Bit-identical to EvalLoss().
  struct BackgroundEval {
    uint64_t round = 0;
    Result<double> loss;
  };
  Status StartBackgroundEval(uint64_t round);
  // The evaluation started last, once finished (or waiting for it when `wait`); nullopt when
  // none is running or it has not finished.
  std::optional<BackgroundEval> TakeBackgroundEval(bool wait);

  // Called on the training thread after every inner step, before the next one starts (a DiLoCo
  // retry that reuses its pseudo-gradient runs no steps, so it reports none). Unset (the
  // default): no state is captured and no digest computed.
  // DiLoCo: runs inner steps of the next round (the one after the tentative round, or after the
  // last committed one) before its RoundStart arrives, until `stop()` or until the next step
  // would need that round's collective (async: the apply step). They are kept aside; the
  // round's TryRound resumes after them when it starts from the same point, which makes them
  // exactly the steps it would have run. θ, the optimizer and every digest stay as they were.
  // Does nothing for DDP or with a step observer or tamper (their steps must be recorded).
  Status Speculate(const std::function<bool()>& stop);
  void SetStepObserver(StepObserver observer);
  void SetStepTamper(StepTamper tamper);  // attack harness only (see StepTamper)
  // verifier::FloatsDigest of the pseudo-gradient of the tentative DiLoCo round (what this
  // worker averages). FailedPrecondition without one (DDP, or no tentative round).
  Result<Digest> PseudoGradientDigest() const;

  uint64_t completed_rounds() const;
  Digest ThetaDigest() const;  // SHA-256 of θ in canonical order (what peers compare)
  int64_t num_parameters() const;
  uint64_t tokens_per_round() const;

  // Atomic write (temp + fsync + rename) of everything needed to continue bit-exactly; the file
  // carries a SHA-256 of its payload and the job id, both checked on load.
  Status SaveCheckpoint(const std::string& path) const;
  Status LoadCheckpoint(const std::string& path);

 private:
  struct Impl;
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::runtime

namespace tributary::runtime {
// Pins libtorch's intra-/inter-op threads and OpenBLAS's threads for this process. Bitwise
// reproducibility holds only at a fixed thread count, so every worker of a job pins the same.
void PinComputeThreads(int threads);
}  // namespace tributary::runtime
