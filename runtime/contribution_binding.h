// The peer's side of "Sent Δ" (docs/VERIFIER.md): one attempt's pseudo-gradient goes out over
// the butterfly bound to a ContributionManifest this peer signs before sending anything, and
// every contribution this peer receives as a shard owner is checked against its sender's
// manifest before it is decoded.
//
// The all-gather is bound too (verifier/aggregate_statement.h): as owner of its shard this peer
// signs a statement of the contributions it aggregated and of the aggregate it returns, and as a
// receiver it checks each owner's statement (that it names the payload we sent) before decoding.
//
// What the attempt leaves behind: the signed manifest (for the RoundReport; the coordinator
// checks it against the step commitment and a Δ audit checks it against the committed steps),
// the digest of the Δ actually sent (for the commitment), and the proofs against senders (each
// a ContributionProof for the coordinator, which bans on it): a payload that contradicts its
// sender's manifest, or one that matches it and then does not decode or decodes to NaN/Inf.
//
// Thread-safety: Bind() and the accessors run on the training thread; the binding's `check`
// and `bad_payload` may run on a mesh io thread while the call is in progress, so the proofs
// are locked.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "collectives/butterfly.h"
#include "core/digest.h"
#include "core/status.h"
#include "net/identity.h"
#include "verifier/contribution.h"

namespace tributary::runtime {

class AttemptBinding {
 public:
  // `members`: the attempt's members by rank (their keys check the attestations); `rank` is ours.
  AttemptBinding(std::string job_id, const net::Identity* identity, uint64_t round, uint32_t attempt,
                 std::vector<net::PublicKey> members, uint32_t rank);
  AttemptBinding(const AttemptBinding&) = delete;
  AttemptBinding& operator=(const AttemptBinding&) = delete;

  // The binding for the call that sends `values` (this attempt's Δ, as it goes out). Kept alive
  // and unmoved by the caller for the duration of that call.
  const collectives::ContributionBinding& Bind(std::span<const float> values);

  // Attack harness only: rewrites the shard digests before they are signed (a manifest that
  // states payloads other than those sent).
  void SetManifestTamper(std::function<void(std::vector<Digest>&)> tamper) { tamper_ = std::move(tamper); }
  // Attack harness only: rewrites each encoded payload before it is digested and signed (a
  // payload with NaN/Inf or garbage that its manifest does state).
  void SetPayloadTamper(std::function<void(uint32_t shard, std::string& payload)> tamper) {
    binding_.tamper_payload = std::move(tamper);
  }

  // Attack harness only: rewrites the error-feedback residual before the call encodes with it.
  // `claim_untampered`: the manifest states, and an audit is opened, the residual as it was.
  void SetResidualTamper(std::function<void(std::span<float>)> tamper, bool claim_untampered = false);

  // After Bind(): FloatsDigest of the Δ handed to the collective.
  const std::optional<Digest>& sent_digest() const { return sent_digest_; }
  // After the call signed it: verifier::EncodeManifest of the signed manifest.
  const std::optional<std::string>& encoded_manifest() const { return manifest_bytes_; }
  // After the call signed it, once: the error-feedback residual the payloads were encoded with
  // (whole tensor; empty when the codec keeps none or it was all zero). A Δ audit opens it.
  std::vector<float> TakeSentResidual() { return std::exchange(residual_in_, {}); }
  // The proofs made as a shard owner, each a verifier::EncodeMismatch or EncodeBadPayload (what
  // ContributionProof.mismatch carries; verifier::DecodeContributionProof tells them apart).
  std::vector<std::string> TakeProofs();

  // After a successful call: the owners' signed statements (verifier::EncodeAggregateStatement)
  // this peer received or made, one per non-empty shard, for the RoundReport.
  std::vector<std::string> AggregateStatements() const;
  // After a successful call, what an audit of this peer as owner opens: the contributions it
  // aggregated (by rank) and what it owed its shard's stream before (the shard's elements;
  // empty when all zero). Empty when this rank's shard is empty.
  struct OwnerOpening {
    std::vector<std::string> contributions;
    std::vector<float> residual_in;
  };
  OwnerOpening TakeOwnerOpening() { return std::exchange(owner_opening_, {}); }

  // Attack harness only: rewrites this owner's aggregate before it is encoded and stated.
  void SetAggregateTamper(std::function<void(std::span<float>)> tamper) {
    binding_.tamper_aggregate = std::move(tamper);
  }

 private:
  Result<std::vector<std::string>> Attest(std::span<const Digest> shard_digests, std::span<const float> residual_in,
                                          std::span<const float> residual_out);
  Status Check(uint32_t from, std::string_view attestation, const Digest& payload);
  void BadPayload(std::string_view attestation, std::string_view payload);
  Result<std::string> AttestAggregate(std::span<const Digest> contributions, std::vector<std::string> payloads,
                                      const Digest& aggregate, std::span<const float> residual_in,
                                      std::span<const float> residual_out);
  Status CheckAggregate(uint32_t owner, std::string_view statement, const Digest& payload);

  std::string job_id_;
  const net::Identity* identity_;
  uint64_t round_;
  uint32_t attempt_;
  std::vector<net::PublicKey> members_;
  uint32_t rank_;
  std::function<void(std::vector<Digest>&)> tamper_;
  collectives::ContributionBinding binding_;
  std::optional<Digest> sent_digest_;
  uint64_t sent_numel_ = 0;
  std::optional<std::string> manifest_bytes_;
  std::vector<float> residual_in_;
  std::optional<std::vector<float>> claimed_residual_;  // SetResidualTamper(…, true)
  std::vector<Digest> sent_shard_digests_;  // what really went to each shard (not what a liar states)
  OwnerOpening owner_opening_;
  mutable std::mutex mu_;
  std::vector<std::string> proofs_;
  std::vector<std::string> statements_;  // by shard; "" where none arrived (an empty shard)
};

}  // namespace tributary::runtime
