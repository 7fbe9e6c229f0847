#include "verifier/challenge.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace tributary::verifier {
namespace {

constexpr uint64_t kDeadline = 10'000;
const std::string kClassA =
    "tributary.dclass.v1;device=cpu;torch=1.13.0;threads=1;blas=b;core=c;isa=avx2;env=";
const std::string kClassB =
    "tributary.dclass.v1;device=cpu;torch=1.13.0;threads=2;blas=b;core=c;isa=avx2;env=";

struct Peer {
  net::Identity id = net::Identity::Generate();
  SignedCommitment commit;
};

SignedCommitment Commit(const net::Identity& id, uint64_t round, const std::string& root_tag,
                        uint64_t leaves = 50, const std::string& dclass = kClassA) {
  RoundCommitment c;
  c.job_id = "job";
  c.peer = id.public_key();
  c.round = round;
  c.root = Sha256Of(root_tag);
  c.leaf_count = leaves;
  c.determinism_class = dclass;
  c.pseudo_gradient = Sha256Of("delta " + root_tag);
  return *SignCommitment(c, id);
}

std::vector<Peer> Peers(int n) {
  std::vector<Peer> peers(n);
  for (int i = 0; i < n; ++i) peers[i].commit = Commit(peers[i].id, 7, "root " + std::to_string(i));
  return peers;
}

std::vector<RoundCommitment> Bodies(const std::vector<Peer>& peers) {
  std::vector<RoundCommitment> out;
  for (const auto& p : peers) out.push_back(p.commit.body);
  return out;
}

std::vector<Participant> Participants(const std::vector<Peer>& peers) {
  std::vector<Participant> out;
  for (const auto& p : peers) {
    out.push_back({p.id.public_key(), p.commit.body.leaf_count, p.commit.body.determinism_class});
  }
  return out;
}

const Digest kEntropy = Sha256Of("revealed secret");

TEST(CommitReveal, RevealMustOpenTheCommitment) {
  const Digest secret = Sha256Of("coordinator secret");
  const Digest commitment = SecretCommitment(secret);
  EXPECT_TRUE(CheckReveal(commitment, secret).ok());
  EXPECT_EQ(CheckReveal(commitment, Sha256Of("other")).code(), StatusCode::kCorruption);
  EXPECT_NE(commitment, Sha256Of(std::string(secret.begin(), secret.end())))
      << "domain-separated from a plain hash";
}

TEST(ChallengeSeed, IsDeterministicAndOrderIndependent) {
  auto peers = Peers(5);
  auto bodies = Bodies(peers);
  const Digest seed = *ChallengeSeed("job", 7, bodies, kEntropy);
  std::reverse(bodies.begin(), bodies.end());
  EXPECT_EQ(*ChallengeSeed("job", 7, bodies, kEntropy), seed);
}

TEST(ChallengeSeed, DependsOnEveryRootAndTheEntropy) {
  auto peers = Peers(6);
  const auto bodies = Bodies(peers);
  const Digest seed = *ChallengeSeed("job", 7, bodies, kEntropy);
  const auto base = *SampleChallenges(seed, Participants(peers), {.samples_per_peer = 10});
  for (size_t i = 0; i < bodies.size(); ++i) {
    auto changed = bodies;
    changed[i].root[0] ^= 1;
    const Digest other = *ChallengeSeed("job", 7, changed, kEntropy);
    EXPECT_NE(other, seed) << "root " << i;
    auto sample = *SampleChallenges(other, Participants(peers), {.samples_per_peer = 10});
    bool differs = false;
    for (size_t k = 0; k < sample.size(); ++k) differs |= sample[k].step != base[k].step;
    EXPECT_TRUE(differs) << "changing root " << i << " must change the sample";
  }
  EXPECT_NE(*ChallengeSeed("job", 7, bodies, Sha256Of("other entropy")), seed);
  EXPECT_NE(*ChallengeSeed(
                "job", 8,
                [&] {
                  auto b = bodies;
                  for (auto& c : b) c.round = 8;
                  return b;
                }(),
                kEntropy),
            seed);
  auto fewer = bodies;
  fewer.pop_back();
  EXPECT_NE(*ChallengeSeed("job", 7, fewer, kEntropy), seed);
}

TEST(ChallengeSeed, RefusesDuplicatesAndForeignRounds) {
  auto peers = Peers(3);
  auto bodies = Bodies(peers);
  bodies.push_back(bodies[0]);
  EXPECT_EQ(ChallengeSeed("job", 7, bodies, kEntropy).status().code(),
            StatusCode::kInvalidArgument);
  auto foreign = Bodies(peers);
  foreign[1].round = 6;
  EXPECT_FALSE(ChallengeSeed("job", 7, foreign, kEntropy).ok());
}

TEST(SampleChallenges, DeterministicDistinctStepsAndNeverSelfVerification) {
  auto peers = Peers(7);
  const Digest seed = *ChallengeSeed("job", 7, Bodies(peers), kEntropy);
  for (uint32_t verifiers : {1u, 2u, 3u}) {
    ChallengeParams params{.samples_per_peer = 20, .verifiers_per_step = verifiers};
    auto a = SampleChallenges(seed, Participants(peers), params);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    auto shuffled = Participants(peers);
    std::reverse(shuffled.begin(), shuffled.end());
    auto b = SampleChallenges(seed, shuffled, params);
    ASSERT_EQ(a->size(), b->size());
    ASSERT_EQ(a->size(), 7u * 20u);
    std::map<net::PublicKey, std::set<uint64_t>> steps;
    for (size_t i = 0; i < a->size(); ++i) {
      const Challenge& ch = (*a)[i];
      EXPECT_EQ(ch.prover, (*b)[i].prover);
      EXPECT_EQ(ch.step, (*b)[i].step);
      EXPECT_EQ(ch.verifiers, (*b)[i].verifiers);
      EXPECT_LT(ch.step, 50u);
      EXPECT_TRUE(steps[ch.prover].insert(ch.step).second) << "steps drawn without replacement";
      ASSERT_EQ(ch.verifiers.size(), verifiers);
      std::set<net::PublicKey> distinct(ch.verifiers.begin(), ch.verifiers.end());
      EXPECT_EQ(distinct.size(), verifiers) << "verifiers of one step are distinct";
      EXPECT_EQ(distinct.count(ch.prover), 0u) << "a prover never verifies itself";
    }
  }
}

TEST(SampleChallenges, EveryStepAndEveryVerifierCanBeDrawn) {
  // Uniformity smoke test: over many seeds every step index and every other peer shows up.
  auto peers = Peers(4);
  std::set<uint64_t> steps_seen;
  std::map<net::PublicKey, std::set<net::PublicKey>> verifiers_seen;
  for (int s = 0; s < 200; ++s) {
    const Digest seed = Sha256Of("seed " + std::to_string(s));
    auto sample = *SampleChallenges(seed, Participants(peers), {.samples_per_peer = 2});
    for (const auto& ch : sample) {
      steps_seen.insert(ch.step);
      verifiers_seen[ch.prover].insert(ch.verifiers[0]);
    }
  }
  EXPECT_EQ(steps_seen.size(), 50u);
  for (const auto& [prover, seen] : verifiers_seen) EXPECT_EQ(seen.size(), 3u);
}

TEST(SampleChallenges, PrefersVerifiersOfTheProversClass) {
  std::vector<Peer> peers(5);
  for (int i = 0; i < 5; ++i) {
    peers[i].commit =
        Commit(peers[i].id, 7, "r" + std::to_string(i), 50, i < 3 ? kClassA : kClassB);
  }
  const Digest seed = *ChallengeSeed("job", 7, Bodies(peers), kEntropy);
  auto sample = *SampleChallenges(seed, Participants(peers),
                                  {.samples_per_peer = 10, .verifiers_per_step = 1});
  std::map<net::PublicKey, std::string> cls;
  for (const auto& p : peers) cls[p.id.public_key()] = p.commit.body.determinism_class;
  for (const auto& ch : sample) EXPECT_EQ(cls[ch.verifiers[0]], cls[ch.prover]);
  // Class B has two members; asking for 2 verifiers tops up from class A.
  auto two = *SampleChallenges(seed, Participants(peers),
                               {.samples_per_peer = 3, .verifiers_per_step = 2});
  for (const auto& ch : two) {
    if (cls[ch.prover] == kClassB) {
      EXPECT_EQ(cls[ch.verifiers[0]], kClassB);
    }
  }
}

// Where the prover's class has too few members, classes calibrated for it are drawn before
// classes that cannot judge its steps at all.
TEST(SampleChallenges, TopsUpFromCalibratedClassesBeforeTheRest) {
  const std::string kClassC = "class-c";
  std::vector<Peer> peers(7);
  for (int i = 0; i < 7; ++i) {
    peers[i].commit = Commit(peers[i].id, 7, "r" + std::to_string(i), 50, i < 1 ? kClassB : i < 4 ? kClassA : kClassC);
  }
  auto b_on_c = FitTolerance(kClassB, kClassC, std::vector<DifferenceSample>{{1e-6, 0}}, 4.0, 1);
  ASSERT_TRUE(b_on_c.ok());
  auto table = CalibrationTable::Decode({EncodeCalibration(*b_on_c)});
  ASSERT_TRUE(table.ok());
  std::map<net::PublicKey, std::string> cls;
  for (const auto& p : peers) cls[p.id.public_key()] = p.commit.body.determinism_class;
  int uncalibrated_without_table = 0;
  for (int trial = 0; trial < 20; ++trial) {
    const Digest seed = *ChallengeSeed("job", 7, Bodies(peers), Sha256Of("entropy " + std::to_string(trial)));
    auto sample = *SampleChallenges(seed, Participants(peers),
                                    {.samples_per_peer = 3, .verifiers_per_step = 3, .calibrations = &*table});
    for (const auto& ch : sample) {
      if (cls[ch.prover] != kClassB) continue;
      for (const auto& v : ch.verifiers) EXPECT_EQ(cls[v], kClassC) << "class B's only calibrated verifiers are C";
    }
    // Without the table, the same draw mixes A and C.
    auto plain = *SampleChallenges(seed, Participants(peers), {.samples_per_peer = 3, .verifiers_per_step = 3});
    for (const auto& ch : plain) {
      if (cls[ch.prover] != kClassB) continue;
      for (const auto& v : ch.verifiers) uncalibrated_without_table += cls[v] == kClassA;
    }
  }
  EXPECT_GT(uncalibrated_without_table, 0);
}

TEST(SampleChallenges, SmallRoundsAndImpossibleRequests) {
  auto peers = Peers(2);
  const Digest seed = *ChallengeSeed("job", 7, Bodies(peers), kEntropy);
  auto all = *SampleChallenges(seed, Participants(peers), {.samples_per_peer = 500});
  EXPECT_EQ(all.size(), 100u) << "q above the step count samples every step once";
  EXPECT_EQ(
      SampleChallenges(seed, Participants(peers), {.samples_per_peer = 1, .verifiers_per_step = 2})
          .status()
          .code(),
      StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      SampleChallenges(seed, Participants(peers), {.samples_per_peer = 1, .verifiers_per_step = 0})
          .status()
          .code(),
      StatusCode::kInvalidArgument);
  auto dup = Participants(peers);
  dup.push_back(dup[0]);
  EXPECT_EQ(SampleChallenges(seed, dup, {}).status().code(), StatusCode::kInvalidArgument);
}

TEST(CommitmentBook, LateCommitIsRejectedAndCannotInfluenceTheSeed) {
  auto peers = Peers(4);
  const Digest secret = Sha256Of("round 7 secret");
  RoundSchedule schedule{"job", 7, kDeadline, SecretCommitment(secret)};
  CommitmentBook book(schedule);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(book.Submit(peers[i].commit, 1000 + i).ok());
  // Exactly at the deadline is already late.
  EXPECT_EQ(book.Submit(peers[3].commit, kDeadline).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(AdmitCommitment(schedule, peers[3].commit, kDeadline - 1, false).code(),
            StatusCode::kOk);
  EXPECT_EQ(AdmitCommitment(schedule, peers[3].commit, kDeadline + 1, false).code(),
            StatusCode::kDeadlineExceeded);
  // No challenge before the deadline; the seed covers only the admitted roots.
  EXPECT_EQ(book.Seal(secret, kDeadline - 1).status().code(), StatusCode::kFailedPrecondition);
  auto seed = book.Seal(secret, kDeadline);
  ASSERT_TRUE(seed.ok()) << seed.status().ToString();
  std::vector<Peer> on_time(peers.begin(), peers.begin() + 3);
  EXPECT_EQ(*seed, *ChallengeSeed("job", 7, Bodies(on_time), secret));
  // Once the challenge exists, even an "early-stamped" submission is refused: sealed.
  EXPECT_EQ(book.Submit(peers[3].commit, 5).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(book.admitted().size(), 3u);
  EXPECT_EQ(*book.Seal(secret, kDeadline + 5), *seed);
  EXPECT_FALSE(book.Seal(Sha256Of("other"), kDeadline + 5).ok());
}

TEST(CommitmentBook, RevealMustMatchTheSecretCommitment) {
  auto peers = Peers(2);
  CommitmentBook book({"job", 7, kDeadline, SecretCommitment(Sha256Of("real"))});
  ASSERT_TRUE(book.Submit(peers[0].commit, 1).ok());
  EXPECT_EQ(book.Seal(Sha256Of("fake"), kDeadline).status().code(), StatusCode::kCorruption);
  EXPECT_FALSE(book.sealed());
  EXPECT_TRUE(book.Seal(Sha256Of("real"), kDeadline).ok());
}

TEST(CommitmentBook, RefusesForgedForeignAndEquivocatingCommitments) {
  auto peers = Peers(2);
  CommitmentBook book({"job", 7, kDeadline, std::nullopt});
  SignedCommitment forged = peers[0].commit;
  forged.signature[3] ^= 1;
  EXPECT_EQ(book.Submit(forged, 1).code(), StatusCode::kCorruption);
  EXPECT_EQ(book.Submit(Commit(peers[0].id, 6, "old round"), 1).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(book.Submit(peers[0].commit, 1).ok());
  EXPECT_TRUE(book.Submit(peers[0].commit, 2).ok()) << "a resend of the same commitment is fine";
  EXPECT_EQ(book.Submit(Commit(peers[0].id, 7, "second story"), 3).code(),
            StatusCode::kProtocolError);
  ASSERT_EQ(book.equivocations().size(), 1u);
  EXPECT_TRUE(IsEquivocation(book.equivocations()[0].first, book.equivocations()[0].second));
  EXPECT_EQ(book.admitted().size(), 1u);
  EXPECT_EQ(book.admitted()[0].body.root, peers[0].commit.body.root) << "the first story stands";
  EXPECT_EQ(
      CommitmentBook({"job", 7, kDeadline, std::nullopt}).Seal(kEntropy, kDeadline).status().code(),
      StatusCode::kFailedPrecondition)
      << "no commitments, no challenge";
}

TEST(Detection, MatchesTheBriefsTables) {
  // Bound table (brief §4): q for P in {90%, 99%} at f in {1%, 5%, 10%}.
  EXPECT_EQ(SamplesForDetection(0.01, 0.90), 230u);
  EXPECT_EQ(SamplesForDetection(0.01, 0.99), 459u);
  EXPECT_EQ(SamplesForDetection(0.05, 0.99), 90u);
  EXPECT_EQ(SamplesForDetection(0.10, 0.99), 44u);
  // Exact hypergeometric values for N = 1000 (brief §4).
  EXPECT_NEAR(DetectionExact(1000, 10, 100), 0.653, 0.001);
  EXPECT_NEAR(DetectionExact(1000, 10, 300), 0.972, 0.001);
  EXPECT_NEAR(DetectionExact(1000, 50, 50), 0.928, 0.001);
  EXPECT_NEAR(DetectionExact(1000, 50, 100), 0.9955, 0.0005);
  // Without replacement is never worse than the independent bound.
  for (uint64_t q : {1, 10, 45, 90, 200}) {
    EXPECT_GE(DetectionExact(1000, 50, q) + 1e-12, DetectionBound(0.05, q)) << q;
  }
  EXPECT_EQ(DetectionExact(1000, 0, 100), 0.0);
  EXPECT_EQ(DetectionExact(10, 5, 6), 1.0);
  EXPECT_LE(SamplesForDetectionExact(1000, 50, 0.99), SamplesForDetection(0.05, 0.99));
}

}  // namespace
}  // namespace tributary::verifier
