#include "verifier/challenge.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "verifier/detail/encoding.h"

namespace tributary::verifier {
namespace {

constexpr std::string_view kSecretLabel = "tributary.verifier.secret.v1";
constexpr std::string_view kSeedLabel = "tributary.verifier.challenge.v1";

bool KeyLess(const net::PublicKey& a, const net::PublicKey& b) { return a < b; }

// Counter-mode SHA-256 stream: word i comes from SHA-256(key ‖ i / 4). Anyone holding the seed
// recomputes every draw; nobody can predict a draw without the seed.
class HashStream {
 public:
  HashStream(const Digest& seed, std::string_view purpose, std::string_view tail) {
    detail::Writer w;
    w.Fixed(seed);
    w.Str(purpose);
    w.Str(tail);
    key_ = w.bytes();
  }
  uint64_t Next() {
    if (used_ == 4) {
      detail::Writer w;
      w.Raw(key_);
      w.U64(block_++);
      buffer_ = Sha256Of(w.bytes());
      used_ = 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(buffer_[8 * used_ + i]) << (8 * i);
    ++used_;
    return v;
  }
  // Uniform in [0, bound) by rejection (no modulo bias). bound > 0.
  uint64_t Below(uint64_t bound) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    for (;;) {
      const uint64_t v = Next();
      if (v < limit) return v % bound;
    }
  }

