// Loads the corpus a job names and prepares its token dataset. If the spec carries a corpus
// digest, the local corpus must match it byte for byte (peers must train on the same data).
#pragma once

#include <memory>
#include <string>

#include "core/digest.h"
#include "core/status.h"
#include "proto/tributary.pb.h"

namespace tributary::models {
class TokenDataset;
}

namespace tributary::runtime {

struct TrainingData {
  std::shared_ptr<const models::TokenDataset> dataset;
  int vocab_size = 0;
  Digest corpus_digest{};
  size_t corpus_bytes = 0;
};

Result<TrainingData> LoadTrainingData(const std::string& corpus_dir, const v1::JobSpec& spec);
// Digest of the corpus in `dir` (for the job launcher to stamp into the spec).
Result<Digest> CorpusDigest(const std::string& corpus_dir);
// What a job's creator stamps into its spec from the corpus in `corpus_dir`, each only where
// the spec has none yet: the corpus digest, and for a verifying job (verify_samples > 0) the
// digest of θ_0 (runtime::InitialThetaDigest), which round 0's steps are then held to.
Status PublishJobDigests(v1::JobSpec& spec, const std::string& corpus_dir);

}  // namespace tributary::runtime
