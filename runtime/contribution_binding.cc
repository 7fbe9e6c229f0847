#include "runtime/contribution_binding.h"

#include <utility>

#include "verifier/aggregate_statement.h"
#include "verifier/replay.h"

namespace tributary::runtime {

AttemptBinding::AttemptBinding(std::string job_id, const net::Identity* identity, uint64_t round,
                               uint32_t attempt, std::vector<net::PublicKey> members, uint32_t rank)
    : job_id_(std::move(job_id)),
      identity_(identity),
      round_(round),
      attempt_(attempt),
      members_(std::move(members)),
      rank_(rank) {
  binding_.attest = [this](std::span<const Digest> digests, std::span<const float> residual_in,
                           std::span<const float> residual_out) { return Attest(digests, residual_in, residual_out); };
  binding_.check = [this](uint32_t from, std::string_view attestation, const Digest& payload) {
    return Check(from, attestation, payload);
  };
  binding_.bad_payload = [this](uint32_t, std::string_view attestation, std::string_view payload) {
    BadPayload(attestation, payload);
  };
  binding_.attest_aggregate = [this](std::span<const Digest> contributions, std::vector<std::string> payloads,
                                     const Digest& aggregate, std::span<const float> in, std::span<const float> out) {
    return AttestAggregate(contributions, std::move(payloads), aggregate, in, out);
  };
  binding_.check_aggregate = [this](uint32_t owner, std::string_view statement, const Digest& payload) {
    return CheckAggregate(owner, statement, payload);
  };
}

const collectives::ContributionBinding& AttemptBinding::Bind(std::span<const float> values) {
  sent_digest_ = verifier::FloatsDigest(values);
  sent_numel_ = values.size();
  manifest_bytes_.reset();
  residual_in_.clear();
  claimed_residual_.reset();
  sent_shard_digests_.clear();
  owner_opening_ = {};
  {
    std::lock_guard<std::mutex> lock(mu_);
    statements_.assign(members_.size(), "");
  }
  return binding_;
}

void AttemptBinding::SetResidualTamper(std::function<void(std::span<float>)> tamper, bool claim_untampered) {
  binding_.tamper_residual = [this, tamper = std::move(tamper), claim_untampered](std::span<float> residual) {
    if (claim_untampered) claimed_residual_.emplace(residual.begin(), residual.end());
    tamper(residual);
  };
}

Result<std::vector<std::string>> AttemptBinding::Attest(std::span<const Digest> shard_digests,
                                                       std::span<const float> residual_in,
                                                       std::span<const float> residual_out) {
  if (!sent_digest_) return FailedPrecondition("attest before Bind()");
  verifier::ContributionManifest body;
  body.job_id = job_id_;
  body.peer = identity_->public_key();
  body.round = round_;
  body.attempt = attempt_;
  body.numel = sent_numel_;
  body.pseudo_gradient = *sent_digest_;
  if (claimed_residual_) residual_in = *claimed_residual_;  // the attack harness's lie
  body.residual_in = verifier::ResidualDigest(residual_in);
  body.residual_out = verifier::ResidualDigest(residual_out);
  body.shard_digests.assign(shard_digests.begin(), shard_digests.end());
  sent_shard_digests_ = body.shard_digests;
  if (tamper_) tamper_(body.shard_digests);
  TRIB_ASSIGN_OR_RETURN(verifier::SignedManifest manifest, verifier::SignManifest(body, *identity_));
  manifest_bytes_ = verifier::EncodeManifest(manifest);
  if (body.residual_in != Digest{}) residual_in_.assign(residual_in.begin(), residual_in.end());
  std::vector<std::string> attestations;
  attestations.reserve(shard_digests.size());
  for (uint64_t shard = 0; shard < shard_digests.size(); ++shard) {
    // The signature covers what is really sent, whatever the manifest claims: that pair is
    // what makes a lying manifest provable.
    attestations.push_back(verifier::EncodeAttestation(
        manifest, verifier::SignContribution(*identity_, manifest, shard, shard_digests[shard])));
  }
  return attestations;
}

Status AttemptBinding::Check(uint32_t from, std::string_view attestation, const Digest& payload) {
  if (from >= members_.size()) return InvalidArgument("contribution from rank " + std::to_string(from));
  verifier::ExpectedContribution expected;
  expected.job_id = job_id_;
  expected.sender = members_[from];
  expected.round = round_;
  expected.attempt = attempt_;
  expected.world = members_.size();
  expected.shard = rank_;
  expected.numel = sent_numel_;
  TRIB_ASSIGN_OR_RETURN(std::optional<verifier::ContributionMismatch> mismatch,
                        verifier::CheckAttestation(expected, attestation, payload));
  if (!mismatch) return Status::Ok();
  {
    std::lock_guard<std::mutex> lock(mu_);
    proofs_.push_back(verifier::EncodeMismatch(*mismatch));
  }
  return ProtocolError("rank " + std::to_string(from) + " sent shard " + std::to_string(rank_) +
                       " a payload its signed manifest does not state");
}

// The attestation passed Check, so the sender signed exactly these bytes for our shard.
void AttemptBinding::BadPayload(std::string_view attestation, std::string_view payload) {
  auto proof = verifier::MakeBadPayloadProof(attestation, rank_, std::string(payload));
  if (!proof.ok()) return;  // too large to carry: the sender is still blamed and left out
  std::lock_guard<std::mutex> lock(mu_);
  proofs_.push_back(verifier::EncodeBadPayload(*proof));
}

Result<std::string> AttemptBinding::AttestAggregate(std::span<const Digest> contributions,
                                                   std::vector<std::string> payloads, const Digest& aggregate,
                                                   std::span<const float> residual_in,
                                                   std::span<const float> residual_out) {
  if (!sent_digest_) return FailedPrecondition("attest an aggregate before Bind()");
  verifier::AggregateStatement body;
  body.job_id = job_id_;
  body.owner = identity_->public_key();
  body.round = round_;
  body.attempt = attempt_;
  body.world = members_.size();
  body.shard = rank_;
  body.numel = sent_numel_;
  body.contributions.assign(contributions.begin(), contributions.end());
  body.aggregate = aggregate;
  body.residual_in = verifier::ResidualDigest(residual_in);
  body.residual_out = verifier::ResidualDigest(residual_out);
  TRIB_ASSIGN_OR_RETURN(verifier::SignedAggregate signed_statement, verifier::SignAggregate(body, *identity_));
  std::string bytes = verifier::EncodeAggregateStatement(signed_statement);
  owner_opening_.contributions = std::move(payloads);
  owner_opening_.residual_in.clear();
  if (body.residual_in != Digest{}) owner_opening_.residual_in.assign(residual_in.begin(), residual_in.end());
  std::lock_guard<std::mutex> lock(mu_);
  if (rank_ < statements_.size()) statements_[rank_] = bytes;
  return bytes;
}

Status AttemptBinding::CheckAggregate(uint32_t owner, std::string_view statement, const Digest& payload) {
  if (owner >= members_.size() || owner >= sent_shard_digests_.size()) {
    return InvalidArgument("an aggregate from rank " + std::to_string(owner));
  }
  verifier::ExpectedAggregate expected;
  expected.job_id = job_id_;
  expected.owner = members_[owner];
  expected.round = round_;
  expected.attempt = attempt_;
  expected.world = members_.size();
  expected.shard = owner;
  expected.numel = sent_numel_;
  expected.receiver = rank_;
  expected.receiver_contribution = sent_shard_digests_[owner];
  expected.payload = payload;
  TRIB_RETURN_IF_ERROR(verifier::CheckAggregateAttestation(expected, statement).status());
  std::lock_guard<std::mutex> lock(mu_);
  statements_[owner] = std::string(statement);
  return Status::Ok();
}

std::vector<std::string> AttemptBinding::AggregateStatements() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const std::string& s : statements_) {
    if (!s.empty()) out.push_back(s);
  }
  return out;
}

std::vector<std::string> AttemptBinding::TakeProofs() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(proofs_, {});
}

}  // namespace tributary::runtime
