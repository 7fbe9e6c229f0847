#include "runtime/training_data.h"

#include "models/corpus.h"
#include "models/dataset.h"
#include "models/tokenizer.h"
#include "runtime/step_kernel.h"

namespace tributary::runtime {

Result<Digest> CorpusDigest(const std::string& corpus_dir) {
  TRIB_ASSIGN_OR_RETURN(models::Corpus corpus, models::LoadCorpus(corpus_dir));
  return corpus.digest;
}

Status PublishJobDigests(v1::JobSpec& spec, const std::string& corpus_dir) {
  if (!spec.corpus_digest().empty() && (spec.verify_samples() == 0 || !spec.initial_theta_digest().empty())) {
    return Status::Ok();
  }
  TRIB_ASSIGN_OR_RETURN(TrainingData data, LoadTrainingData(corpus_dir, spec));
  if (spec.corpus_digest().empty()) spec.set_corpus_digest(DigestToBytes(data.corpus_digest));
  if (spec.verify_samples() > 0 && spec.initial_theta_digest().empty()) {
    TRIB_ASSIGN_OR_RETURN(Digest theta, InitialThetaDigest(spec, data.vocab_size));
    spec.set_initial_theta_digest(DigestToBytes(theta));
  }
  return Status::Ok();
}

Result<TrainingData> LoadTrainingData(const std::string& corpus_dir, const v1::JobSpec& spec) {
  TRIB_ASSIGN_OR_RETURN(models::Corpus corpus, models::LoadCorpus(corpus_dir));
  if (!spec.corpus_digest().empty() && spec.corpus_digest() != DigestToBytes(corpus.digest)) {
    auto want = DigestFromBytes(spec.corpus_digest());
    return FailedPrecondition("the corpus in '" + corpus_dir + "' (sha256 " +
                              ShortHex(corpus.digest) + "…) is not the job's corpus (sha256 " +
                              (want.ok() ? ShortHex(*want) : std::string("?")) +
                              "…): every peer must hold the same data");
  }
  models::ByteTokenizer tokenizer = models::ByteTokenizer::FromText(corpus.text);
  TRIB_ASSIGN_OR_RETURN(std::vector<int64_t> tokens, tokenizer.Encode(corpus.text));
  TRIB_ASSIGN_OR_RETURN(models::TokenDataset dataset,
                        models::TokenDataset::Create(std::move(tokens), spec.validation_fraction()));
  TrainingData out;
  out.dataset = std::make_shared<const models::TokenDataset>(std::move(dataset));
  out.vocab_size = tokenizer.vocab_size();
  out.corpus_digest = corpus.digest;
  out.corpus_bytes = corpus.text.size();
  return out;
}

}  // namespace tributary::runtime
