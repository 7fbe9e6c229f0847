#include "runtime/trainer.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <future>
#include <sstream>
#include <utility>

#include "core/clock.h"
#include "core/files.h"
#include "models/dataset.h"
#include "models/evaluate.h"
#include "models/language_model.h"
#include "models/parameters.h"
#include "runtime/async_outer.h"
#include "runtime/job_spec.h"
#include "runtime/step_kernel.h"
#include "runtime/compute_device.h"
#include "runtime/step_kernel_internal.h"
#include "verifier/commitment.h"
#include "verifier/replay.h"

namespace tributary::runtime {
namespace {

constexpr std::string_view kCheckpointMagic = "TRIBCKPT1\n";

using internal::ModelConfigOf;  // shared with StepKernel (runtime/step_kernel_internal.h)

std::span<float> FloatSpan(torch::Tensor& t) {
  return {t.data_ptr<float>(), static_cast<size_t>(t.numel())};
}

}  // namespace

struct Trainer::Impl {
  v1::JobSpec spec;
  std::string job_id;
  TrainingData data;
  WorkerPlacement placement;
  std::string device = "cpu";  // where model and inner live (runtime/compute_device.h)
  std::shared_ptr<models::LanguageModel> model;
  std::unique_ptr<torch::optim::AdamW> inner;
  torch::Tensor outer_momentum;  // DiLoCo only; undefined until the first outer step
  std::vector<models::Batch> validation;
  uint64_t completed_rounds = 0;

  // The last committed state, restored by Abandon() and served to late joiners.
  struct AdamSlot {
    bool present = false;
    int64_t step = 0;
    torch::Tensor exp_avg, exp_avg_sq;
  };
  struct Snapshot {
    torch::Tensor params;    // flat θ
    torch::Tensor momentum;  // DiLoCo outer momentum (undefined before the first outer step)
    std::vector<AdamSlot> adam;  // DDP: the shared AdamW state
  };
  Snapshot committed;
  bool tentative = false;
  // DiLoCo: the pseudo-gradient of round `delta_round`, kept so a retried round does not
  // repeat its inner steps (and sends exactly the same contribution).
  torch::Tensor cached_delta;
  uint64_t delta_round = UINT64_MAX;
  double cached_loss = 0;
  // diloco-async: this peer's Δ of committed round `pending_round`, averaged and applied during
  // the next round. This peer's own: not part of the shared state (runtime/async_outer.h).
  torch::Tensor pending_delta;
  uint64_t pending_round = UINT64_MAX;
  // DiLoCo: the first `steps` inner steps of round `round`, done before that round's TryRound
  // got to them, which resumes after them when it starts from the same point. Two sources:
  // Trainer::Speculate runs them ahead of the RoundStart (kept outside the visible state: the
  // model and the optimizer hold what they held before); a diloco-async round whose delayed
  // collective failed at the apply step leaves the steps before it (they do not depend on that
  // collective, and the optimizer already took them: recomputing them would not be exact).
  // The steps' parameters and optimizer state are kept per parameter, so that SwapAhead trades
  // them with the model's by handle instead of copying both ways around every run ahead (that
  // copying cost a diloco-async peer ~6 ms of a ~1 s round on a loaded 2-core host).
  struct Ahead {
    uint64_t round = UINT64_MAX;
    uint64_t version = UINT64_MAX;  // start_version when `start` was last confirmed
    torch::Tensor start;            // flat: where the round starts; must match when it does start
    std::vector<torch::Tensor> params;  // by parameter: the local model after `steps` steps
    std::vector<AdamSlot> adam;         // by parameter: the optimizer after them
    uint64_t steps = 0;
    double loss_sum = 0, compute_seconds = 0;
  };
  Ahead ahead;
  // Bumped whenever the next round's start may have moved (a round tried or abandoned, a state
  // imported or loaded), so Speculate, called between every two coordinator messages, knows its
  // steps still apply without flattening θ to recompute that start.
  uint64_t start_version = 0;
  StepObserver observer;  // verifier hook (SetStepObserver)
  StepTamper tamper;      // attack harness only

  std::vector<torch::Tensor> Params() const { return model->parameters(); }

  torch::optim::AdamWParamState* AdamState(const torch::Tensor& p) const {
    auto& state = inner->state();
    auto it = state.find(internal::OptimizerStateKey(*inner, p));
    if (it == state.end()) return nullptr;
    return static_cast<torch::optim::AdamWParamState*>(it->second.get());
  }

  // The optimizer's state for `p` as a slot that shares its tensors (absent: not present).
  AdamSlot SlotOf(const torch::Tensor& p) const {
    const torch::optim::AdamWParamState* st = AdamState(p);
    if (st == nullptr) return {};
    return {.present = true, .step = st->step(), .exp_avg = st->exp_avg(), .exp_avg_sq = st->exp_avg_sq()};
  }

  // Makes `slot`'s tensors (not copies) the optimizer's state for `p`; an absent slot erases it.
  void PutSlot(const torch::Tensor& p, AdamSlot slot) {
    auto& state = inner->state();
    const auto key = internal::OptimizerStateKey(*inner, p);
    if (!slot.present) {
      state.erase(key);
      return;
    }
    auto st = std::make_unique<torch::optim::AdamWParamState>();
    st->step(slot.step);
    st->exp_avg(std::move(slot.exp_avg));
    st->exp_avg_sq(std::move(slot.exp_avg_sq));
    state[key] = std::move(st);
  }

  static AdamSlot CloneSlot(const AdamSlot& slot) {
    if (!slot.present) return {};
    return {.present = true, .step = slot.step, .exp_avg = slot.exp_avg.clone(), .exp_avg_sq = slot.exp_avg_sq.clone()};
  }

  Snapshot TakeSnapshot() const {
    Snapshot snap;
    snap.params = models::FlattenParameters(*model);
    if (outer_momentum.defined()) snap.momentum = outer_momentum.clone();
    if (spec.mode() == v1::MODE_DDP) snap.adam = CopyAdam();
    return snap;
  }

  // Copies of the model's parameters, by parameter, on the model's device.
  std::vector<torch::Tensor> CloneParams() const {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> out;
    for (const auto& p : Params()) out.push_back(p.detach().clone());
    return out;
  }

