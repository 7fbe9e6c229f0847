#include "runtime/verification.h"

#include <spdlog/spdlog.h>

#include "core/clock.h"
#include "core/human_bytes.h"
#include "net/frame.h"
#include "collectives/butterfly.h"
#include "collectives/codec/codec.h"
#include "runtime/job_spec.h"
#include "runtime/step_kernel.h"
#include "verifier/contribution.h"
#include "verifier/determinism.h"
#include "verifier/opening_bulk.h"
#include "verifier/replay.h"

namespace tributary::runtime {
namespace {

// Rounds whose leaves and states a prover keeps: openings arrive after the round committed,
// while the next round (or two) may already be running.
constexpr size_t kRoundsKept = 3;

v1::VerifyResult MakeResult(uint64_t id, v1::VerifyOutcome outcome, std::string reason) {
  v1::VerifyResult r;
  r.set_challenge_id(id);
  r.set_outcome(outcome);
  r.set_reason(std::move(reason));
  return r;
}

}  // namespace

PeerVerification::PeerVerification(v1::JobSpec spec, std::string job_id, TrainingData data,
                                   const net::Identity* identity, const AdversaryHooks* hooks, std::string device)
    : spec_(std::move(spec)),
      job_id_(std::move(job_id)),
      data_(std::move(data)),
      identity_(identity),
      hooks_(hooks),
      device_(std::move(device)),
      class_(verifier::LocalDeterminismClass(ComputeThreads(), device_).Canonical()) {
  if (hooks_ && !hooks_->claimed_class.empty()) class_ = hooks_->claimed_class;
  // The spec was validated on admission; a table that does not decode leaves every other class
  // unjudgeable rather than trusting part of it.
  auto table = verifier::CalibrationTable::Decode(
      {spec_.tolerance_calibrations().begin(), spec_.tolerance_calibrations().end()});
  if (table.ok()) {
    calibrations_ = std::move(table).value();
  } else {
    spdlog::error("the job's tolerance calibrations: {}", table.status().ToString());
  }
}

PeerVerification::~PeerVerification() = default;

StepObserver PeerVerification::Observer() {
  return [this](StepRecord record) { Record(std::move(record)); };
}

void PeerVerification::Record(StepRecord r) {
  const size_t steps = spec_.inner_steps();
  if (r.step >= steps) return;
  RoundLog& log = rounds_[r.round];
  if (r.step == 0 || log.leaves.size() != steps) {  // a round (re)starts: a DDP retry re-runs it
    log = RoundLog{};
    log.leaves.resize(steps);
    log.states.resize(steps);
  }
  verifier::StepLeaf leaf;
  leaf.job_id = job_id_;
  leaf.round = r.round;
  leaf.step = r.step;
  leaf.state_before = r.state_before;
  leaf.batch = r.batch;
  leaf.update = r.update;
  leaf.loss_bits = verifier::LossBits(r.loss);
  leaf.determinism_class = class_;
  log.leaves[r.step] = std::move(leaf);
  if (r.step == 0) log.start_halves = r.halves_before;
  if (r.step + 1 == steps) log.end_halves = r.halves_after;
  log.states[r.step] = std::move(r.before);
  if (r.end) log.end = std::move(*r.end);
  log.tree.reset();
  while (rounds_.size() > kRoundsKept) rounds_.erase(rounds_.begin());
}

Result<PeerVerification::Commitments> PeerVerification::CommitRound(uint64_t round, uint32_t attempt,
                                                                   const Digest& pseudo_gradient) {
  auto it = rounds_.find(round);
  if (it == rounds_.end()) return FailedPrecondition("no step was recorded in round " + std::to_string(round));
  RoundLog& log = it->second;
  std::vector<verifier::StepLeaf> leaves;
  for (const auto& leaf : log.leaves) {
    if (!leaf) return FailedPrecondition("round " + std::to_string(round) + " is missing step leaves");
    leaves.push_back(*leaf);
  }
  TRIB_ASSIGN_OR_RETURN(verifier::MerkleTree tree, verifier::BuildRoundTree(leaves));
  verifier::RoundCommitment body;
  body.job_id = job_id_;
  body.peer = identity_->public_key();
  body.round = round;
  body.root = tree.root();
  body.leaf_count = tree.leaf_count();
  body.determinism_class = class_;
  body.pseudo_gradient = pseudo_gradient;
  log.tree = std::move(tree);
  TRIB_ASSIGN_OR_RETURN(verifier::SignedCommitment signed_body, verifier::SignCommitment(body, *identity_));
  auto envelope = [&](const verifier::SignedCommitment& c) {
    v1::Envelope e = net::MakeEnvelope(job_id_);
    v1::StepCommitment* sc = e.mutable_step_commitment();
    sc->set_round(round);
    sc->set_attempt(attempt);
    sc->set_commitment(verifier::EncodeCommitment(c));
    return e;
  };
  Commitments out;
  if (hooks_ && hooks_->commit_after_report) {
    out.after.push_back(envelope(signed_body));
  } else {
    out.before.push_back(envelope(signed_body));
  }
  if (hooks_ && hooks_->equivocate) {  // a second story: another root for the same round
    verifier::RoundCommitment other = body;
    other.root[0] ^= 0x01;
    TRIB_ASSIGN_OR_RETURN(verifier::SignedCommitment second, verifier::SignCommitment(other, *identity_));
    out.before.push_back(envelope(second));
  }
  return out;
}

Result<v1::ChainEnds> PeerVerification::ChainEnds(uint64_t round) const {
  auto it = rounds_.find(round);
  if (it == rounds_.end() || !it->second.tree) {
    return FailedPrecondition("round " + std::to_string(round) + " is not committed");
  }
  const RoundLog& log = it->second;
  const uint64_t last = log.leaves.size() - 1;
  TRIB_ASSIGN_OR_RETURN(verifier::MerkleProof first_proof, log.tree->Prove(0));
  TRIB_ASSIGN_OR_RETURN(verifier::MerkleProof last_proof, log.tree->Prove(last));
  return verifier::MakeChainEnds(*log.leaves[0], first_proof, *log.leaves[last], last_proof, log.start_halves,
                                 log.end_halves);
}

void PeerVerification::KeepSentResidual(uint64_t round, std::vector<float> residual) {
  auto it = rounds_.find(round);
  if (it != rounds_.end()) it->second.sent_residual = std::move(residual);
}

void PeerVerification::KeepOwnerOpening(uint64_t round, std::vector<std::string> contributions,
                                        std::vector<float> residual_in) {
  auto it = rounds_.find(round);
  if (it == rounds_.end()) return;
  it->second.owned_contributions = std::move(contributions);
  it->second.owned_residual_in = std::move(residual_in);
}

Result<v1::Opening> PeerVerification::Open(uint64_t round, uint64_t step, bool end_state, bool state_after) const {
  auto it = rounds_.find(round);
  if (it == rounds_.end() || !it->second.tree) {
    return NotFound("this peer holds no committed leaves of round " + std::to_string(round));
  }
  const RoundLog& log = it->second;
  if (step >= log.leaves.size()) return InvalidArgument("step " + std::to_string(step) + " is out of range");
  v1::Opening o;
  o.set_round(round);
  o.set_step(step);
  o.set_leaf(verifier::EncodeLeaf(*log.leaves[step]));
  TRIB_ASSIGN_OR_RETURN(verifier::MerkleProof proof, log.tree->Prove(step));
  o.set_proof(verifier::EncodeProof(proof));
  if (step > 0) {
    o.set_previous_leaf(verifier::EncodeLeaf(*log.leaves[step - 1]));
    TRIB_ASSIGN_OR_RETURN(verifier::MerkleProof previous, log.tree->Prove(step - 1));
    o.set_previous_proof(verifier::EncodeProof(previous));
  }
  if (end_state) {
    if (step + 1 != log.leaves.size() || !log.end) {
      return InvalidArgument("only the state after the last step of round " + std::to_string(round) +
                             " can be opened as an end state");
    }
    o.set_end_state(true);
    o.set_state(verifier::EncodeTrainingState(*log.end));
    o.set_residual(verifier::EncodeResidual(log.sent_residual));
  } else {
    o.set_state(verifier::EncodeTrainingState(log.states[step]));
  }
  if (state_after) {
    // Local steps chain: the state after `step` is the one the next step started from.
    if (spec_.mode() == v1::MODE_DDP) return InvalidArgument("a DDP step has no post-step state of its own to open");
    if (step + 1 < log.leaves.size()) {
      o.set_state_after(verifier::EncodeTrainingState(log.states[step + 1]));
    } else if (log.end) {
      o.set_state_after(verifier::EncodeTrainingState(*log.end));
    } else {
      return NotFound("the state after the last step of round " + std::to_string(round) + " is not held");
    }
  }
  return o;
}

Result<StepKernel*> PeerVerification::Kernel() {
  if (!kernel_) {
    TRIB_ASSIGN_OR_RETURN(kernel_, StepKernel::Create(spec_, data_.dataset, data_.vocab_size, device_));
  }
  return kernel_.get();
}

// A detached opening is made whole first. Only a verifier that can judge the prover's class
// downloads anything; one that cannot fetch the bulk says so (opening_unavailable), and the
// coordinator then has the prover send the opening through it.
bool PeerVerification::WantsBulk(const v1::VerifyRequest& q) const {
  if (!verifier::HasDetachedBulk(q.opening())) return false;
  if (q.delta_audit()) return true;  // exact arithmetic on any class
  auto leaf = verifier::DecodeLeaf(q.opening().leaf());
  return !leaf.ok() || calibrations_.Judge(leaf->determinism_class, class_) != verifier::JudgeKind::kNone;
}

v1::VerifyResult PeerVerification::Verify(const v1::VerifyRequest& q) {
  if (!verifier::HasDetachedBulk(q.opening())) return VerifyOpened(q);
  const uint64_t id = q.challenge_id();
  if (!WantsBulk(q)) {
    return MakeResult(id, v1::VERIFY_CANNOT_REPLAY,
                      "the prover's determinism class is not this verifier's, and the job calibrates no tolerance "
                      "for the pair");
  }
  auto unavailable = [&](const std::string& why) {
    v1::VerifyResult r = MakeResult(id, v1::VERIFY_CANNOT_REPLAY, "cannot fetch the opening from the prover: " + why);
    r.set_opening_unavailable(true);
    return r;
  };
  auto digest = verifier::OpeningBulkDigest(q.opening());
  if (!digest.ok()) return MakeResult(id, v1::VERIFY_MISMATCH, digest.status().message());
  if (!q.has_bulk_source() || q.bulk_source().port() == 0) return unavailable("the request names no source");
  if (!bulk_.fetch) return unavailable("this peer cannot fetch");
  const auto start = Clock::now();
  auto bulk = bulk_.fetch(q);
  if (!bulk.ok()) return unavailable(bulk.status().ToString());
  // The download usually started when the request arrived (BulkTransport): this is the wait left.
  spdlog::info("fetched the opening of round {} step {} ({}) from {}; waited {:.2f} s for it", q.round(),
               q.opening().step(), HumanBytes(static_cast<double>(bulk->size())), q.bulk_source().peer_name(),
               SecondsSince(start));
  v1::VerifyRequest whole = q;
  if (Status st = verifier::AttachOpeningBulk(*whole.mutable_opening(), *bulk); !st.ok()) {
    return unavailable(st.ToString());
  }
  return VerifyOpened(whole);
}

v1::VerifyResult PeerVerification::VerifyOpened(const v1::VerifyRequest& q) {
  const uint64_t id = q.challenge_id();
  auto fail = [&](const std::string& why) { return MakeResult(id, v1::VERIFY_MISMATCH, why); };
  auto cannot = [&](const std::string& why) { return MakeResult(id, v1::VERIFY_CANNOT_REPLAY, why); };
  // The commitment and the opening: checked against the prover's signature and its root.
  auto commitment = verifier::DecodeCommitment(q.commitment());
  if (!commitment.ok()) return cannot("undecodable commitment: " + commitment.status().message());
  if (!verifier::VerifyCommitment(*commitment).ok()) return cannot("the commitment's signature does not verify");
  if (net::KeyToBytes(commitment->body.peer) != q.prover_key() || commitment->body.round != q.round() ||
      commitment->body.job_id != job_id_) {
    return cannot("the commitment is not the named prover's for this job and round");
  }
  const v1::Opening& o = q.opening();
  const uint64_t step = o.step();
  auto leaf = verifier::DecodeLeaf(o.leaf());
  auto proof = verifier::DecodeProof(o.proof());
  if (!leaf.ok() || !proof.ok()) return fail("the opening does not decode");
  if (Status st = verifier::CheckOpenedLeaf(commitment->body, step, *leaf, *proof); !st.ok()) {
    return fail("the opened leaf is not committed: " + st.message());
  }
  // DiLoCo steps chain (each starts where the previous ended). A DDP step starts from the state
  // the whole group shares after the averaged previous step: this verifier's own.
  const bool ddp = spec_.mode() == v1::MODE_DDP;
  if (step > 0) {
    auto prev = verifier::DecodeLeaf(o.previous_leaf());
    auto prev_proof = verifier::DecodeProof(o.previous_proof());
    if (!prev.ok() || !prev_proof.ok()) return fail("the previous leaf does not decode");
    if (Status st = verifier::CheckOpenedLeaf(commitment->body, step - 1, *prev, *prev_proof); !st.ok()) {
      return fail("the previous leaf is not committed: " + st.message());
    }
    if (!ddp && prev->update != leaf->state_before) {
      return fail("chain break: step " + std::to_string(step) + " does not start where step " +
                  std::to_string(step - 1) + " ended");
    }
  }
  if (o.end_state() != q.delta_audit()) return fail("the opening is not the state the request names");
  // A Δ audit is exact arithmetic on opened states, the same on every class.
  if (q.delta_audit()) return AuditDelta(q, *commitment, *leaf);
  const verifier::JudgeKind judge = calibrations_.Judge(leaf->determinism_class, class_);
  if (judge == verifier::JudgeKind::kNone) {
    return cannot("the prover's determinism class is not this verifier's, and the job calibrates no tolerance for the pair");
  }
  if (ddp) {
    auto own = rounds_.find(q.round());
    if (own == rounds_.end() || step >= own->second.leaves.size() || !own->second.leaves[step]) {
      return cannot("this verifier holds no state of round " + std::to_string(q.round()) + " step " +
                    std::to_string(step));
    }
    if (own->second.leaves[step]->state_before != leaf->state_before) {
      return fail("step " + std::to_string(step) + " does not start from the state the group shared");
    }
  }
  auto kernel = Kernel();
  if (!kernel.ok()) return cannot("no replay kernel: " + kernel.status().message());
  auto state = verifier::DecodeTrainingState(o.state(), static_cast<uint64_t>((*kernel)->num_parameters()));
  if (!state.ok()) return fail("the opened state does not decode: " + state.status().message());
  auto state_digest = (*kernel)->StateDigest(*state);
  if (!state_digest.ok()) return fail("the opened state does not fit the model: " + state_digest.status().message());
  if (*state_digest != leaf->state_before) return fail("the opened state is not the state the leaf commits to");
  if (step == 0) {  // the round starts from the public θ_r
    std::optional<Digest> start;
    if (!q.round_start_theta().empty()) {
      auto d = DigestFromBytes(q.round_start_theta());
      if (!d.ok()) return cannot("malformed round-start θ digest");
      start = *d;
    } else if (q.round() == 0) {
      auto initial = (*kernel)->InitialState(spec_.seed());
      if (!initial.ok()) return cannot("cannot build θ_0: " + initial.status().message());
      auto d = (*kernel)->ParametersDigest(initial->params);
      if (!d.ok()) return cannot(d.status().message());
      start = *d;
    }
    if (start) {
      auto params = (*kernel)->ParametersDigest(state->params);
      if (!params.ok() || *params != *start) return fail("step 0 does not start from the round's public θ");
    }
  }
  const auto coords = InnerBatch(spec_, q.prover_shard(), spec_.num_peers(), 0, q.round(), step);
  const auto hyper = InnerHyper(spec_, q.round() * spec_.inner_steps() + step);
  verifier::TrainingState replayed_after;
  auto replayed = ddp ? (*kernel)->ReplayGradientStep(*state, coords)
                      : (*kernel)->ReplayLocalStep(*state, coords, hyper, &replayed_after);
  if (!replayed.ok()) {
    if (replayed.status().code() == StatusCode::kFailedPrecondition) {
      return fail("the committed state does not train: " + replayed.status().message());
    }
    return cannot("replay failed: " + replayed.status().message());
  }
  verifier::ReplayDecision decision = verifier::CompareBitwise(*leaf, *replayed);
  if (!decision.match() && judge == verifier::JudgeKind::kTolerance && !ddp) {
    auto judged = JudgeWithinTolerance(*leaf, *state, *replayed, replayed_after, o, **kernel);
    if (!judged.ok()) return cannot("tolerance: " + judged.status().message());
    decision = *judged;
  }
  v1::VerifyResult r = decision.match() ? MakeResult(id, v1::VERIFY_MATCH, "")
                                        : fail(decision.reason);
  r.set_state_before(DigestToBytes(replayed->state_before));
  r.set_batch(DigestToBytes(replayed->batch));
  r.set_update(DigestToBytes(replayed->update));
  r.set_loss_bits(replayed->loss_bits);
  return r;
}

Result<verifier::ReplayDecision> PeerVerification::JudgeWithinTolerance(const verifier::StepLeaf& leaf,
                                                                        const verifier::TrainingState& before,
                                                                        const verifier::ReplayedStep& replayed,
                                                                        const verifier::TrainingState& replayed_after,
                                                                        const v1::Opening& o, StepKernel& kernel) {
  const verifier::ToleranceCalibration* calibration = calibrations_.Find(leaf.determinism_class, class_);
  if (!calibration) return FailedPrecondition("no calibration for this pair");
  auto mismatch = [](std::string why) {
    return verifier::ReplayDecision{verifier::ReplayOutcome::kMismatch, std::move(why)};
  };
  // The post-step state is the prover's evidence: without it (or with one the leaf does not
  // commit to) it has not shown what its step produced.
  if (o.state_after().empty()) return mismatch("the opening lacks the state after the step");
  auto after = verifier::DecodeTrainingState(o.state_after(), static_cast<uint64_t>(kernel.num_parameters()));
  if (!after.ok()) return mismatch("the opened state after the step does not decode: " + after.status().message());
  auto after_digest = kernel.StateDigest(*after);
  if (!after_digest.ok()) return mismatch("the opened state after the step does not fit the model: " + after_digest.status().message());
  if (*after_digest != leaf.update) return mismatch("the opened state after the step is not the one the leaf commits to");
  auto decision = verifier::CompareStepWithTolerance(leaf, before, *after, replayed, replayed_after, *calibration, class_);
  if (decision.ok()) {
    spdlog::info("round {} step {}: not bit-identical across classes; judged against the calibrated limit {:.3e}: {}",
                 leaf.round, leaf.step, calibration->relative_l2_limit(), decision->match() ? "within" : "outside");
  }
  return decision;
}

v1::VerifyResult PeerVerification::AuditDelta(const v1::VerifyRequest& q, const verifier::SignedCommitment& c,
                                              const verifier::StepLeaf& leaf) {
  const uint64_t id = q.challenge_id();
  auto fail = [&](const std::string& why) { return MakeResult(id, v1::VERIFY_MISMATCH, "Δ audit: " + why); };
  auto cannot = [&](const std::string& why) { return MakeResult(id, v1::VERIFY_CANNOT_REPLAY, "Δ audit: " + why); };
  // The manifest is the prover's signed statement of what it sent; a forged or foreign one
  // proves nothing about the prover, so the coordinator (which checked it) is at fault.
  auto manifest = verifier::DecodeManifest(q.manifest());
  if (!manifest.ok() || !verifier::VerifyManifest(*manifest).ok()) return cannot("the manifest does not verify");
  if (manifest->body.peer != c.body.peer || manifest->body.job_id != job_id_ || manifest->body.round != q.round()) {
    return cannot("the manifest is not the prover's for this job and round");
  }
  if (leaf.step + 1 != c.body.leaf_count) return fail("the opened state is not the round's last");
  if (manifest->body.pseudo_gradient != c.body.pseudo_gradient) {
    return fail("the signed manifest and the signed commitment state different Δ digests");
  }
  auto kernel = Kernel();
  if (!kernel.ok()) return cannot("no replay kernel: " + kernel.status().message());
  const uint64_t n = static_cast<uint64_t>((*kernel)->num_parameters());
  // The stated size fixes each shard's size in a bad-payload proof, so it must be the model's.
  if (manifest->body.numel != n) {
    return fail("the signed manifest states a Δ of " + std::to_string(manifest->body.numel) + " elements, the model has " +
                std::to_string(n));
  }
  auto end = verifier::DecodeTrainingState(q.opening().state(), n);
  if (!end.ok()) return fail("the opened end state does not decode: " + end.status().message());
  auto end_digest = (*kernel)->StateDigest(*end);
  if (!end_digest.ok()) return fail("the opened end state does not fit the model: " + end_digest.status().message());
  if (*end_digest != leaf.update) return fail("the opened end state is not the state the last leaf commits to");
  // θ_start is public: every member of the round started from it, this verifier included.
  auto own = rounds_.find(q.round());
  if (own == rounds_.end() || own->second.states.empty() || own->second.states[0].params.size() != n) {
    return cannot("this verifier holds no round-start θ of round " + std::to_string(q.round()));
  }
  const std::vector<float>& start = own->second.states[0].params;
  if (!q.round_start_theta().empty()) {
    auto theta = (*kernel)->ParametersDigest(start);
    if (!theta.ok() || DigestToBytes(*theta) != q.round_start_theta()) {
      return cannot("this verifier's round-start θ is not the round's public θ");
    }
  }
  // Δ exactly as the trainer computes it (one correctly rounded subtraction per element).
  std::vector<float> delta(n);
  for (uint64_t i = 0; i < n; ++i) delta[i] = start[i] - end->params[i];
  const Digest recomputed = verifier::FloatsDigest(delta);
  v1::VerifyResult match = MakeResult(id, v1::VERIFY_MATCH, "");
  match.set_update(DigestToBytes(recomputed));
  if (recomputed != manifest->body.pseudo_gradient) {
    v1::VerifyResult r = fail("θ_start − θ_end of the committed steps is not the Δ it committed and sent");
    r.set_update(match.update());
    return r;
  }
  // The payloads: the codec's encoding of Δ plus what the prover still owed the wire (its
  // error-feedback residual, opened with the end state and stated in the manifest), recomputed
  // as the butterfly encodes them. The residual the encoding leaves must be the one the manifest
  // states: the next round's must start from it (the coordinator links the two manifests), so a
  // peer has no free choice of residual.
  const std::string codec = JobCodec(spec_);
  const auto& digests = manifest->body.shard_digests;
  const uint32_t world = static_cast<uint32_t>(digests.size());
  if (world == 0) return fail("the manifest names no shard");
  auto residual = verifier::DecodeResidual(q.opening().residual(), n);
  if (!residual.ok()) return fail("the opened residual does not decode: " + residual.status().message());
  if (verifier::ResidualDigest(*residual) != manifest->body.residual_in) {
    return fail("the opened residual is not the one its signed manifest states");
  }
  auto codec_id = collectives::codec::MakeCodec(codec);
  if (!codec_id.ok()) return cannot("the job's codec: " + codec_id.status().message());
  if (!(*codec_id)->lossy() && (manifest->body.residual_in != Digest{} || manifest->body.residual_out != Digest{})) {
    return fail("the manifest states an error-feedback residual for the lossless codec " + codec);
  }
  // PowerSGD's payload also depends on its warm-start Q, which nothing commits: there only
  // H(Δ) and the residual chain bind.
  if ((*codec_id)->id() == collectives::codec::CodecId::kPowerSgd) return match;
  const bool owed = manifest->body.residual_in != Digest{};  // else nothing was owed yet
  auto reencoded = collectives::ReencodeContributions(codec, world, delta, owed ? std::span<const float>(*residual)
                                                                                  : std::span<const float>());
  if (!reencoded.ok()) return fail("Δ plus the residual does not encode: " + reencoded.status().message());
  for (uint32_t s = 0; s < world; ++s) {
    if (reencoded->shard_digests[s] != digests[s]) {
      return fail("the manifest's payload digest for shard " + std::to_string(s) +
                  " is not the codec's encoding of Δ plus the opened residual");
    }
  }
  if (verifier::ResidualDigest(reencoded->residual_left) != manifest->body.residual_out) {
    return fail("the residual its encoding leaves is not the one its signed manifest states");
  }
  return match;
}

std::optional<v1::Envelope> PeerVerification::NotHeld(const v1::OpenRequest& q) const {
  spdlog::warn("cannot open round {} step {}{}: this peer no longer holds the round (it restarted, or the round is "
               "older than the ones it keeps)", q.round(),
               q.step(), q.aggregate() ? " (its aggregate)" : "");
  v1::Envelope reply = net::MakeEnvelope(job_id_);
  v1::Opening* o = reply.mutable_opening();
  o->set_challenge_id(q.challenge_id());
  o->set_round(q.round());
  o->set_step(q.step());
  o->set_aggregate(q.aggregate());
  o->set_not_held(true);
  return reply;
}

std::optional<v1::Envelope> PeerVerification::AnswerOpenRequest(const v1::OpenRequest& q) {
  if (q.inline_bulk() && hooks_ && hooks_->withhold_inline_bulk) return std::nullopt;
  auto opening = Open(q.round(), q.step(), q.end_state(), q.state_after());
  if (!opening.ok() && opening.status().code() == StatusCode::kNotFound) return NotHeld(q);
  if (!opening.ok()) {
    spdlog::warn("cannot open round {} step {}: {}", q.round(), q.step(), opening.status().ToString());
    return std::nullopt;
  }
  opening->set_challenge_id(q.challenge_id());
  const uint64_t detach_from =
      spec_.opening_bulk_min_bytes() ? spec_.opening_bulk_min_bytes() : verifier::kDetachedBulkMinBytes;
  if (!q.inline_bulk() && bulk_.offer && verifier::OpeningBulkBytes(*opening) >= detach_from) {
    auto bulk = std::make_shared<const std::string>(verifier::DetachOpeningBulk(*opening));
    auto digest = verifier::OpeningBulkDigest(*opening);  // hashed once, by the detach
    if (digest.ok() && !(hooks_ && hooks_->unserved_bulk)) bulk_.offer(*digest, std::move(bulk));
  }
  v1::Envelope reply = net::MakeEnvelope(job_id_);
  *reply.mutable_opening() = std::move(opening).value();
  return reply;
}

Result<std::optional<v1::Envelope>> PeerVerification::Handle(const v1::Envelope& request,
                                                              const net::PublicKey& coordinator_key) {
  if (!net::VerifyEnvelope(coordinator_key, request)) {
    return ProtocolError(net::PayloadName(request) + " is not signed by the coordinator");
  }
  v1::Envelope reply = net::MakeEnvelope(job_id_);
  if (request.has_open_request()) {
    const v1::OpenRequest& q = request.open_request();
    if (hooks_ && hooks_->withhold_openings) return std::optional<v1::Envelope>();
    if (q.aggregate()) {
      auto it = rounds_.find(q.round());
      if (it == rounds_.end()) return NotHeld(q);
      if (!it->second.owned_contributions) {
        spdlog::warn("cannot open what this peer aggregated in round {}: not held", q.round());
        return std::optional<v1::Envelope>();
      }
      v1::Opening* o = reply.mutable_opening();
      o->set_challenge_id(q.challenge_id());
      o->set_round(q.round());
      o->set_aggregate(true);
      for (const std::string& c : *it->second.owned_contributions) o->add_contributions(c);
      o->set_aggregate_residual(verifier::EncodeResidual(it->second.owned_residual_in));
      return std::optional<v1::Envelope>(std::move(reply));
    }
    return AnswerOpenRequest(q);
  }
  if (request.has_verify_request()) {
    const v1::VerifyRequest& q = request.verify_request();
    v1::VerifyResult result = Verify(q);
    if (hooks_ && hooks_->accuse_falsely) {
      result.set_outcome(v1::VERIFY_MISMATCH);
      result.set_reason("(false accusation by the attack harness)");
    }
    if (hooks_ && hooks_->vouch_always) {
      result.set_outcome(v1::VERIFY_MATCH);
      result.set_reason("");
    }
    auto prover = net::KeyFromBytes(q.prover_key());
    spdlog::info("{} of round {} step {} by {}: {}{}", q.referee() ? "referee replay" : "replay", q.round(),
                 q.opening().step(), prover.ok() ? net::ShortKey(*prover) : std::string("?"),
                 v1::VerifyOutcome_Name(result.outcome()), result.reason().empty() ? "" : " — " + result.reason());
    *reply.mutable_verify_result() = std::move(result);
    return std::optional<v1::Envelope>(std::move(reply));
  }
  return ProtocolError("not a verifier request: " + net::PayloadName(request));
}

}  // namespace tributary::runtime
