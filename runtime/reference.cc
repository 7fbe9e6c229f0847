#include "runtime/reference.h"

#include <algorithm>

#include "core/clock.h"
#include "core/digest.h"

namespace tributary::runtime {

v1::JobSpec ReferenceSpec(const v1::JobSpec& job, uint32_t equivalent_peers) {
  v1::JobSpec spec = job;
  const uint32_t peers = equivalent_peers ? equivalent_peers : job.num_peers();
  spec.set_mode(v1::MODE_DDP);
  spec.set_num_peers(1);
  spec.set_batch_size(job.batch_size() * peers);
  return spec;
}

Result<ReferenceOutcome> RunReference(const v1::JobSpec& job, const ReferenceOptions& options) {
  const v1::JobSpec spec = ReferenceSpec(job, options.equivalent_peers);
  TRIB_ASSIGN_OR_RETURN(TrainingData data, LoadTrainingData(options.corpus_dir, spec));
  TRIB_ASSIGN_OR_RETURN(auto trainer, Trainer::Create(spec, std::move(data), WorkerPlacement{}));
  if (!options.resume_from.empty()) TRIB_RETURN_IF_ERROR(trainer->LoadCheckpoint(options.resume_from));

  const auto start = Clock::now();
  const Averager alone = [](std::span<float>) { return Status::Ok(); };
  ReferenceOutcome out;
  out.rounds = trainer->completed_rounds();
  out.tokens = out.rounds * trainer->tokens_per_round();
  const uint64_t last = options.stop_after_rounds ? std::min<uint64_t>(options.stop_after_rounds, spec.rounds())
                                                 : spec.rounds();
  while (trainer->completed_rounds() < last) {
    TRIB_ASSIGN_OR_RETURN(RoundStats stats, trainer->RunRound(alone));
    out.rounds = trainer->completed_rounds();
    out.tokens += stats.tokens;
    if (!options.checkpoint_path.empty()) {
      TRIB_RETURN_IF_ERROR(trainer->SaveCheckpoint(options.checkpoint_path));
    }
    if (options.on_round) {
      TRIB_ASSIGN_OR_RETURN(double eval, trainer->EvalLoss());
      options.on_round(stats, eval);
    }
  }
  TRIB_ASSIGN_OR_RETURN(out.final_eval_loss, trainer->EvalLoss());
  out.wall_seconds = SecondsSince(start);
  out.theta_digest = ToHex(trainer->ThetaDigest());
  return out;
}

}  // namespace tributary::runtime