  // `flat` (a flat θ on the CPU) cut into the model's parameter shapes, on the model's device.
  std::vector<torch::Tensor> SplitLikeParams(const torch::Tensor& flat) const {
    std::vector<torch::Tensor> out;
    int64_t offset = 0;
    for (const auto& p : Params()) {
      out.push_back(flat.narrow(0, offset, p.numel())
                        .reshape(p.sizes())
                        .to(p.device(), p.scalar_type(), /*non_blocking=*/false, /*copy=*/true));
      offset += p.numel();
    }
    return out;
  }

  // Trades the model's parameter values and optimizer state with `ahead`'s, by handle: no
  // tensor is copied. Its own inverse: once to run the steps ahead in the model, once more to
  // put the visible state back.
  void SwapAhead() {
    torch::NoGradGuard no_grad;
    auto params = Params();
    for (size_t i = 0; i < params.size(); ++i) {
      torch::Tensor visible = params[i].detach();  // a second handle on the same storage
      params[i].set_data(ahead.params[i]);
      ahead.params[i] = std::move(visible);
      AdamSlot visible_adam = SlotOf(params[i]);
      PutSlot(params[i], std::move(ahead.adam[i]));
      ahead.adam[i] = std::move(visible_adam);
    }
  }

  std::vector<AdamSlot> CopyAdam() const {
    std::vector<AdamSlot> out;
    for (const auto& p : Params()) out.push_back(CloneSlot(SlotOf(p)));
    return out;
  }

  void RestoreAdam(const std::vector<AdamSlot>& slots) {
    auto params = Params();
    for (size_t i = 0; i < params.size() && i < slots.size(); ++i) PutSlot(params[i], CloneSlot(slots[i]));
  }

  Status RestoreSnapshot(const Snapshot& snap) {
    TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(*model, snap.params));
    outer_momentum = snap.momentum.defined() ? snap.momentum.clone() : torch::Tensor();
    if (spec.mode() == v1::MODE_DDP) RestoreAdam(snap.adam);
    return Status::Ok();
  }

  uint64_t TotalSteps() const { return uint64_t{spec.rounds()} * spec.inner_steps(); }

  Result<models::Batch> BatchFor(uint64_t round, uint64_t step,
                                 std::optional<uint32_t> shard = std::nullopt) const {
    models::BatchKey key{spec.seed(), shard.value_or(placement.shard), placement.num_shards, round, step};
    return data.dataset->TrainBatch(key, static_cast<int>(placement.batch_size),
                                    static_cast<int>(spec.context()));
  }

  // Forward + backward for one batch (the arithmetic StepKernel replays); returns the loss.
  // Gradients are left in the parameters.
  Result<double> ForwardBackward(uint64_t round, uint64_t step, Digest* batch_digest = nullptr,
                                 std::optional<uint32_t> shard = std::nullopt) {
    TRIB_ASSIGN_OR_RETURN(models::Batch batch, BatchFor(round, step, shard));
    if (batch_digest) *batch_digest = models::BatchDigest(batch);
    auto loss = internal::ForwardBackward(*model, batch);
    if (!loss.ok()) {
      return FailedPrecondition("training loss became non-finite at round " +
                                std::to_string(round) + " step " + std::to_string(step));
    }
    return loss;
  }

  void ClipAndStep(uint64_t global_step) {
    internal::ApplyInnerStep(*model, *inner, InnerHyper(spec, global_step));
  }

