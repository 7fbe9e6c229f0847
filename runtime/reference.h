// The single-process reference: the same model, data and optimiser as a job, trained by one
// process on the whole train split with the group's combined batch (batch_size × peers) and
// plain AdamW — what a user would run without Tributary. Its eval loss at equal tokens is the
// yardstick for every distributed run.
#pragma once

#include <functional>
#include <string>

#include "core/status.h"
#include "proto/tributary.pb.h"
#include "runtime/trainer.h"

namespace tributary::runtime {

struct ReferenceOptions {
  std::string corpus_dir;
  uint32_t equivalent_peers = 0;  // 0 = spec.num_peers(); batch = batch_size × this
  std::string checkpoint_path;    // written after every round when non-empty
  std::string resume_from;        // continue from this checkpoint when non-empty
  uint64_t stop_after_rounds = 0; // stop early (e.g. to test resume); 0 = run the whole job
  std::function<void(const RoundStats&, double eval_loss)> on_round;  // optional progress
};

struct ReferenceOutcome {
  uint64_t rounds = 0;
  uint64_t tokens = 0;
  double final_eval_loss = 0;
  double wall_seconds = 0;
  std::string theta_digest;
};

// The spec the reference actually trains: mode ddp in a group of one, batch × peers.
v1::JobSpec ReferenceSpec(const v1::JobSpec& job, uint32_t equivalent_peers);
Result<ReferenceOutcome> RunReference(const v1::JobSpec& job, const ReferenceOptions& options);

}  // namespace tributary::runtime