 private:
  std::string key_;
  Digest buffer_{};
  int used_ = 4;
  uint64_t block_ = 0;
};

std::string KeyBytes(const net::PublicKey& key) { return net::KeyToBytes(key); }

// Floyd's algorithm: `count` distinct values of [0, n), each subset equally likely; ascending.
std::vector<uint64_t> DistinctBelow(HashStream& stream, uint64_t n, uint64_t count) {
  std::vector<uint64_t> out;
  if (count >= n) {
    for (uint64_t i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  std::unordered_set<uint64_t> chosen;
  for (uint64_t j = n - count; j < n; ++j) {
    const uint64_t t = stream.Below(j + 1);
    if (!chosen.insert(t).second) chosen.insert(j);
  }
  out.assign(chosen.begin(), chosen.end());
  std::sort(out.begin(), out.end());
  return out;
}

// `count` distinct entries of `pool` in draw order (partial Fisher–Yates).
std::vector<net::PublicKey> DrawVerifiers(HashStream& stream, std::vector<net::PublicKey> pool,
                                          size_t count) {
  std::vector<net::PublicKey> out;
  for (size_t i = 0; i < count && i < pool.size(); ++i) {
    const size_t j = i + stream.Below(pool.size() - i);
    std::swap(pool[i], pool[j]);
    out.push_back(pool[i]);
  }
  return out;
}

}  // namespace

Digest SecretCommitment(const Digest& secret) {
  detail::Writer w;
  w.Raw(kSecretLabel);
  w.Fixed(secret);
  return Sha256Of(w.bytes());
}

Status CheckReveal(const Digest& commitment, const Digest& revealed) {
  if (SecretCommitment(revealed) != commitment) {
    return Corruption("revealed challenge secret does not match its commitment " +
                      ShortHex(commitment));
  }
  return Status::Ok();
}

Status AdmitCommitment(const RoundSchedule& schedule, const SignedCommitment& c,
                       uint64_t received_at_ms, bool sealed) {
  if (sealed || received_at_ms >= schedule.commit_deadline_ms) {
    return DeadlineExceeded("commitment of peer " + net::ShortKey(c.body.peer) + " for round " +
                            std::to_string(c.body.round) + " arrived at " +
                            std::to_string(received_at_ms) + " ms, deadline " +
                            std::to_string(schedule.commit_deadline_ms) + " ms" +
                            (sealed ? " (challenge already derived)" : ""));
  }
  TRIB_RETURN_IF_ERROR(VerifyCommitment(c));
  if (c.body.job_id != schedule.job_id || c.body.round != schedule.round) {
    return InvalidArgument("commitment is for job " + c.body.job_id + " round " +
                           std::to_string(c.body.round) + ", expected job " + schedule.job_id +
                           " round " + std::to_string(schedule.round));
  }
  return Status::Ok();
}

Status CommitmentBook::Submit(const SignedCommitment& c, uint64_t received_at_ms) {
  TRIB_RETURN_IF_ERROR(AdmitCommitment(schedule_, c, received_at_ms, sealed_));
  auto it = std::lower_bound(
      admitted_.begin(), admitted_.end(), c.body.peer,
      [](const SignedCommitment& a, const net::PublicKey& k) { return KeyLess(a.body.peer, k); });
  if (it != admitted_.end() && it->body.peer == c.body.peer) {
    if (it->body == c.body) return Status::Ok();
    equivocations_.emplace_back(*it, c);
    return ProtocolError("peer " + net::ShortKey(c.body.peer) + " equivocated: two different " +
                         "signed commitments for round " + std::to_string(c.body.round));
  }
  admitted_.insert(it, c);
  return Status::Ok();
}

Result<Digest> CommitmentBook::Seal(const Digest& entropy, uint64_t now_ms) {
  if (sealed_) {
    if (entropy != sealed_entropy_)
      return FailedPrecondition("round already sealed with other entropy");
    return seed_;
  }
  if (now_ms < schedule_.commit_deadline_ms) {
    return FailedPrecondition("the commit deadline of round " + std::to_string(schedule_.round) +
                              " has not passed; the challenge must not exist yet");
  }
  if (admitted_.empty()) return FailedPrecondition("no commitment was admitted this round");
  if (schedule_.secret_commitment)
    TRIB_RETURN_IF_ERROR(CheckReveal(*schedule_.secret_commitment, entropy));
  std::vector<RoundCommitment> bodies;
  for (const SignedCommitment& c : admitted_) bodies.push_back(c.body);
  TRIB_ASSIGN_OR_RETURN(
      seed_, ChallengeSeed(schedule_.job_id, schedule_.round, std::move(bodies), entropy));
  sealed_ = true;
  sealed_entropy_ = entropy;
  return seed_;
}

Result<Digest> ChallengeSeed(const std::string& job_id, uint64_t round,
                             std::vector<RoundCommitment> commitments, const Digest& entropy) {
  std::sort(
      commitments.begin(), commitments.end(),
      [](const RoundCommitment& a, const RoundCommitment& b) { return KeyLess(a.peer, b.peer); });
  detail::Writer w;
  w.Raw(kSeedLabel);
  w.Str(job_id);
  w.U64(round);
  w.U64(commitments.size());
  for (size_t i = 0; i < commitments.size(); ++i) {
    const RoundCommitment& c = commitments[i];
    if (i > 0 && c.peer == commitments[i - 1].peer) {
      return InvalidArgument("two commitments from peer " + net::ShortKey(c.peer));
    }
    if (c.job_id != job_id || c.round != round) {
      return InvalidArgument("commitment of peer " + net::ShortKey(c.peer) +
                             " is for another round");
    }
    w.Fixed(c.peer);
    w.Fixed(c.root);
    w.U64(c.leaf_count);
  }
  w.Fixed(entropy);
  return Sha256Of(w.bytes());
}

Result<std::vector<Challenge>> SampleChallenges(const Digest& seed,
                                                std::vector<Participant> participants,
                                                const ChallengeParams& params) {
  if (params.verifiers_per_step == 0)
    return InvalidArgument("each step needs at least one verifier");
  std::sort(participants.begin(), participants.end(),
            [](const Participant& a, const Participant& b) { return KeyLess(a.key, b.key); });
  for (size_t i = 1; i < participants.size(); ++i) {
    if (participants[i].key == participants[i - 1].key) {
      return InvalidArgument("participant " + net::ShortKey(participants[i].key) + " listed twice");
    }
  }
  if (participants.size() < size_t{params.verifiers_per_step} + 1) {
    return FailedPrecondition(std::to_string(participants.size()) + " participants cannot give " +
                              std::to_string(params.verifiers_per_step) +
                              " verifiers per step that are not the prover");
  }
  std::vector<Challenge> out;
  for (const Participant& prover : participants) {
    if (prover.leaf_count == 0) continue;
    HashStream steps(seed, "steps", KeyBytes(prover.key));
    // Same-class verifiers first (they replay bitwise), then the classes calibrated for the
    // prover's (they judge within a tolerance), then the others; each tier in key order.
    std::vector<net::PublicKey> same, calibrated, other;
    for (const Participant& p : participants) {
      if (p.key == prover.key) continue;
      if (p.determinism_class == prover.determinism_class) {
        same.push_back(p.key);
      } else if (params.calibrations &&
                 params.calibrations->Find(prover.determinism_class, p.determinism_class)) {
        calibrated.push_back(p.key);
      } else {
        other.push_back(p.key);
      }
    }
    for (uint64_t step : DistinctBelow(steps, prover.leaf_count, params.samples_per_peer)) {
      detail::Writer tail;
      tail.Fixed(prover.key);
      tail.U64(step);
      HashStream pick(seed, "verifiers", tail.bytes());
      Challenge ch{prover.key, step, DrawVerifiers(pick, same, params.verifiers_per_step)};
      for (const std::vector<net::PublicKey>* tier : {&calibrated, &other}) {
        if (ch.verifiers.size() >= params.verifiers_per_step) break;
        for (const auto& key : DrawVerifiers(pick, *tier, params.verifiers_per_step - ch.verifiers.size())) {
          ch.verifiers.push_back(key);
        }
      }
      out.push_back(std::move(ch));
    }
  }
  return out;
}

double DetectionBound(double f, uint64_t q) {
  return 1.0 - std::pow(1.0 - f, static_cast<double>(q));
}

double DetectionExact(uint64_t n, uint64_t bad, uint64_t q) {
  if (bad == 0 || q == 0) return 0.0;
  if (bad >= n || q > n - bad) return 1.0;  // cannot avoid every fake step
  // C(n − bad, q) / C(n, q) = Π_{i<q} (n − bad − i) / (n − i), accumulated in logs.
  double log_miss = 0;
  for (uint64_t i = 0; i < q; ++i) {
    log_miss += std::log(static_cast<double>(n - bad - i)) - std::log(static_cast<double>(n - i));
  }
  return 1.0 - std::exp(log_miss);
}

uint64_t SamplesForDetection(double f, double p) {
  return static_cast<uint64_t>(std::ceil(std::log(1.0 - p) / std::log(1.0 - f) - 1e-12));
}

uint64_t SamplesForDetectionExact(uint64_t n, uint64_t bad, double p) {
  for (uint64_t q = 1; q <= n; ++q) {
    if (DetectionExact(n, bad, q) >= p) return q;
  }
  return n;
}

}  // namespace tributary::verifier