  // One local (DiLoCo inner) step, reported to the observer and bent by the tamper hook when
  // they are set. `before` carries the state the step starts from (and its digest) between
  // steps, so each step captures and digests the state once.
  struct Carried {
    verifier::TrainingState state;
    internal::StateDigests digests;
    bool valid = false;
  };
  Result<double> LocalInnerStep(uint64_t round, uint64_t step, Carried& before) {
    const uint64_t global = round * spec.inner_steps() + step;
    if (!observer && !tamper.plan && !tamper.after) {
      TRIB_ASSIGN_OR_RETURN(double loss, ForwardBackward(round, step));
      ClipAndStep(global);
      return loss;
    }
    if (observer && !before.valid) {
      TRIB_ASSIGN_OR_RETURN(before.state, internal::CaptureState(*model, *inner));
      before.digests = internal::StateDigestsOfLoaded(*model, before.state);
      before.valid = true;
    }
    const StepTamper::Plan plan = tamper.plan ? tamper.plan(round, step) : StepTamper::Plan{};
    torch::Tensor theta_before;
    if (tamper.after) theta_before = models::FlattenParameters(*model);
    StepRecord record;
    record.round = round;
    record.step = step;
    if (!plan.skip) {
      std::optional<uint32_t> shard;
      if (plan.shard_shift % placement.num_shards != 0) {
        shard = (placement.shard + plan.shard_shift) % placement.num_shards;
      }
      TRIB_ASSIGN_OR_RETURN(record.loss, ForwardBackward(round, step, &record.batch, shard));
      ClipAndStep(global);
    }
    if (tamper.after) {
      torch::Tensor after = models::FlattenParameters(*model);
      tamper.after(round, step, {theta_before.data_ptr<float>(), static_cast<size_t>(theta_before.numel())},
                   FloatSpan(after));
      TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(*model, after));
    }
    if (!observer) return record.loss;
    TRIB_ASSIGN_OR_RETURN(verifier::TrainingState after_state, internal::CaptureState(*model, *inner));
    const internal::StateDigests after_digests = internal::StateDigestsOfLoaded(*model, after_state);
    record.state_before = before.digests.state;
    record.halves_before = before.digests.halves;
    record.update = after_digests.state;
    record.halves_after = after_digests.halves;
    record.before = std::move(before.state);
    before.state = std::move(after_state);
    before.digests = after_digests;
    if (step + 1 == spec.inner_steps()) record.end = before.state;
    const double loss = record.loss;
    observer(std::move(record));
    return loss;
  }

  Result<RoundStats> RunDdpRound(const Averager& average) {
    RoundStats stats;
    const uint64_t round = completed_rounds;
    double loss_sum = 0;
    for (uint64_t step = 0; step < spec.inner_steps(); ++step) {
      auto t0 = Clock::now();
      StepRecord record;
      if (observer) {
        TRIB_ASSIGN_OR_RETURN(record.before, internal::CaptureState(*model, *inner));
        record.state_before = internal::StateDigestOfLoaded(*model, record.before);
      }
      // The harness's plan bends the contribution: a skipped step claims a zero gradient.
      const StepTamper::Plan plan = tamper.plan ? tamper.plan(round, step) : StepTamper::Plan{};
      double loss = 0;
      torch::Tensor grads;
      if (plan.skip) {
        grads = torch::zeros({models::NumParameters(*model)});
      } else {
        std::optional<uint32_t> shard;
        if (plan.shard_shift % placement.num_shards != 0) {
          shard = (placement.shard + plan.shard_shift) % placement.num_shards;
        }
        TRIB_ASSIGN_OR_RETURN(loss, ForwardBackward(round, step, &record.batch, shard));
        grads = models::FlattenGradients(*model);
      }
      loss_sum += loss;
      if (observer) {
        record.round = round;
        record.step = step;
        record.loss = loss;
        record.update = verifier::FloatsDigest(FloatSpan(grads));
        observer(std::move(record));
      }
      stats.compute_seconds += SecondsSince(t0);
      auto t1 = Clock::now();
      TRIB_RETURN_IF_ERROR(average(FloatSpan(grads)).WithContext(
          "averaging gradients of round " + std::to_string(round) + " step " + std::to_string(step)));
      stats.comm_seconds += SecondsSince(t1);
      auto t2 = Clock::now();
      TRIB_RETURN_IF_ERROR(models::AssignFlatGradients(*model, grads));
      ClipAndStep(round * spec.inner_steps() + step);
      stats.compute_seconds += SecondsSince(t2);
    }
    stats.train_loss = loss_sum / spec.inner_steps();
    return stats;
  }

  Result<RoundStats> RunDilocoRound(const Averager& average, const Averager& mix) {
    RoundStats stats;
    const uint64_t round = completed_rounds;
    const bool async = spec.mode() == v1::MODE_DILOCO_ASYNC;
    // diloco-async: the previous round's Δ is averaged on another thread during the inner steps,
    // by the collective started early for this round if there is one.
    std::optional<EarlyAverage> started_early;
    if (early && early->round == round) started_early.emplace(std::move(*early));
    early.reset();
    BackgroundAverage started_here = async && round > 0 && !started_early
                                         ? BackgroundAverage::Start(average, PreviousDelta(round))
                                         : BackgroundAverage();
    BackgroundAverage& in_flight = started_early ? started_early->in_flight : started_here;
    // diloco-async: θ_{r+1}, once the delayed average has been applied during the inner steps.
    std::optional<torch::Tensor> applied_theta;
    if (delta_round != round) {
      double loss_sum = 0;
      auto t0 = Clock::now();
      torch::Tensor start = RoundStart(round, committed.params);
      uint64_t first_step = 0;
      if (ahead.round == round && ahead.steps > 0 && torch::equal(ahead.start, start)) {
        // Those steps started from this very point with this very optimizer state (nothing
        // touches it between rounds), so they are the steps this round would run. The visible
        // state they trade places with is dropped with `ahead` below.
        SwapAhead();
        loss_sum = ahead.loss_sum;
        first_step = ahead.steps;
        stats.compute_seconds += ahead.compute_seconds;
      } else if (async) {  // the model holds θ; the eager start differs from it
        TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(*model, start));
      }
      ahead = Ahead{};
      if (tamper.round_start && first_step == 0) {  // attack harness only
        TRIB_ASSIGN_OR_RETURN(verifier::TrainingState state, internal::CaptureState(*model, *inner));
        tamper.round_start(round, state);
        TRIB_RETURN_IF_ERROR(internal::LoadState(*model, *inner, state));
      }
      Carried carried;
      const uint64_t apply_from = AsyncApplyStep(spec);
      for (uint64_t step = first_step; step < spec.inner_steps(); ++step) {
        // async_apply_when_ready: past k, the steps go on until the average has arrived, and wait
        // for it only before the round's last step.
        const bool apply_now = spec.async_apply_when_ready()
                                   ? step >= apply_from && (in_flight.ready() || step + 1 == spec.inner_steps())
                                   : step == apply_from;
        if (async && in_flight.started() && !applied_theta && apply_now) {
          stats.compute_seconds += SecondsSince(t0);
          auto applied = ApplyDelayedAverage(in_flight, round, start, stats);
          if (!applied.ok()) {
            ahead = Ahead{.round = round, .version = start_version, .start = start,
                          .params = CloneParams(), .adam = CopyAdam(),
                          .steps = step, .loss_sum = loss_sum, .compute_seconds = stats.compute_seconds};
            return applied.status();
          }
          applied_theta = std::move(*applied);
          carried.valid = false;  // the parameters moved: a step observer re-captures them
          t0 = Clock::now();
        }
        TRIB_ASSIGN_OR_RETURN(double loss, LocalInnerStep(round, step, carried));
        loss_sum += loss;
      }
      cached_delta = start - models::FlattenParameters(*model);
      delta_round = round;
      cached_loss = loss_sum / spec.inner_steps();
      stats.compute_seconds += SecondsSince(t0);
    }
    if (async) return FinishAsyncRound(average, in_flight, std::move(applied_theta), stats);
    // The averager works on a copy: the cached source must survive a failed collective.
    torch::Tensor averaged = cached_delta.clone();
    auto t1 = Clock::now();
    Status averaged_ok = average(FloatSpan(averaged)).WithContext(
        "averaging the pseudo-gradient of round " + std::to_string(round));
    stats.comm_seconds += SecondsSince(t1);
    if (!averaged_ok.ok()) {
      (void)models::AssignFlatParameters(*model, committed.params);
      return averaged_ok;
    }

    torch::Tensor base = committed.params;
    if (mix) {
      // Members come from different groups: the outer step starts from the exact group mean of
      // θ and of the momentum. The step is linear in both, so this equals averaging the members'
      // own outer steps, and every member ends with the same bits.
      auto t_mix = Clock::now();
      const int64_t n = committed.params.numel();
      torch::Tensor both = torch::empty({2 * n}, torch::kFloat32);
      both.narrow(0, 0, n).copy_(committed.params);
      if (committed.momentum.defined()) {
        both.narrow(0, n, n).copy_(committed.momentum);
      } else {
        both.narrow(0, n, n).zero_();  // no outer step yet: a zero buffer steps identically
      }
      Status mixed = mix(FloatSpan(both)).WithContext("averaging θ and momentum of round " + std::to_string(round));
      stats.comm_seconds += SecondsSince(t_mix);
      if (!mixed.ok()) {
        (void)models::AssignFlatParameters(*model, committed.params);
        return mixed;
      }
      base = both.narrow(0, 0, n).clone();
      outer_momentum = both.narrow(0, n, n).clone();
    }

    auto t2 = Clock::now();
    torch::Tensor theta_global = OuterStep(base, averaged, round);
    TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(*model, theta_global));
    stats.compute_seconds += SecondsSince(t2);
    stats.train_loss = cached_loss;
    return stats;
  }

  // θ − lr·Nesterov(Δ̄), exactly as torch.optim.SGD(nesterov=True): buf = μ·buf + Δ (buf = Δ on
  // the first step), update = Δ + μ·buf. Advances outer_momentum.
  torch::Tensor OuterStep(const torch::Tensor& theta, const torch::Tensor& averaged, uint64_t outer_step) {
    const double mu = spec.outer_momentum();
    torch::NoGradGuard no_grad;
    if (!outer_momentum.defined()) {
      outer_momentum = averaged.clone();
    } else {
      outer_momentum.mul_(mu).add_(averaged);
    }
    torch::Tensor update = averaged.add(outer_momentum, mu);
    return theta.sub(update, OuterLearningRate(spec, outer_step));
  }

  // diloco-async (runtime/async_outer.h): what this peer contributes to round `round`'s
  // collective: its Δ of round − 1, or zeros if it did not train that round (it joined later).
  std::vector<float> PreviousDelta(uint64_t round) const {
    if (!pending_delta.defined() || pending_round + 1 != round) {
      return std::vector<float>(static_cast<size_t>(committed.params.numel()), 0.0f);
    }
    return internal::ToVector(pending_delta);
  }

  // Where round `round`'s inner steps start, given the θ it starts with. diloco-async: θ − f × this
  // peer's own Δ of round − 1 (the tentative round's, or the pending one once committed; f is
  // async_eager_fraction): its own progress stands in for the group's until the group's average
  // arrives (eager local update), so no round restarts from a point that lacks the previous
  // round's work. A peer without that Δ (it synced in) starts from θ.
  torch::Tensor RoundStart(uint64_t round, const torch::Tensor& theta) const {
    if (spec.mode() != v1::MODE_DILOCO_ASYNC || round == 0) return theta;
    const double fraction = AsyncEagerFraction(spec);
    if (tentative && delta_round + 1 == round && cached_delta.defined()) return theta - cached_delta * fraction;
    if (pending_delta.defined() && pending_round + 1 == round) return theta - pending_delta * fraction;
    return theta;
  }

  // diloco-async: waits for round − 1's average and takes the outer step it gives, θ_{r+1}.
  Result<torch::Tensor> DelayedOuterStep(BackgroundAverage& in_flight, uint64_t round, RoundStats& stats) {
    Status ok = in_flight.Wait().WithContext("averaging the pseudo-gradient of round " +
                                             std::to_string(round - 1) + " (delayed)");
    stats.comm_seconds += in_flight.seconds();  // the collective's own time, overlapped or not
    if (!ok.ok()) return ok;
    const auto values = in_flight.values();
    torch::Tensor averaged = torch::from_blob(values.data(), {static_cast<int64_t>(values.size())},
                                              torch::kFloat32).clone();
    return OuterStep(committed.params, averaged, round - 1);
  }

  // diloco-async, at the apply step: the local model trained from the eager start θ_r − own
  // Δ_{r−1}; it moves by θ_{r+1} − that start, so the rest of the round continues from where
  // the group's average put it, and this round's Δ counts from θ_{r+1}.
  Result<torch::Tensor> ApplyDelayedAverage(BackgroundAverage& in_flight, uint64_t round,
                                            torch::Tensor& start, RoundStats& stats) {
    TRIB_ASSIGN_OR_RETURN(torch::Tensor theta, DelayedOuterStep(in_flight, round, stats));
    torch::Tensor shift = theta - start;
    TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(*model, models::FlattenParameters(*model) + shift));
    start = theta;
    return theta;
  }

  Result<RoundStats> FinishAsyncRound(const Averager& average, BackgroundAverage& in_flight,
                                      std::optional<torch::Tensor> applied_theta, RoundStats stats) {
    const uint64_t round = completed_rounds;
    torch::Tensor theta = committed.params;
    if (applied_theta) {
      theta = std::move(*applied_theta);
    } else if (in_flight.started()) {  // a retry that reused its cached Δ, or H below the apply step
      TRIB_ASSIGN_OR_RETURN(theta, DelayedOuterStep(in_flight, round, stats));
    }
    if (round + 1 == spec.rounds()) {
      // Nothing overlaps the last round's Δ: average it now and apply it, so no token is lost.
      torch::Tensor averaged = cached_delta.clone();
      auto t1 = Clock::now();
      Status ok = average(FloatSpan(averaged)).WithContext("averaging the pseudo-gradient of round " +
                                                           std::to_string(round));
      stats.comm_seconds += SecondsSince(t1);
      if (!ok.ok()) return ok;
      theta = OuterStep(theta, averaged, round);
    }
    TRIB_RETURN_IF_ERROR(models::AssignFlatParameters(*model, theta));
    stats.train_loss = cached_loss;
    return stats;
  }

  // Canonical bytes of a global state (see Trainer::ExportCommittedState).
  std::string EncodeState() const { return EncodeStateBytes(job_id, committed, completed_rounds); }
  // Each round's state is snapshot, encoded and hashed once: EncodeTentative snapshots the
  // tentative round for the report, which encodes it on its own thread (the training thread runs
  // ahead meanwhile); Commit takes the snapshot as the committed state and the bytes as
  // `committed_encoding`, which the state server publishes. Reset wherever the state they
  // encode changes (a round tried, abandoned, imported, loaded).
  std::shared_ptr<const models::ParameterLayout> layout;  // the model's; never changes
  mutable std::optional<Snapshot> tentative_snapshot;
  mutable std::shared_future<StateEncoding> tentative_encoding;  // of tentative_snapshot
  mutable StateEncoding committed_encoding;
  const StateEncoding& CommittedEncoding() const {
    if (!committed_encoding.bytes) {
      committed_encoding.bytes = std::make_shared<const std::string>(EncodeState());
      committed_encoding.state = Sha256Of(*committed_encoding.bytes);
    }
    return committed_encoding;
  }
  const std::shared_future<StateEncoding>& EncodeTentative() const;
  void DropTentativeEncoding() {
    tentative_encoding = {};  // a thread that waits for it holds its own copy
    tentative_snapshot.reset();
  }
  static std::string EncodeStateBytes(const std::string& job_id, const Snapshot& snap, uint64_t rounds);
  Status DecodeState(std::string_view bytes);

  // diloco-async: the next round's delayed collective, started before its TryRound
  // (Trainer::StartNextDelayedAverage). `average` is declared first so that it outlives the
  // thread that calls it (members are destroyed in reverse order).
  struct EarlyAverage {
    uint64_t round = 0;  // the round whose TryRound takes it
    std::unique_ptr<Averager> average;
    BackgroundAverage in_flight;
  };
  std::optional<EarlyAverage> early;

  // eval_beside_training: a second instance of the model, loaded with a copy of θ and
  // evaluated on its own thread. Declared last so that destruction waits for the thread before
  // anything it reads (the model copy, `validation`) goes.
  std::shared_ptr<models::LanguageModel> eval_model;
  uint64_t eval_round = 0;
  std::future<Result<double>> eval_done;
};

namespace {
constexpr std::string_view kStateMagic = "TRIBSTATE1";

void PutU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutFloats(std::string& out, const torch::Tensor& t) {
  torch::Tensor c = t.contiguous().to(torch::kFloat32);
  PutU64(out, static_cast<uint64_t>(c.numel()));
  out.append(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * sizeof(float));
}

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  Result<uint64_t> U64() {
    if (data_.size() - pos_ < 8) return Corruption("state is truncated");
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    pos_ += 8;
    return v;
  }
  Result<std::string_view> Bytes(uint64_t n) {
    if (n > data_.size() - pos_) return Corruption("state is truncated");
    auto out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  // Reads a float array and checks it has `expected` elements.
  Result<torch::Tensor> Floats(int64_t expected, const char* what) {
    TRIB_ASSIGN_OR_RETURN(uint64_t n, U64());
    if (n != static_cast<uint64_t>(expected)) {
      return Corruption(std::string(what) + " has " + std::to_string(n) + " elements, expected " +
                        std::to_string(expected));
    }
    TRIB_ASSIGN_OR_RETURN(std::string_view raw, Bytes(n * sizeof(float)));
    torch::Tensor t = torch::empty({expected}, torch::kFloat32);
    std::memcpy(t.data_ptr<float>(), raw.data(), raw.size());
    return t;
  }
  bool done() const { return pos_ == data_.size(); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};
}  // namespace

// The encoding runs on the first thread that waits for it (deferred: the peer's report thread,
// not a thread of its own): it reads the snapshot's tensors, which nothing writes (fresh copies,
// moved into `committed` only after Commit waited for it), and copies of the job id and layout,
// not the Impl.
const std::shared_future<StateEncoding>& Trainer::Impl::EncodeTentative() const {
  if (tentative_encoding.valid()) return tentative_encoding;
  tentative_snapshot = TakeSnapshot();
  tentative_encoding =
      std::async(std::launch::deferred, [snap = *tentative_snapshot, id = job_id, layout = layout,
                                      rounds = completed_rounds + 1] {
        StateEncoding e;
        e.bytes = std::make_shared<const std::string>(EncodeStateBytes(id, snap, rounds));
        e.state = Sha256Of(*e.bytes);
        const std::span<const float> theta(snap.params.data_ptr<float>(), static_cast<size_t>(snap.params.numel()));
        // The layout is the model's, so the sizes agree; were they not to, the zero digest would
        // differ from every other member's and the round would not commit.
        if (auto digest = models::ParameterDigest(*layout, theta); digest.ok()) e.theta = *digest;
        return e;
      }).share();
  return tentative_encoding;
}

std::string Trainer::Impl::EncodeStateBytes(const std::string& job_id, const Snapshot& snap, uint64_t rounds) {
  std::string out(kStateMagic);
  PutU64(out, job_id.size());
  out += job_id;
  PutU64(out, rounds);
  PutFloats(out, snap.params);
  PutU64(out, snap.momentum.defined() ? 1 : 0);
  if (snap.momentum.defined()) PutFloats(out, snap.momentum);
  PutU64(out, snap.adam.size());
  for (const AdamSlot& slot : snap.adam) {
    PutU64(out, slot.present ? 1 : 0);
    if (!slot.present) continue;
    PutU64(out, static_cast<uint64_t>(slot.step));
    PutFloats(out, slot.exp_avg);
    PutFloats(out, slot.exp_avg_sq);
  }
  return out;
}

Status Trainer::Impl::DecodeState(std::string_view bytes) {
  if (bytes.substr(0, kStateMagic.size()) != kStateMagic) return Corruption("not a Tributary state");
  Reader in(bytes.substr(kStateMagic.size()));
  TRIB_ASSIGN_OR_RETURN(uint64_t id_len, in.U64());
  if (id_len > 256) return Corruption("state has an absurd job id length");
  TRIB_ASSIGN_OR_RETURN(std::string_view id, in.Bytes(id_len));
  if (id != job_id) return FailedPrecondition("state belongs to job " + std::string(id) + ", not " + job_id);
  TRIB_ASSIGN_OR_RETURN(uint64_t rounds, in.U64());
  if (rounds > spec.rounds()) return Corruption("state claims round " + std::to_string(rounds));
  Snapshot snap;
  const int64_t n = models::NumParameters(*model);
  TRIB_ASSIGN_OR_RETURN(snap.params, in.Floats(n, "θ"));
  TRIB_ASSIGN_OR_RETURN(uint64_t has_momentum, in.U64());
  if (has_momentum > 1) return Corruption("bad momentum flag");
  if (has_momentum) {
    TRIB_ASSIGN_OR_RETURN(snap.momentum, in.Floats(n, "outer momentum"));
  }
  TRIB_ASSIGN_OR_RETURN(uint64_t slots, in.U64());
  const auto params = Params();
  const size_t want_slots = spec.mode() == v1::MODE_DDP ? params.size() : 0;
  if (slots != want_slots) return Corruption("state has " + std::to_string(slots) + " optimiser slots");
  for (size_t i = 0; i < slots; ++i) {
    AdamSlot slot;
    TRIB_ASSIGN_OR_RETURN(uint64_t present, in.U64());
    if (present > 1) return Corruption("bad optimiser slot flag");
    if (present) {
      slot.present = true;
      TRIB_ASSIGN_OR_RETURN(uint64_t step, in.U64());
      slot.step = static_cast<int64_t>(step);
      TRIB_ASSIGN_OR_RETURN(torch::Tensor a, in.Floats(params[i].numel(), "AdamW exp_avg"));
      TRIB_ASSIGN_OR_RETURN(torch::Tensor b, in.Floats(params[i].numel(), "AdamW exp_avg_sq"));
      slot.exp_avg = a.view(params[i].sizes());
      slot.exp_avg_sq = b.view(params[i].sizes());
    }
    snap.adam.push_back(std::move(slot));
  }
  if (!in.done()) return Corruption("state has trailing bytes");
  for (const torch::Tensor* t : {&snap.params, &snap.momentum}) {
    if (t->defined() && !torch::isfinite(*t).all().item<bool>()) return Corruption("state has non-finite values");
  }
  TRIB_RETURN_IF_ERROR(RestoreSnapshot(snap));
  committed = std::move(snap);
  committed_encoding = {};
  completed_rounds = rounds;
  tentative = false;
  delta_round = UINT64_MAX;
  cached_delta = torch::Tensor();
  pending_delta = torch::Tensor();  // relative to a state this peer did not hold: contribute zeros
  // DiLoCo's inner optimiser is each worker's own. Its moments belong to the θ this worker
  // trained, not to the downloaded one, so the next round starts it afresh: a verifying job
  // accepts only fresh moments or the ones the worker's last committed round ended with
  // (verifier/chain_ends.h).
  if (spec.mode() != v1::MODE_DDP) inner->state().clear();
  ahead = Ahead{};
  start_version++;
  pending_round = UINT64_MAX;
  return Status::Ok();
}

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;

Result<std::unique_ptr<Trainer>> Trainer::Create(const v1::JobSpec& spec, TrainingData data,
                                                 WorkerPlacement placement, std::string_view device) {
  TRIB_RETURN_IF_ERROR(ValidateJobSpec(spec));
  TRIB_ASSIGN_OR_RETURN(const std::string resolved, ResolveComputeDevice(device));
  if (!data.dataset) return InvalidArgument("trainer needs a dataset");
  if (placement.num_shards == 0 || placement.shard >= placement.num_shards) {
    return InvalidArgument("shard " + std::to_string(placement.shard) + " is not in 0.." +
                           std::to_string(placement.num_shards));
  }
  if (placement.batch_size == 0) placement.batch_size = spec.batch_size();

  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  impl->job_id = JobIdOf(spec);
  impl->data = std::move(data);
  impl->placement = placement;
  impl->device = resolved;
  TRIB_ASSIGN_OR_RETURN(impl->model,
                        models::MakeModel(ModelConfigOf(spec, impl->data.vocab_size), spec.seed()));
  impl->model->to(torch::Device(resolved));
  impl->model->train();
  impl->layout = std::make_shared<const models::ParameterLayout>(models::LayoutOf(*impl->model));
  impl->inner = std::make_unique<torch::optim::AdamW>(
      impl->model->parameters(),
      torch::optim::AdamWOptions(spec.inner_lr()).weight_decay(spec.weight_decay()).betas({0.9, 0.95}));
  TRIB_ASSIGN_OR_RETURN(impl->validation,
                        impl->data.dataset->ValidationBatches(static_cast<int>(spec.eval_batches()),
                                                              static_cast<int>(spec.batch_size()),
                                                              static_cast<int>(spec.context())));
  // Fail now, not mid-round, if this worker's shard cannot produce batches.
  TRIB_RETURN_IF_ERROR(impl->BatchFor(0, 0).status());
  impl->committed = impl->TakeSnapshot();
  return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
}

Result<RoundStats> Trainer::RunRound(const Averager& average) {
  TRIB_ASSIGN_OR_RETURN(RoundStats stats, TryRound(average));
  TRIB_RETURN_IF_ERROR(Commit());
  return stats;
}

Result<RoundStats> Trainer::TryRound(const Averager& average) { return TryRound(average, Averager()); }

Result<RoundStats> Trainer::TryRound(const Averager& average, const Averager& mix) {
  if (mix && impl_->spec.mode() != v1::MODE_DILOCO) {
    return FailedPrecondition("mixing members' states needs diloco mode");
  }
  if (impl_->tentative) return FailedPrecondition("a tentative round is pending: Commit or Abandon it");
  impl_->DropTentativeEncoding();
  if (impl_->completed_rounds >= impl_->spec.rounds()) {
    return FailedPrecondition("all " + std::to_string(impl_->spec.rounds()) +
                              " rounds of the job are done");
  }
  Result<RoundStats> stats = impl_->spec.mode() == v1::MODE_DDP ? impl_->RunDdpRound(average)
                                                                : impl_->RunDilocoRound(average, mix);
  impl_->start_version++;  // θ is tentative now, or restored: the next round's start may differ
  if (!stats.ok()) {
    // Leave nothing half-applied: the caller may retry from the committed state.
    (void)impl_->RestoreSnapshot(impl_->committed);
    return stats;
  }
  impl_->tentative = true;
  stats->round = impl_->completed_rounds;
  stats->tokens = tokens_per_round();
  return stats;
}

Status Trainer::Speculate(const std::function<bool()>& stop) {
  Impl& m = *impl_;
  if (m.spec.mode() == v1::MODE_DDP || m.observer || m.tamper.plan || m.tamper.after || m.tamper.round_start) {
    return Status::Ok();
  }
  const uint64_t round = m.completed_rounds + (m.tentative ? 1 : 0);
  // Nothing to run ahead when the round's steps are already done (a retry reuses them).
  if (round >= m.spec.rounds() || m.delta_round == round) return Status::Ok();
  // The steps before the apply step do not depend on the round's collective (async); a
  // synchronous round's collective comes after all of them.
  const uint64_t limit = m.spec.mode() == v1::MODE_DILOCO_ASYNC && round > 0 ? AsyncApplyStep(m.spec)
                                                                             : m.spec.inner_steps();
  if (m.ahead.round != round || m.ahead.version != m.start_version) {
    // Where the round will start if this peer's tentative round commits as computed (the model
    // holds its θ) or from the committed θ.
    // The report's snapshot is of that tentative θ (nothing moves the model in between).
    const torch::Tensor theta = !m.tentative              ? m.committed.params
                                : m.tentative_snapshot ? m.tentative_snapshot->params
                                                       : models::FlattenParameters(*m.model);
    torch::Tensor start = m.RoundStart(round, theta);
    if (m.ahead.round != round || !torch::equal(m.ahead.start, start)) {
      m.ahead = Impl::Ahead{.round = round, .start = start, .params = m.SplitLikeParams(start), .adam = m.CopyAdam()};
    }
    m.ahead.version = m.start_version;
  }
  if (m.ahead.steps >= limit || stop()) return Status::Ok();
  m.SwapAhead();  // the model takes the steps' state; `ahead` keeps the visible one meanwhile
  const auto t0 = Clock::now();
  Status result = Status::Ok();
  Impl::Carried carried;
  while (m.ahead.steps < limit && !stop()) {
    auto loss = m.LocalInnerStep(round, m.ahead.steps, carried);
    if (!loss.ok()) {
      result = loss.status();
      break;
    }
    m.ahead.loss_sum += *loss;
    m.ahead.steps++;
  }
  m.ahead.compute_seconds += SecondsSince(t0);
  m.SwapAhead();  // back to the visible state: θ and the optimizer as they were
  if (!result.ok()) m.ahead = Impl::Ahead{};
  return result;
}

Status Trainer::Commit() {
  if (!impl_->tentative) return FailedPrecondition("no tentative round to commit");
  // The report's encoding is of this very state (nothing moves the model between the two;
  // running ahead restores it): it need not be snapshot or encoded again.
  if (impl_->tentative_encoding.valid()) {
    impl_->committed_encoding = impl_->tentative_encoding.get();  // waits for its thread
    impl_->committed = std::move(*impl_->tentative_snapshot);
  } else {
    impl_->committed = impl_->TakeSnapshot();
    impl_->committed_encoding = {};
  }
  impl_->DropTentativeEncoding();
  impl_->tentative = false;
  if (impl_->spec.mode() == v1::MODE_DILOCO_ASYNC) {  // averaged and applied next round
    impl_->pending_delta = impl_->cached_delta;
    impl_->pending_round = impl_->completed_rounds;
  }
  impl_->completed_rounds++;
  impl_->cached_delta = torch::Tensor();
  impl_->delta_round = UINT64_MAX;
  return Status::Ok();
}

Status Trainer::StartNextDelayedAverage(Averager average) {
  Impl& m = *impl_;
  if (m.spec.mode() != v1::MODE_DILOCO_ASYNC) return FailedPrecondition("only diloco-async delays its collective");
  if (!m.tentative || m.delta_round != m.completed_rounds || !m.cached_delta.defined()) {
    return FailedPrecondition("no tentative round whose Δ the next round would average");
  }
  const uint64_t next = m.completed_rounds + 1;
  if (next >= m.spec.rounds()) return FailedPrecondition("the tentative round is the job's last");
  m.early.reset();
  auto owned = std::make_unique<Averager>(std::move(average));
  BackgroundAverage in_flight = BackgroundAverage::Start(*owned, internal::ToVector(m.cached_delta));
  m.early.emplace(Impl::EarlyAverage{next, std::move(owned), std::move(in_flight)});
  return Status::Ok();
}

void Trainer::DiscardNextDelayedAverage() { impl_->early.reset(); }

bool Trainer::has_next_delayed_average() const { return impl_->early.has_value(); }

void Trainer::Abandon() {
  impl_->early.reset();  // it averaged the abandoned round's Δ
  impl_->DropTentativeEncoding();
  if (!impl_->tentative) return;
  (void)impl_->RestoreSnapshot(impl_->committed);
  impl_->tentative = false;
  impl_->start_version++;
}

bool Trainer::has_tentative_round() const { return impl_->tentative; }

Result<std::string> Trainer::ExportCommittedState() const { return *impl_->CommittedEncoding().bytes; }

std::shared_ptr<const std::string> Trainer::CommittedStateBytes() const { return impl_->CommittedEncoding().bytes; }

Status Trainer::ImportState(std::string_view bytes) {
  if (impl_->tentative) return FailedPrecondition("cannot import state over a tentative round");
  impl_->early.reset();
  Status st = impl_->DecodeState(bytes);
  if (!st.ok()) (void)impl_->RestoreSnapshot(impl_->committed);
  return st;
}

Digest Trainer::CommittedStateDigest() const { return impl_->CommittedEncoding().state; }

Digest Trainer::CurrentStateDigest() const {
  if (!impl_->tentative) return CommittedStateDigest();
  return impl_->EncodeTentative().get().state;
}

Result<std::shared_future<StateEncoding>> Trainer::EncodeTentativeState() {
  if (!impl_->tentative) return FailedPrecondition("no tentative round to encode");
  return impl_->EncodeTentative();
}

Result<double> Trainer::MeasureTokensPerSecond(int steps) const {
  TRIB_ASSIGN_OR_RETURN(auto scratch, Trainer::Create(impl_->spec, impl_->data, impl_->placement, impl_->device));
  steps = std::max(1, steps);
  TRIB_RETURN_IF_ERROR(scratch->impl_->ForwardBackward(0, 0).status());  // warm-up
  const auto start = Clock::now();
  for (int i = 0; i < steps; ++i) {
    TRIB_RETURN_IF_ERROR(scratch->impl_->ForwardBackward(0, static_cast<uint64_t>(i + 1)).status());
    scratch->impl_->ClipAndStep(static_cast<uint64_t>(i));
  }
  const double seconds = std::max(1e-9, SecondsSince(start));
  return steps * double(impl_->placement.batch_size) * impl_->spec.context() / seconds;
}

Result<double> Trainer::EvalLoss() { return models::EvaluateLoss(*impl_->model, impl_->validation); }

Status Trainer::StartBackgroundEval(uint64_t round) {
  Impl& m = *impl_;
  if (m.eval_done.valid()) return FailedPrecondition("an evaluation is still running or untaken");
  if (!m.eval_model) {
    TRIB_ASSIGN_OR_RETURN(m.eval_model, models::MakeModel(ModelConfigOf(m.spec, m.data.vocab_size), m.spec.seed()));
    m.eval_model->to(torch::Device(m.device));
  }
  // θ and the buffers (whatever a user model keeps beside its parameters), tensor by tensor in
  // place, so the copy evaluates to the same bits as EvalLoss() would now.
  torch::NoGradGuard no_grad;
  auto copy_by_name = [](const auto& from, const auto& into, const char* kind) -> Status {
    for (const auto& target : into) {
      const torch::Tensor* source = from.find(target.key());
      if (source == nullptr || source->sizes() != target.value().sizes()) {
        return Internal(std::string("the evaluation copy's ") + kind + " " + target.key() + " has no match in the model");
      }
      target.value().copy_(*source);
    }
    return Status::Ok();
  };
  TRIB_RETURN_IF_ERROR(copy_by_name(m.model->named_parameters(), m.eval_model->named_parameters(), "parameter"));
  TRIB_RETURN_IF_ERROR(copy_by_name(m.model->named_buffers(), m.eval_model->named_buffers(), "buffer"));
  m.eval_round = round;
  m.eval_done = std::async(std::launch::async, [model = m.eval_model, batches = &m.validation]() -> Result<double> {
    try {
      return models::EvaluateLoss(*model, *batches);
    } catch (const std::exception& e) {
      return Internal(std::string("evaluating beside training failed: ") + e.what());
    }
  });
  return Status::Ok();
}

std::optional<Trainer::BackgroundEval> Trainer::TakeBackgroundEval(bool wait) {
  Impl& m = *impl_;
  if (!m.eval_done.valid()) return std::nullopt;
  if (!wait && m.eval_done.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return std::nullopt;
  return BackgroundEval{m.eval_round, m.eval_done.get()};
}

void Trainer::SetStepObserver(StepObserver observer) { impl_->observer = std::move(observer); }
void Trainer::SetStepTamper(StepTamper tamper) { impl_->tamper = std::move(tamper); }

Result<Digest> Trainer::PseudoGradientDigest() const {
  if (impl_->spec.mode() != v1::MODE_DILOCO || !impl_->cached_delta.defined() ||
      impl_->delta_round != impl_->completed_rounds) {
    return FailedPrecondition("no pseudo-gradient: not a tentative DiLoCo round");
  }
  torch::Tensor c = impl_->cached_delta.contiguous();
  return verifier::FloatsDigest({c.data_ptr<float>(), static_cast<size_t>(c.numel())});
}

uint64_t Trainer::completed_rounds() const { return impl_->completed_rounds; }
Digest Trainer::ThetaDigest() const { return models::ParameterDigest(*impl_->model); }
int64_t Trainer::num_parameters() const { return models::NumParameters(*impl_->model); }
uint64_t Trainer::tokens_per_round() const {
  return uint64_t{impl_->spec.inner_steps()} * impl_->placement.batch_size * impl_->spec.context();
}

Status Trainer::SaveCheckpoint(const std::string& path) const {
  if (impl_->tentative) return FailedPrecondition("cannot checkpoint a tentative round");
  std::ostringstream payload;
  try {
    torch::serialize::OutputArchive archive;
    archive.write("job_id", c10::IValue(impl_->job_id));
    archive.write("completed_rounds", c10::IValue(static_cast<int64_t>(impl_->completed_rounds)));
    archive.write("shard", c10::IValue(static_cast<int64_t>(impl_->placement.shard)));
    torch::serialize::OutputArchive model_archive;
    impl_->model->save(model_archive);
    archive.write("model", model_archive);
    torch::serialize::OutputArchive optimizer_archive;
    impl_->inner->save(optimizer_archive);
    archive.write("inner_optimizer", optimizer_archive);
    archive.write("has_outer_momentum", c10::IValue(impl_->outer_momentum.defined()));
    if (impl_->outer_momentum.defined()) archive.write("outer_momentum", impl_->outer_momentum);
    if (impl_->pending_delta.defined()) {  // diloco-async: still to be averaged and applied
      archive.write("pending_delta", impl_->pending_delta);
      archive.write("pending_round", c10::IValue(static_cast<int64_t>(impl_->pending_round)));
    }
    archive.save_to(payload);
  } catch (const c10::Error& e) {
    return Internal(std::string("cannot serialise checkpoint: ") + e.what_without_backtrace());
  }
  const std::string bytes = payload.str();
  std::string file(kCheckpointMagic);
  file += DigestToBytes(Sha256Of(bytes));
  file += bytes;
  return WriteFileAtomically(path, file);
}

Status Trainer::LoadCheckpoint(const std::string& path) {
  impl_->early.reset();
  TRIB_ASSIGN_OR_RETURN(std::string file, ReadWholeFile(path));
  const size_t header = kCheckpointMagic.size() + 32;
  if (file.size() < header || file.compare(0, kCheckpointMagic.size(), kCheckpointMagic) != 0) {
    return Corruption("'" + path + "' is not a Tributary checkpoint");
  }
  std::string_view payload(file.data() + header, file.size() - header);
  if (DigestToBytes(Sha256Of(payload)) != file.substr(kCheckpointMagic.size(), 32)) {
    return Corruption("checkpoint '" + path + "' fails its SHA-256 check (damaged or tampered)");
  }
  try {
    std::istringstream in{std::string(payload)};
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    c10::IValue value;
    archive.read("job_id", value);
    if (value.toStringRef() != impl_->job_id) {
      return FailedPrecondition("checkpoint '" + path + "' belongs to job " + value.toStringRef() +
                                ", not " + impl_->job_id);
    }
    archive.read("shard", value);
    if (value.toInt() != impl_->placement.shard) {
      return FailedPrecondition("checkpoint '" + path + "' was written by shard " +
                                std::to_string(value.toInt()));
    }
    archive.read("completed_rounds", value);
    const int64_t rounds = value.toInt();
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    impl_->model->load(model_archive);
    torch::serialize::InputArchive optimizer_archive;
    archive.read("inner_optimizer", optimizer_archive);
    impl_->inner->load(optimizer_archive);
    archive.read("has_outer_momentum", value);
    if (value.toBool()) {
      torch::Tensor momentum;
      archive.read("outer_momentum", momentum);
      impl_->outer_momentum = momentum;
    } else {
      impl_->outer_momentum = torch::Tensor();
    }
    torch::Tensor pending;
    if (archive.try_read("pending_delta", pending) && archive.try_read("pending_round", value)) {
      impl_->pending_delta = pending;
      impl_->pending_round = static_cast<uint64_t>(value.toInt());
    } else {
      impl_->pending_delta = torch::Tensor();
      impl_->pending_round = UINT64_MAX;
    }
    impl_->completed_rounds = static_cast<uint64_t>(rounds);
    impl_->committed = impl_->TakeSnapshot();
    impl_->committed_encoding = {};
    impl_->tentative = false;  // the checkpoint is a committed state
    impl_->DropTentativeEncoding();
    impl_->delta_round = UINT64_MAX;
    impl_->ahead = {};
    impl_->start_version++;
  } catch (const c10::Error& e) {
    return Corruption("cannot read checkpoint '" + path + "': " + e.what_without_backtrace());
  }
  return Status::Ok();
}

}  // namespace tributary::runtime

#include <dlfcn.h>

namespace tributary::runtime {

void PinComputeThreads(int threads) {
  threads = std::max(1, threads);
  torch::set_num_threads(threads);
  try {
    torch::set_num_interop_threads(1);
  } catch (const c10::Error&) {
    // Already fixed earlier in this process: inter-op threads can be set only once.
  }
  // OpenBLAS reads OPENBLAS_NUM_THREADS only at load time; set it directly when present.
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    fn(threads);
  }
}

}  // namespace tributary::runtime
