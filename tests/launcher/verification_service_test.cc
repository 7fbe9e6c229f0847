// The coordinator's verifier (launcher/verification_service.h) on protocol inputs: real signed
// commitments over Merkle trees, the service's own store, and the envelopes it addresses to
// peers collected as they would be sent. Replays themselves are covered by
// tests/runtime/verification_test.cc and, end to end, tests/integration/verifier_attack_test.cc.
#include "launcher/verification_service.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <map>

#include "collectives/butterfly.h"
#include "collectives/codec/codec.h"
#include "collectives/robust/aggregator.h"
#include "launcher/store.h"
#include "runtime/job_spec.h"
#include "tests/common/contribution_proofs.h"
#include "verifier/opening_bulk.h"
#include "verifier/aggregate_statement.h"
#include "verifier/chain_ends.h"
#include "verifier/commitment.h"
#include "verifier/contribution.h"

namespace tributary::launcher {
namespace {

constexpr uint64_t kSteps = 4;

struct Prover {
  net::Identity id = net::Identity::Generate();
  // The optimiser its next Commit() starts from (the chain ends its reports state).
  Digest start_moments = verifier::FreshOptimizerDigest();
  verifier::StateHalves start, end;  // of its last Commit()
  std::vector<verifier::StepLeaf> leaves;
  std::optional<verifier::MerkleTree> tree;
  verifier::SignedCommitment commitment;
};

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = runtime::DefaultJobSpec();
    spec_.set_mode(v1::MODE_DILOCO);
    spec_.set_inner_steps(kSteps);
    spec_.set_verify_samples(2);
    spec_.set_verifiers_per_step(1);
    spec_.set_verify_timeout_ms(1000);
    job_ = runtime::JobIdOf(spec_);
    auto store = CoordinatorStore::Open(":memory:");
    ASSERT_TRUE(store.ok());
    store_ = std::move(store).value();
    service_ = Make();
    for (auto& p : provers_) Commit(p, 0);
  }

  std::unique_ptr<VerificationService> Make() {
    auto s = VerificationService::Create(
        spec_, job_, &coordinator_, store_.get(),
        [this](const net::PublicKey& to, v1::Envelope e) {
          sent_[to].push_back(std::move(e));
          return true;
        },
        [this](const net::PublicKey& who, const std::string& why) { bans_[who] = why; });
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(s).value();
  }

  // Leaves that chain, a tree and a signed commitment for `round`: step 0 starts from
  // StartTheta(p) and p.start_moments, the last step ends at p.end.
  void Commit(Prover& p, uint64_t round, uint8_t variant = 0, const std::string& dclass = "cpu-test") {
    p.leaves.clear();
    const std::string tag = net::KeyToBytes(p.id.public_key()) + std::to_string(round) + std::to_string(variant);
    p.start = {StartTheta(p), p.start_moments};
    p.end = {Sha256Of(tag + "θ end"), Sha256Of(tag + "moments end")};
    Digest state = verifier::StepStateDigest(p.start.parameters, p.start.optimizer);
    for (uint64_t t = 0; t < kSteps; ++t) {
      verifier::StepLeaf leaf;
      leaf.job_id = job_;
      leaf.round = round;
      leaf.step = t;
      leaf.state_before = state;
      leaf.batch = Sha256Of("batch" + std::to_string(t));
      state = t + 1 == kSteps ? verifier::StepStateDigest(p.end.parameters, p.end.optimizer)
                              : Sha256Of(DigestToBytes(state) + std::to_string(variant));
      leaf.update = state;
      leaf.loss_bits = verifier::LossBits(2.5);
      leaf.determinism_class = dclass;
      p.leaves.push_back(leaf);
    }
    auto tree = verifier::BuildRoundTree(p.leaves);
    ASSERT_TRUE(tree.ok());
    verifier::RoundCommitment body{job_, p.id.public_key(), round, tree->root(), kSteps, dclass, {}};
    auto signed_body = verifier::SignCommitment(body, p.id);
    ASSERT_TRUE(signed_body.ok());
    p.tree = std::move(tree).value();
    p.commitment = *signed_body;
  }

  // The θ digest every prover's steps start from here (the service is told it per report).
  static Digest StartTheta(const Prover& p) { return Sha256Of(net::KeyToBytes(p.id.public_key()) + "θ start"); }

  v1::ChainEnds Ends(const Prover& p) {
    return verifier::MakeChainEnds(p.leaves.front(), *p.tree->Prove(0), p.leaves.back(), *p.tree->Prove(kSteps - 1),
                                   p.start, p.end);
  }

  v1::StepCommitment Message(const Prover& p) {
    v1::StepCommitment m;
    m.set_round(p.commitment.body.round);
    m.set_commitment(verifier::EncodeCommitment(p.commitment));
    return m;
  }

  v1::Opening Open(const Prover& p, uint64_t id, uint64_t step) {
    v1::Opening o;
    o.set_challenge_id(id);
    o.set_round(p.commitment.body.round);
    o.set_step(step);
    o.set_leaf(verifier::EncodeLeaf(p.leaves[step]));
    o.set_proof(verifier::EncodeProof(*p.tree->Prove(step)));
    if (step > 0) {
      o.set_previous_leaf(verifier::EncodeLeaf(p.leaves[step - 1]));
      o.set_previous_proof(verifier::EncodeProof(*p.tree->Prove(step - 1)));
    }
    o.set_state("opaque state: only verifiers decode it");
    return o;
  }

  // Everyone commits round 0, reports, and the round commits.
  void CommitRound() {
    service_->OnRoundStart(0, "");
    for (auto& p : provers_) ASSERT_TRUE(service_->OnCommitment(p.id.public_key(), Message(p), 10).ok());
    std::vector<VerificationService::Member> members;
    for (uint32_t i = 0; i < provers_.size(); ++i) members.push_back({provers_[i].id.public_key(), i});
    service_->OnRoundCommitted(0, members, 20);
  }

  std::vector<v1::OpenRequest> OpenRequests(const Prover& p) {
    std::vector<v1::OpenRequest> out;
    for (const auto& e : sent_[p.id.public_key()]) {
      if (e.has_open_request()) out.push_back(e.open_request());
    }
    return out;
  }

  // The manifest `p` signs for the Δ it sent in round 0 (digests stand in for the payloads).
  std::string Manifest(const Prover& p, uint32_t attempt = 0, uint32_t world = 3,
                       std::optional<Digest> delta = std::nullopt, Digest residual_in = {}, Digest residual_out = {}) {
    verifier::ContributionManifest m;
    m.job_id = job_;
    m.peer = p.id.public_key();
    m.round = p.commitment.body.round;
    m.attempt = attempt;
    m.numel = 30;
    m.pseudo_gradient = delta ? *delta : p.commitment.body.pseudo_gradient;
    m.residual_in = residual_in;
    m.residual_out = residual_out;
    for (uint32_t i = 0; i < world; ++i) m.shard_digests.push_back(Sha256Of("payload " + std::to_string(i)));
    auto signed_manifest = verifier::SignManifest(m, p.id);
    EXPECT_TRUE(signed_manifest.ok());
    return verifier::EncodeManifest(*signed_manifest);
  }

  // Round 0 started; every prover commits and reports it (the Report() statements); `members`
  // are the three by rank.
  void EveryoneReportsRound0(std::vector<VerificationService::Member>& members) {
    service_->OnRoundStart(0, "");
    for (uint32_t i = 0; i < 3; ++i) {
      const auto& key = provers_[i].id.public_key();
      ASSERT_TRUE(service_->OnCommitment(key, Message(provers_[i]), 10).ok());
      ASSERT_TRUE(service_->CheckReport(key, Report(provers_[i], Manifest(provers_[i])), 3).ok());
      members.push_back({key, i});
    }
  }

  // Aggregate audits asked of any prover so far.
  size_t AggregateRequests() {
    size_t n = 0;
    for (const Prover& p : provers_) {
      for (const v1::OpenRequest& q : OpenRequests(p)) n += q.aggregate();
    }
    return n;
  }

  // Round 0 as the coordinator stores it when it commits, with these residual links.
  void RecordRound0(const std::vector<ResidualLink>& links) {
    RoundRecord record;
    record.round = 0;
    record.theta_digest = std::string(32, 't');
    record.state_digest = std::string(32, 's');
    record.residual_links = links;
    ASSERT_TRUE(store_->RecordRound(job_, record).ok());
  }

  uint32_t RankOf(const Prover& p) const {
    for (uint32_t i = 0; i < provers_.size(); ++i) {
      if (provers_[i].id.public_key() == p.id.public_key()) return i;
    }
    return 0;
  }

  // The aggregate statement owner provers_[shard] signs for its shard of `round` (attempt 0, a
  // group of 3 over 30 elements): every rank contributed the payload Manifest() states for it.
  struct StatementOptions {
    Digest aggregate = Sha256Of("aggregate");
    Digest residual_in{}, residual_out{};
    std::optional<Digest> contribution_of_rank_0;  // set: misnames rank 0's contribution
    uint64_t attempt = 0;
  };
  std::string Statement(uint32_t shard, uint64_t round, const StatementOptions& o) {
    verifier::AggregateStatement s;
    s.job_id = job_;
    s.owner = provers_[shard].id.public_key();
    s.round = round;
    s.attempt = o.attempt;
    s.world = 3;
    s.shard = shard;
    s.numel = 30;
    s.contributions.assign(3, Sha256Of("payload " + std::to_string(shard)));
    if (o.contribution_of_rank_0) s.contributions[0] = *o.contribution_of_rank_0;
    s.aggregate = o.aggregate;
    s.residual_in = o.residual_in;
    s.residual_out = o.residual_out;
    auto signed_statement = verifier::SignAggregate(s, provers_[shard].id);
    EXPECT_TRUE(signed_statement.ok()) << signed_statement.status().ToString();
    return verifier::EncodeAggregateStatement(*signed_statement);
  }
  std::string Statement(uint32_t shard, uint64_t round) { return Statement(shard, round, StatementOptions{}); }

  // `p`'s report of round `p` committed: its manifest and the three owners' statements.
  v1::RoundReport Report(const Prover& p, std::string manifest) {
    v1::RoundReport r;
    r.set_round(p.commitment.body.round);
    r.set_attempt(0);
    r.set_rank(RankOf(p));
    r.set_contribution_manifest(std::move(manifest));
    for (uint32_t s = 0; s < 3; ++s) r.add_aggregate_statements(Statement(s, p.commitment.body.round));
    *r.mutable_chain_ends() = Ends(p);
    return r;
  }

  // Every VerifyRequest of challenge `id` sent so far, with its addressee (by key order).
  std::vector<std::pair<net::PublicKey, v1::VerifyRequest>> VerifyRequests(uint64_t id) {
    std::vector<std::pair<net::PublicKey, v1::VerifyRequest>> out;
    for (auto& [to, envelopes] : sent_) {
      for (const auto& e : envelopes) {
        if (e.has_verify_request() && e.verify_request().challenge_id() == id) out.emplace_back(to, e.verify_request());
      }
    }
    return out;
  }

  // Who was asked about challenge `id`: its verifiers, or its referees.
  std::vector<net::PublicKey> Asked(uint64_t id, bool referees) {
    std::vector<net::PublicKey> out;
    for (const auto& [to, q] : VerifyRequests(id)) {
      if (q.referee() == referees) out.push_back(to);
    }
    return out;
  }

  verifier::LedgerRecord Record(const Prover& p) {
    auto r = service_->ledger().Get(p.id.public_key(), 0);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : verifier::LedgerRecord{};
  }

  v1::JobSpec spec_;
  std::string job_;
  net::Identity coordinator_ = net::Identity::Generate();
  std::unique_ptr<CoordinatorStore> store_;
  std::unique_ptr<VerificationService> service_;
  std::array<Prover, 3> provers_;
  std::map<net::PublicKey, std::vector<v1::Envelope>> sent_;
  std::map<net::PublicKey, std::string> bans_;
};

TEST_F(ServiceTest, RoundStartCarriesACommitmentToAFreshSecret) {
  const std::string a = service_->OnRoundStart(0, "");
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(service_->OnRoundStart(0, ""), a);  // a retry of round 0 keeps its secret
  EXPECT_NE(service_->OnRoundStart(1, ""), a);
}

TEST_F(ServiceTest, AReportNeedsAnAdmittedCommitment) {
  service_->OnRoundStart(0, "");
  const auto& key0 = provers_[0].id.public_key();
  EXPECT_FALSE(service_->CheckReport(key0, Report(provers_[0], Manifest(provers_[0])), 3).ok());
  ASSERT_TRUE(service_->OnCommitment(key0, Message(provers_[0]), 10).ok());
  EXPECT_TRUE(service_->CheckReport(key0, Report(provers_[0], Manifest(provers_[0])), 3).ok());
  EXPECT_FALSE(service_->CheckReport(provers_[1].id.public_key(), Report(provers_[1], Manifest(provers_[1])), 3).ok());
}

// In a verifying DiLoCo job a report must carry the manifest its sender signed for the Δ it sent
// in this very attempt, and that manifest must state the Δ digest its step commitment states.
TEST_F(ServiceTest, ADiLoCoReportNeedsTheSignedManifestOfItsSentDelta) {
  service_->OnRoundStart(0, "");
  Prover& p = provers_[0];
  const auto& key = p.id.public_key();
  ASSERT_TRUE(service_->OnCommitment(key, Message(p), 10).ok());
  EXPECT_FALSE(service_->CheckReport(key, Report(p, ""), 3).ok());
  std::string forged = Manifest(p);
  forged.back() ^= 0x01;  // the signature's last byte
  EXPECT_FALSE(service_->CheckReport(key, Report(p, forged), 3).ok());
  EXPECT_FALSE(service_->CheckReport(key, Report(p, Manifest(p, /*attempt=*/1)), 3).ok());
  EXPECT_FALSE(service_->CheckReport(key, Report(p, Manifest(p, 0, /*world=*/2)), 3).ok());
  EXPECT_FALSE(service_->CheckReport(key, Report(p, Manifest(provers_[1])), 3).ok());  // another's
  Status contradicts = service_->CheckReport(key, Report(p, Manifest(p, 0, 3, Sha256Of("another Δ"))), 3);
  EXPECT_FALSE(contradicts.ok());
  EXPECT_NE(contradicts.message().find("different Δ"), std::string::npos) << contradicts.ToString();
  EXPECT_TRUE(service_->CheckReport(key, Report(p, Manifest(p)), 3).ok());
}

// With error feedback the payloads encode Δ plus what the sender still owed, so the residual a
// manifest states must continue the one its manifest of the last round committed with it left
// (or be zero: a first contribution, a restarted peer; or that manifest's own residual_in: a
// peer that never heard of the commit rolled it back). The links survive a coordinator restart.
TEST_F(ServiceTest, AnErrorFeedbackResidualMustContinueTheLastCommittedOne) {
  Prover& p = provers_[0];
  const auto& key = p.id.public_key();
  const Digest zero{}, a = Sha256Of("left after round 0"), b = Sha256Of("left after round 1");
  service_->OnRoundStart(0, "");
  ASSERT_TRUE(service_->OnCommitment(key, Message(p), 10).ok());
  Status made_up = service_->CheckReport(key, Report(p, Manifest(p, 0, 3, std::nullopt, a, b)), 3);
  EXPECT_FALSE(made_up.ok()) << "nothing was owed before its first contribution";
  EXPECT_NE(made_up.message().find("error-feedback residual"), std::string::npos) << made_up.ToString();
  ASSERT_TRUE(service_->CheckReport(key, Report(p, Manifest(p, 0, 3, std::nullopt, zero, a)), 3).ok());
  const auto links = service_->CommitResidualLinks(0, {key, provers_[1].id.public_key()});
  ASSERT_EQ(links.size(), 3u)
      << "only members that reported have links: their contributions', their aggregate's and their optimiser's";
  EXPECT_EQ(links[0].key, net::KeyToHex(key));
  EXPECT_EQ(links[1].key, net::KeyToHex(key) + "/aggregate");
  EXPECT_EQ(links[2].key, net::KeyToHex(key) + "/optimizer");
  EXPECT_EQ(links[0].residual_in, DigestToBytes(zero));
  EXPECT_EQ(links[0].residual_out, DigestToBytes(a));
  RecordRound0(links);

  auto report_round_1 = [&](VerificationService& service, Digest in) {
    return service.CheckReport(key, Report(p, Manifest(p, 0, 3, std::nullopt, in, b)), 3);
  };
  service_->OnRoundStart(1, "");
  Commit(p, 1);
  ASSERT_TRUE(service_->OnCommitment(key, Message(p), 10).ok());
  EXPECT_FALSE(report_round_1(*service_, b).ok()) << "not what round 0 left";
  EXPECT_TRUE(report_round_1(*service_, a).ok());
  EXPECT_TRUE(report_round_1(*service_, zero).ok()) << "a restarted peer owes nothing";
  // A restarted coordinator knows the same links.
  auto restarted = Make();
  restarted->OnRoundStart(1, "");
  ASSERT_TRUE(restarted->OnCommitment(key, Message(p), 10).ok());
  EXPECT_FALSE(report_round_1(*restarted, b).ok());
  EXPECT_TRUE(report_round_1(*restarted, a).ok());
}

// A shard owner's proof that a sender signed a manifest contradicting what it sent bans the
// sender; a "proof" that does not hold bans whoever sent it.
TEST_F(ServiceTest, AContributionProofBansTheSenderAndABaselessOneTheReporter) {
  service_->OnRoundStart(0, "");
  Prover& sender = provers_[0];
  auto manifest = verifier::DecodeManifest(Manifest(sender));
  ASSERT_TRUE(manifest.ok());
  verifier::ContributionMismatch mismatch;
  mismatch.manifest = *manifest;
  mismatch.shard = 1;
  mismatch.payload = Sha256Of("a payload the manifest does not state");
  mismatch.signature = verifier::SignContribution(sender.id, *manifest, 1, mismatch.payload);
  v1::ContributionProof proof;
  proof.set_mismatch(verifier::EncodeMismatch(mismatch));
  service_->OnContributionProof(provers_[1].id.public_key(), proof);
  EXPECT_TRUE(bans_.count(sender.id.public_key()));
  EXPECT_FALSE(bans_.count(provers_[1].id.public_key()));

  // The payload the manifest does state: no contradiction, so the accuser is the liar.
  Prover& honest = provers_[1];
  auto honest_manifest = verifier::DecodeManifest(Manifest(honest));
  ASSERT_TRUE(honest_manifest.ok());
  mismatch.manifest = *honest_manifest;
  mismatch.payload = honest_manifest->body.shard_digests[1];
  mismatch.signature = verifier::SignContribution(honest.id, *honest_manifest, 1, mismatch.payload);
  proof.set_mismatch(verifier::EncodeMismatch(mismatch));
  service_->OnContributionProof(provers_[2].id.public_key(), proof);
  EXPECT_FALSE(bans_.count(honest.id.public_key()));
  EXPECT_TRUE(bans_.count(provers_[2].id.public_key()));
}

// A shard owner's proof that a sender signed a payload that decodes to NaN/Inf, or does not
// decode, with the job's codec bans the sender; a proof over a finite payload, about another
// job, or misdescribed by its message bans whoever sent it; one about an attempt never started
// bans nobody.
// Each member reports every owner's signed aggregate statement of its group, and each must name,
// at the reporter's rank, the contribution the reporter's own manifest states: an honest member
// refuses an aggregate whose statement misnames what it sent.
TEST_F(ServiceTest, AReportCarriesEveryOwnersStatementNamingTheReportersContribution) {
  service_->OnRoundStart(0, "");
  Prover& p = provers_[0];
  const auto& key = p.id.public_key();
  ASSERT_TRUE(service_->OnCommitment(key, Message(p), 10).ok());
  v1::RoundReport missing = Report(p, Manifest(p));
  missing.mutable_aggregate_statements()->RemoveLast();
  EXPECT_FALSE(service_->CheckReport(key, missing, 3).ok()) << "a shard's statement is missing";
  v1::RoundReport misnamed = Report(p, Manifest(p));
  misnamed.set_aggregate_statements(1, Statement(1, 0, {.contribution_of_rank_0 = Sha256Of("not what rank 0 sent")}));
  Status st = service_->CheckReport(key, misnamed, 3);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("does not name the contribution its own manifest states"), std::string::npos) << st.ToString();
  v1::RoundReport twice = Report(p, Manifest(p));
  twice.set_aggregate_statements(2, twice.aggregate_statements(1));
  EXPECT_FALSE(service_->CheckReport(key, twice, 3).ok()) << "one shard twice";
  v1::RoundReport other_round = Report(p, Manifest(p));
  other_round.set_aggregate_statements(1, Statement(1, 7));
  EXPECT_FALSE(service_->CheckReport(key, other_round, 3).ok());
  v1::RoundReport forged = Report(p, Manifest(p));
  forged.mutable_aggregate_statements(2)->back() ^= 0x01;
  EXPECT_FALSE(service_->CheckReport(key, forged, 3).ok()) << "an owner's signature that fails";
  v1::RoundReport wrong_rank = Report(p, Manifest(p));
  wrong_rank.set_rank(1);  // then shard 1's statement is "its own" but signed by another
  EXPECT_FALSE(service_->CheckReport(key, wrong_rank, 3).ok());
  EXPECT_TRUE(service_->CheckReport(key, Report(p, Manifest(p)), 3).ok());
  EXPECT_TRUE(bans_.empty());
}

// Two members report different statements, both signed by shard 2's owner, for the same
// attempt: the owner sent them different aggregates, and is banned. The reports are fine.
TEST_F(ServiceTest, AnOwnerThatSignedTwoAggregatesOfOneShardIsBannedForEquivocation) {
  service_->OnRoundStart(0, "");
  for (uint32_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(service_->OnCommitment(provers_[i].id.public_key(), Message(provers_[i]), 10).ok());
  }
  ASSERT_TRUE(service_->CheckReport(provers_[0].id.public_key(), Report(provers_[0], Manifest(provers_[0])), 3).ok());
  v1::RoundReport other = Report(provers_[1], Manifest(provers_[1]));
  other.set_aggregate_statements(2, Statement(2, 0, {.aggregate = Sha256Of("what rank 1 got")}));
  EXPECT_TRUE(service_->CheckReport(provers_[1].id.public_key(), other, 3).ok());
  ASSERT_EQ(bans_.size(), 1u);
  ASSERT_EQ(bans_.count(provers_[2].id.public_key()), 1u);
  EXPECT_NE(bans_.at(provers_[2].id.public_key()).find("equivocation"), std::string::npos);
}

// An owner's error-feedback residual chains like a sender's: zero, or what its aggregate
// statement of the last round committed with it left (or that statement's residual_in).
TEST_F(ServiceTest, AnOwnersResidualMustContinueItsLastCommittedAggregate) {
  Prover& p = provers_[0];
  const auto& key = p.id.public_key();
  const Digest zero{}, a = Sha256Of("owner left after round 0"), b = Sha256Of("made up");
  service_->OnRoundStart(0, "");
  ASSERT_TRUE(service_->OnCommitment(key, Message(p), 10).ok());
  auto with_own = [&](uint64_t round, Digest in, Digest out) {
    v1::RoundReport r = Report(p, Manifest(p));
    r.set_aggregate_statements(0, Statement(0, round, {.residual_in = in, .residual_out = out}));
    return r;
  };
  Status made_up = service_->CheckReport(key, with_own(0, b, a), 3);
  EXPECT_FALSE(made_up.ok());
  EXPECT_NE(made_up.message().find("residual as shard owner"), std::string::npos) << made_up.ToString();
  ASSERT_TRUE(service_->CheckReport(key, with_own(0, zero, a), 3).ok());
  const auto links = service_->CommitResidualLinks(0, {key});
  RecordRound0(links);
  service_->OnRoundStart(1, "");
  Commit(p, 1);
  ASSERT_TRUE(service_->OnCommitment(key, Message(p), 10).ok());
  EXPECT_FALSE(service_->CheckReport(key, with_own(1, b, b), 3).ok());
  EXPECT_TRUE(service_->CheckReport(key, with_own(1, a, b), 3).ok());
  auto restarted = Make();  // the links are in SQLite
  restarted->OnRoundStart(1, "");
  ASSERT_TRUE(restarted->OnCommitment(key, Message(p), 10).ok());
  EXPECT_FALSE(restarted->CheckReport(key, with_own(1, b, b), 3).ok());
  EXPECT_TRUE(restarted->CheckReport(key, with_own(1, a, b), 3).ok());
}

// A DiLoCo report states the ends of its committed steps (verifier/chain_ends.h). Step 0 must
// start from the member's round θ, and from a fresh optimiser or the one its last committed
// round ended (or started) with: AdamW moments chosen at a round's start would make any first
// step replay bit for bit. The links survive a coordinator restart.
TEST_F(ServiceTest, AReportsStepsStartFromItsRoundsThetaAndFromMomentsItDidNotChoose) {
  Prover& chooser = provers_[0];
  Prover& p = provers_[1];
  const auto& key = p.id.public_key();
  const std::string theta = DigestToBytes(StartTheta(p));
  service_->OnRoundStart(0, "");

  chooser.start_moments = Sha256Of("moments it chose");
  Commit(chooser, 0);
  ASSERT_TRUE(service_->OnCommitment(chooser.id.public_key(), Message(chooser), 10).ok());
  Status chosen = service_->CheckReport(chooser.id.public_key(), Report(chooser, Manifest(chooser)), 3,
                                        DigestToBytes(StartTheta(chooser)));
  EXPECT_FALSE(chosen.ok()) << "nothing was committed before its first round";
  EXPECT_NE(chosen.message().find("neither fresh nor the one its last committed round ended with"), std::string::npos)
      << chosen.ToString();

  ASSERT_TRUE(service_->OnCommitment(key, Message(p), 10).ok());
  v1::RoundReport without = Report(p, Manifest(p));
  without.clear_chain_ends();
  Status missing = service_->CheckReport(key, without, 3, theta);
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("without the ends of its committed steps"), std::string::npos);
  Status elsewhere = service_->CheckReport(key, Report(p, Manifest(p)), 3, DigestToBytes(Sha256Of("the round's θ")));
  EXPECT_FALSE(elsewhere.ok());
  EXPECT_NE(elsewhere.message().find("do not start from the θ its round starts from"), std::string::npos)
      << elsewhere.ToString();
  v1::RoundReport swapped = Report(p, Manifest(p));
  swapped.mutable_chain_ends()->set_start_optimizer(DigestToBytes(Sha256Of("other moments")));
  EXPECT_FALSE(service_->CheckReport(key, swapped, 3, theta).ok()) << "halves its first leaf does not name";
  v1::RoundReport reordered = Report(p, Manifest(p));
  reordered.mutable_chain_ends()->set_last_leaf(reordered.chain_ends().first_leaf());
  reordered.mutable_chain_ends()->set_last_proof(reordered.chain_ends().first_proof());
  EXPECT_FALSE(service_->CheckReport(key, reordered, 3, theta).ok()) << "its first leaf as its last";
  ASSERT_TRUE(service_->CheckReport(key, Report(p, Manifest(p)), 3, theta).ok());
  const Digest round0_end = p.end.optimizer;
  RecordRound0(service_->CommitResidualLinks(0, {key}));

  // Round 1 starts from the moments round 0 ended with: anything else is refused.
  service_->OnRoundStart(1, "");
  p.start_moments = Sha256Of("moments it chose in round 1");
  Commit(p, 1);
  ASSERT_TRUE(service_->OnCommitment(key, Message(p), 10).ok());
  EXPECT_FALSE(service_->CheckReport(key, Report(p, Manifest(p)), 3, theta).ok());
  for (const Digest& moments : {round0_end, verifier::FreshOptimizerDigest()}) {
    auto restarted = Make();  // the links are in SQLite
    restarted->OnRoundStart(1, "");
    p.start_moments = moments;
    Commit(p, 1);
    ASSERT_TRUE(restarted->OnCommitment(key, Message(p), 10).ok());
    Status continued = restarted->CheckReport(key, Report(p, Manifest(p)), 3, theta);
    EXPECT_TRUE(continued.ok()) << continued.ToString();
  }
}

// After the commit every owner opens the contributions it aggregated and its residual; the
// coordinator recomputes the aggregate (collectives::ReproduceAggregate) and convicts an owner
// whose stated aggregate does not follow, or whose opening is not what it stated.
TEST_F(ServiceTest, TheAggregateAuditConvictsAnOwnerWhoseAggregateDoesNotFollowFromItsContributions) {
  auto fp32 = collectives::codec::MakeCodec("fp32");
  ASSERT_TRUE(fp32.ok());
  // payloads[j][s]: rank j's contribution to shard s (10 elements each).
  std::vector<std::vector<std::string>> payloads(3, std::vector<std::string>(3));
  for (uint32_t j = 0; j < 3; ++j) {
    for (uint32_t s = 0; s < 3; ++s) {
      std::vector<float> v(10);
      for (size_t i = 0; i < v.size(); ++i) v[i] = 0.01f * static_cast<float>(1 + i + 10 * s + 100 * j);
      payloads[j][s] = *(*fp32)->Encode(v);
    }
  }
  const collectives::robust::AggregatorSpec aggregator;  // the job's (empty spec: mean)
  ASSERT_TRUE(spec_.aggregator().empty());
  std::vector<Digest> honest(3);
  for (uint32_t s = 0; s < 3; ++s) {
    std::vector<std::string> in = {payloads[0][s], payloads[1][s], payloads[2][s]};
    auto r = collectives::ReproduceAggregate("fp32", 3, s, 30, in, {}, aggregator, true);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    honest[s] = r->payload;
  }
  auto statement = [&](uint32_t s, Digest aggregate) {
    verifier::AggregateStatement b;
    b.job_id = job_;
    b.owner = provers_[s].id.public_key();
    b.round = 0;
    b.world = 3;
    b.shard = s;
    b.numel = 30;
    for (uint32_t j = 0; j < 3; ++j) b.contributions.push_back(Sha256Of(payloads[j][s]));
    b.aggregate = aggregate;
    return verifier::EncodeAggregateStatement(*verifier::SignAggregate(b, provers_[s].id));
  };
  service_->OnRoundStart(0, "");
  std::vector<VerificationService::Member> members;
  for (uint32_t i = 0; i < 3; ++i) {
    Prover& p = provers_[i];
    ASSERT_TRUE(service_->OnCommitment(p.id.public_key(), Message(p), 10).ok());
    verifier::ContributionManifest m;
    m.job_id = job_;
    m.peer = p.id.public_key();
    m.numel = 30;
    m.pseudo_gradient = p.commitment.body.pseudo_gradient;
    for (uint32_t s = 0; s < 3; ++s) m.shard_digests.push_back(Sha256Of(payloads[i][s]));
    v1::RoundReport r;
    r.set_round(0);
    r.set_rank(i);
    r.set_contribution_manifest(verifier::EncodeManifest(*verifier::SignManifest(m, p.id)));
    *r.mutable_chain_ends() = Ends(p);
    // Owner 2 returned something else than its contributions give (and states it).
    for (uint32_t s = 0; s < 3; ++s) r.add_aggregate_statements(statement(s, s == 2 ? Sha256Of("scaled") : honest[s]));
    ASSERT_TRUE(service_->CheckReport(p.id.public_key(), r, 3).ok());
    members.push_back({p.id.public_key(), i});
  }
  service_->OnRoundCommitted(0, members, 20);
  for (uint32_t s = 0; s < 3; ++s) {
    std::optional<v1::OpenRequest> asked;
    for (const v1::OpenRequest& q : OpenRequests(provers_[s])) {
      if (q.aggregate()) asked = q;
    }
    ASSERT_TRUE(asked.has_value()) << "owner " << s << " is asked for its aggregate";
    v1::Opening o;
    o.set_challenge_id(asked->challenge_id());
    o.set_round(0);
    o.set_aggregate(true);
    for (uint32_t j = 0; j < 3; ++j) o.add_contributions(payloads[j][s]);
    if (s == 1) {  // a first answer that names another contribution is itself a conviction
      v1::Opening swapped = o;
      swapped.set_contributions(0, payloads[0][0]);
      service_->OnOpening(provers_[s].id.public_key(), swapped, 30);
      continue;
    }
    service_->OnOpening(provers_[s].id.public_key(), o, 30);
  }
  EXPECT_EQ(bans_.count(provers_[0].id.public_key()), 0u) << "an honest owner";
  ASSERT_EQ(bans_.count(provers_[1].id.public_key()), 1u);
  EXPECT_NE(bans_.at(provers_[1].id.public_key()).find("does not name"), std::string::npos) << bans_.at(provers_[1].id.public_key());
  ASSERT_EQ(bans_.count(provers_[2].id.public_key()), 1u);
  EXPECT_NE(bans_.at(provers_[2].id.public_key()).find("is not what the contributions it received"), std::string::npos)
      << bans_.at(provers_[2].id.public_key());
}

// Verified before the commit, a round is challenged once; a ban then retries it, and the retry
// re-shards, so its owners return new aggregates. Those are audited before the retry commits;
// the ones already audited are not asked for again.
TEST_F(ServiceTest, ARetriedRoundsNewAggregatesAreAuditedOnceBeforeItCommits) {
  std::vector<VerificationService::Member> members;
  ASSERT_NO_FATAL_FAILURE(EveryoneReportsRound0(members));
  service_->OnRoundCommitted(0, members, 20);  // before the commit
  EXPECT_EQ(AggregateRequests(), 3u);
  EXPECT_EQ(service_->AuditAggregatesBeforeCommit(0, members, 30), 0u);  // no retry happened
  EXPECT_EQ(AggregateRequests(), 3u) << "nothing audited twice";
  // The retry (attempt 1) of the same three: new statements.
  for (uint32_t i = 0; i < 3; ++i) {
    v1::RoundReport r = Report(provers_[i], Manifest(provers_[i], /*attempt=*/1));
    r.set_attempt(1);
    for (uint32_t s = 0; s < 3; ++s) r.set_aggregate_statements(s, Statement(s, 0, {.attempt = 1}));
    ASSERT_TRUE(service_->CheckReport(provers_[i].id.public_key(), r, 3).ok());
  }
  EXPECT_EQ(service_->AuditAggregatesBeforeCommit(0, members, 40), 3u);
  EXPECT_EQ(AggregateRequests(), 6u) << "the retry's owners are audited";
  EXPECT_TRUE(bans_.empty());
}

// When challenges run after the commit, the owners' aggregates are still audited before it: the
// coordinator holds the commit until every aggregate audit of the round is settled (passed,
// convicted, or withheld past the deadline), and does not audit them again after the commit.
TEST_F(ServiceTest, OwnersAreAuditedBeforeTheCommitEvenWhenChallengesRunAfterIt) {
  std::vector<VerificationService::Member> members;
  ASSERT_NO_FATAL_FAILURE(EveryoneReportsRound0(members));
  EXPECT_FALSE(service_->AggregateAuditsOpen(0));
  EXPECT_EQ(service_->AuditAggregatesBeforeCommit(0, members, 20), 3u);
  EXPECT_TRUE(service_->AggregateAuditsOpen(0));
  EXPECT_EQ(service_->AuditAggregatesBeforeCommit(0, members, 21), 0u) << "each statement is audited once";
  // Owners 0 and 1 answer with contributions their statements do not name (the statements here
  // stand for payloads nobody has), which convicts them; owner 2 stays silent.
  for (uint32_t s = 0; s < 2; ++s) {
    for (const v1::OpenRequest& q : OpenRequests(provers_[s])) {
      if (!q.aggregate()) continue;
      v1::Opening o;
      o.set_challenge_id(q.challenge_id());
      o.set_round(0);
      o.set_aggregate(true);
      for (int j = 0; j < 3; ++j) o.add_contributions("not a payload it was sent");
      service_->OnOpening(provers_[s].id.public_key(), o, 30);
    }
  }
  EXPECT_TRUE(service_->AggregateAuditsOpen(0)) << "owner 2 has not answered";
  service_->Sweep(20 + spec_.verify_timeout_ms() + 1);
  EXPECT_FALSE(service_->AggregateAuditsOpen(0));
  EXPECT_EQ(bans_.size(), 3u);
  const size_t before = AggregateRequests();
  service_->OnRoundCommitted(0, members, 40);
  EXPECT_EQ(AggregateRequests(), before) << "not audited again after the commit";
}

TEST_F(ServiceTest, ABadPayloadProofBansTheSenderAndABaselessOneTheReporter) {
  service_->OnRoundStart(0, "");
  service_->OnRoundStart(0, "", /*attempt=*/1);
  struct Case {
    std::string what;
    std::function<void(uint64_t, std::string&)> tamper;
    bool guilty;  // the sender (else the reporter) is banned
    uint64_t message_round = 0;
    std::string job;  // empty: this job
  };
  const std::vector<Case> cases = {
      {"NaN", testing::OverwriteFirstValue(std::numeric_limits<float>::quiet_NaN()), true},
      {"Inf", testing::OverwriteFirstValue(std::numeric_limits<float>::infinity()), true},
      {"truncated", [](uint64_t, std::string& p) { p.pop_back(); }, true},
      {"finite", {}, false},
      {"misdescribed", testing::OverwriteFirstValue(std::numeric_limits<float>::quiet_NaN()), false, 1},
      {"another job", testing::OverwriteFirstValue(std::numeric_limits<float>::quiet_NaN()), false, 0, "job-2"}};
  for (const Case& c : cases) {
    const net::Identity sender = net::Identity::Generate(), reporter = net::Identity::Generate();
    const testing::SignedContributions sent = testing::SignContributions(
        sender, {.job_id = c.job.empty() ? job_ : c.job, .round = 0, .attempt = 1, .tamper = c.tamper});
    v1::ContributionProof proof;
    proof.set_round(c.message_round);
    proof.set_attempt(1);
    proof.set_mismatch(verifier::EncodeBadPayload(testing::BadPayloadProofOf(sender, sent, 2)));
    service_->OnContributionProof(reporter.public_key(), proof);
    EXPECT_EQ(bans_.count(sender.public_key()), c.guilty ? 1u : 0u) << c.what;
    EXPECT_EQ(bans_.count(reporter.public_key()), c.guilty ? 0u : 1u) << c.what;
    const std::string why = bans_[c.guilty ? sender.public_key() : reporter.public_key()];
    const std::string expected = c.guilty ? "sent shard 2 a non-finite/undecodable contribution, proven by its signed payload"
                                          : "sent a baseless contribution proof";
    EXPECT_NE(why.find(expected), std::string::npos) << c.what << ": " << why;
  }
  // An attempt this coordinator never started: nobody can have received it, nobody is banned.
  const net::Identity sender = net::Identity::Generate(), reporter = net::Identity::Generate();
  const testing::SignedContributions later = testing::SignContributions(
      sender, {.job_id = job_, .round = 0, .attempt = 2, .tamper = testing::OverwriteFirstValue(std::numeric_limits<float>::quiet_NaN())});
  v1::ContributionProof proof;
  proof.set_round(0);
  proof.set_attempt(2);
  proof.set_mismatch(verifier::EncodeBadPayload(testing::BadPayloadProofOf(sender, later, 0)));
  service_->OnContributionProof(reporter.public_key(), proof);
  EXPECT_FALSE(bans_.count(sender.public_key()));
  EXPECT_FALSE(bans_.count(reporter.public_key()));
  // Bytes that are no proof of either kind.
  proof.set_mismatch("TRIBBADPAYLOAD1 and then nothing");
  service_->OnContributionProof(reporter.public_key(), proof);
  EXPECT_TRUE(bans_.count(reporter.public_key()));
}

// Every committed member with a manifest gets a Δ audit: its end state is opened and a verifier
// checks θ_start − θ_end against the manifest; a mismatch goes to a referee, whose recomputation
// decides. Opening another state than the end state convicts on the spot.
TEST_F(ServiceTest, EveryMembersSentDeltaIsAuditedAndARefereeDecides) {
  service_->OnRoundStart(0, "");
  for (auto& p : provers_) {
    ASSERT_TRUE(service_->OnCommitment(p.id.public_key(), Message(p), 10).ok());
    ASSERT_TRUE(service_->CheckReport(p.id.public_key(), Report(p, Manifest(p)), 3).ok());
  }
  std::vector<VerificationService::Member> members;
  for (uint32_t i = 0; i < provers_.size(); ++i) members.push_back({provers_[i].id.public_key(), i});
  service_->OnRoundCommitted(0, members, 20);
  std::map<size_t, v1::OpenRequest> audits;
  for (size_t i = 0; i < provers_.size(); ++i) {
    for (const auto& q : OpenRequests(provers_[i])) {
      if (!q.end_state()) continue;
      EXPECT_EQ(q.step(), kSteps - 1);
      EXPECT_FALSE(audits.count(i));
      audits[i] = q;
    }
  }
  ASSERT_EQ(audits.size(), 3u);
  for (size_t i = 0; i < 2; ++i) {
    v1::Opening o = Open(provers_[i], audits[i].challenge_id(), kSteps - 1);
    o.set_end_state(true);
    service_->OnOpening(provers_[i].id.public_key(), o, 30);
  }
  // The audits went out with the manifest, each to a member other than its prover.
  auto answer = [&](const net::PublicKey& from, uint64_t id, v1::VerifyOutcome outcome) {
    v1::VerifyResult r;
    r.set_challenge_id(id);
    r.set_outcome(outcome);
    r.set_reason(outcome == v1::VERIFY_MISMATCH ? "Δ audit: not the Δ it sent" : "");
    service_->OnVerifyResult(from, r, 40);
  };
  for (size_t i = 0; i < 2; ++i) {
    auto requests = VerifyRequests(audits[i].challenge_id());
    ASSERT_EQ(requests.size(), 1u);
    EXPECT_TRUE(requests[0].second.delta_audit());
    EXPECT_EQ(requests[0].second.manifest(), Manifest(provers_[i]));
    EXPECT_NE(requests[0].first, provers_[i].id.public_key());
  }
  // Prover 1 matches. Prover 0 is accused; the referee's recomputation agrees: convicted.
  answer(VerifyRequests(audits[1].challenge_id())[0].first, audits[1].challenge_id(), v1::VERIFY_MATCH);
  const net::PublicKey accuser = VerifyRequests(audits[0].challenge_id())[0].first;
  answer(accuser, audits[0].challenge_id(), v1::VERIFY_MISMATCH);
  auto after = VerifyRequests(audits[0].challenge_id());
  ASSERT_EQ(after.size(), 2u);
  const auto& [referee, request] = after[0].first == accuser ? after[1] : after[0];
  EXPECT_TRUE(request.referee());
  EXPECT_TRUE(request.delta_audit());
  EXPECT_NE(referee, provers_[0].id.public_key());
  answer(referee, audits[0].challenge_id(), v1::VERIFY_MISMATCH);
  EXPECT_TRUE(bans_.count(provers_[0].id.public_key()));
  EXPECT_FALSE(bans_.count(provers_[1].id.public_key()));
  EXPECT_FALSE(bans_.count(accuser));
  EXPECT_EQ(Record(provers_[0]).verdict(), verifier::RoundVerdict::kRejected);
  // Prover 2 opens the state before its last step instead of the one after it.
  service_->OnOpening(provers_[2].id.public_key(), Open(provers_[2], audits[2].challenge_id(), kSteps - 1), 50);
  EXPECT_TRUE(bans_.count(provers_[2].id.public_key()));
}

TEST_F(ServiceTest, EquivocationForgeryWrongCountAndLateCommitsAreBanned) {
  service_->OnRoundStart(0, "");
  Prover& liar = provers_[0];
  ASSERT_TRUE(service_->OnCommitment(liar.id.public_key(), Message(liar), 10).ok());
  EXPECT_TRUE(service_->OnCommitment(liar.id.public_key(), Message(liar), 11).ok());  // a resend
  Commit(liar, 0, /*variant=*/1);
  EXPECT_EQ(service_->OnCommitment(liar.id.public_key(), Message(liar), 12).code(), StatusCode::kProtocolError);
  EXPECT_TRUE(bans_.count(liar.id.public_key()));
  EXPECT_TRUE(service_->IsBanned(liar.id.public_key()));
  auto rec = Record(liar);
  EXPECT_TRUE(rec.equivocated);
  EXPECT_EQ(rec.verdict(), verifier::RoundVerdict::kRejected);

  // Sent on another peer's connection: not its key.
  EXPECT_FALSE(service_->OnCommitment(provers_[2].id.public_key(), Message(provers_[1]), 13).ok());
  EXPECT_TRUE(bans_.count(provers_[2].id.public_key()));

  // After the round committed (challenges drawn), a commitment is late.
  ASSERT_TRUE(service_->OnCommitment(provers_[1].id.public_key(), Message(provers_[1]), 14).ok());
  service_->OnRoundCommitted(0, {{provers_[1].id.public_key(), 1}}, 20);
  Prover late;
  Commit(late, 0);
  EXPECT_EQ(service_->OnCommitment(late.id.public_key(), Message(late), 30).code(), StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(bans_.count(late.id.public_key()));
}

// DDP: a retried attempt re-runs the steps into a fresh book. The previous attempt's commitment,
// arriving after the retry started (the member finished just as a peer was banned), is stale and
// must not count as a second root against the retry's: that banned an honest peer in
// VerifierDdp.ACheaterInADdpJobIsCaughtAndHonestPeersAreNot now and then.
TEST_F(ServiceTest, ADdpAttemptsLateCommitmentAfterItsRetryIsNoEquivocation) {
  spec_.set_mode(v1::MODE_DDP);
  service_ = Make();
  Prover& p = provers_[0];
  service_->OnRoundStart(0, "", /*attempt=*/0);
  service_->OnRoundStart(0, "", /*attempt=*/1);
  v1::StepCommitment stale = Message(p);  // attempt 0's steps
  stale.set_attempt(0);
  EXPECT_TRUE(service_->OnCommitment(p.id.public_key(), stale, 10).ok());
  Commit(p, 0, /*variant=*/1);  // attempt 1 re-ran them
  v1::StepCommitment retry = Message(p);
  retry.set_attempt(1);
  EXPECT_TRUE(service_->OnCommitment(p.id.public_key(), retry, 11).ok());
  EXPECT_FALSE(service_->IsBanned(p.id.public_key())) << bans_[p.id.public_key()];
  // Two roots within one attempt are still equivocation.
  Commit(p, 0, /*variant=*/2);
  v1::StepCommitment second = Message(p);
  second.set_attempt(1);
  EXPECT_EQ(service_->OnCommitment(p.id.public_key(), second, 12).code(), StatusCode::kProtocolError);
  EXPECT_TRUE(service_->IsBanned(p.id.public_key()));
}

TEST_F(ServiceTest, EachProversReplayStartsFromItsOwnRoundStartState) {
  // Grouped rounds: members start a round from their own group's state, so the verifier checks
  // a prover's step 0 against that prover's θ, not one θ for the whole round.
  service_->OnRoundStart(0, std::string(32, 'r'));
  for (auto& p : provers_) ASSERT_TRUE(service_->OnCommitment(p.id.public_key(), Message(p), 10).ok());
  std::vector<VerificationService::Member> members;
  std::map<std::string, std::string> theta_of;  // prover key bytes -> its round-start θ
  for (uint32_t i = 0; i < provers_.size(); ++i) {
    // Prover 2 has no θ of its own on record: it gets the round's.
    const std::string theta = i < 2 ? std::string(32, static_cast<char>('a' + i)) : "";
    members.push_back({provers_[i].id.public_key(), i, theta});
    theta_of[net::KeyToBytes(provers_[i].id.public_key())] = theta.empty() ? std::string(32, 'r') : theta;
  }
  service_->OnRoundCommitted(0, members, 20);
  for (auto& p : provers_) {
    for (const auto& q : OpenRequests(p)) service_->OnOpening(p.id.public_key(), Open(p, q.challenge_id(), q.step()), 30);
  }
  int checked = 0;
  for (auto& [to, envelopes] : sent_) {
    for (const auto& e : envelopes) {
      if (!e.has_verify_request()) continue;
      EXPECT_EQ(e.verify_request().round_start_theta(), theta_of.at(e.verify_request().prover_key()));
      ++checked;
    }
  }
  EXPECT_EQ(checked, 3 * static_cast<int>(spec_.verify_samples()));
}

TEST_F(ServiceTest, ChallengesOpenAndVerifyIntoTheLedger) {
  CommitRound();
  for (auto& p : provers_) {
    const auto requests = OpenRequests(p);
    ASSERT_EQ(requests.size(), spec_.verify_samples());
    for (const auto& q : requests) service_->OnOpening(p.id.public_key(), Open(p, q.challenge_id(), q.step()), 30);
  }
  // Every opening went to a verifier other than its prover; each answers "match".
  int verify_requests = 0;
  for (auto& [to, envelopes] : sent_) {
    for (const auto& e : envelopes) {
      if (!e.has_verify_request()) continue;
      ++verify_requests;
      EXPECT_NE(e.verify_request().prover_key(), net::KeyToBytes(to));
      v1::VerifyResult r;
      r.set_challenge_id(e.verify_request().challenge_id());
      r.set_outcome(v1::VERIFY_MATCH);
      service_->OnVerifyResult(to, r, 40);
    }
  }
  EXPECT_EQ(verify_requests, 3 * static_cast<int>(spec_.verify_samples()));
  EXPECT_FALSE(service_->busy());
  for (auto& p : provers_) {
    auto rec = Record(p);
    EXPECT_EQ(rec.verdict(), verifier::RoundVerdict::kVerified);
    EXPECT_EQ(rec.steps_verified(), spec_.verify_samples());
  }
  EXPECT_TRUE(bans_.empty());
  // The ledger and its receipts survive in the store and verify with the coordinator's key.
  auto reopened = Make();
  v1::LedgerReply reply;
  reopened->FillLedgerReply(reply, 50);
  ASSERT_EQ(reply.receipts_size(), 3);
  for (const auto& bytes : reply.receipts()) {
    auto receipt = verifier::DecodeReceipt(bytes);
    ASSERT_TRUE(receipt.ok());
    EXPECT_TRUE(verifier::VerifyReceipt(*receipt, coordinator_.public_key()).ok());
    EXPECT_EQ(receipt->body.verdict, verifier::RoundVerdict::kVerified);
  }
}

TEST_F(ServiceTest, BadOpeningsAndWithheldOpeningsConvict) {
  CommitRound();
  Prover& bad = provers_[0];
  Prover& silent = provers_[1];
  for (const auto& q : OpenRequests(bad)) {
    v1::Opening o = Open(bad, q.challenge_id(), q.step());
    o.set_leaf(verifier::EncodeLeaf(bad.leaves[(q.step() + 1) % kSteps]));  // another step's leaf
    service_->OnOpening(bad.id.public_key(), o, 30);
  }
  EXPECT_TRUE(bans_.count(bad.id.public_key()));
  EXPECT_EQ(Record(bad).verdict(), verifier::RoundVerdict::kRejected);
  for (const auto& q : OpenRequests(provers_[2])) {  // the honest one opens in time
    service_->OnOpening(provers_[2].id.public_key(), Open(provers_[2], q.challenge_id(), q.step()), 30);
  }
  // Nobody answers for `silent`: past the verify timeout it has defaulted.
  service_->Sweep(20 + spec_.verify_timeout_ms() + 1);
  EXPECT_TRUE(bans_.count(silent.id.public_key()));
  EXPECT_GT(Record(silent).steps_failed(), 0u);
  // A banned key stays banned for a restarted coordinator.
  auto reopened = Make();
  EXPECT_TRUE(reopened->IsBanned(bad.id.public_key()));
  EXPECT_TRUE(reopened->IsBanned(silent.id.public_key()));
  EXPECT_FALSE(reopened->IsBanned(provers_[2].id.public_key()));
}

// A prover that restarted holds none of its predecessor's rounds and says so (Opening.not_held).
// One lost round is forgiven (and one more per kRoundsPerForgivenLoss rounds committed): the
// round's work is not credited and nothing is replayed. Past that allowance a loss counts as a
// withheld opening, or a cheater could restart out of every challenge. The losses survive a
// coordinator restart.
TEST_F(ServiceTest, AProverThatLostARoundIsForgivenOnceAndConvictedPastItsAllowance) {
  CommitRound();
  Prover& p = provers_[0];
  const auto& key = p.id.public_key();
  auto lose = [&](VerificationService& service, uint64_t round) {
    size_t answered = 0;
    for (const auto& q : OpenRequests(p)) {
      if (q.round() != round) continue;
      v1::Opening o;
      o.set_challenge_id(q.challenge_id());
      o.set_round(q.round());
      o.set_step(q.step());
      o.set_not_held(true);
      service.OnOpening(key, o, 30);
      ++answered;
    }
    return answered;
  };
  ASSERT_GT(lose(*service_, 0), 0u);
  EXPECT_FALSE(bans_.count(key)) << bans_[key];
  EXPECT_EQ(Record(p).steps_verified(), 0u) << "a lost round earns no credit";
  EXPECT_EQ(Record(p).steps_failed(), 0u);
  for (const auto& q : OpenRequests(p)) EXPECT_TRUE(VerifyRequests(q.challenge_id()).empty()) << "nothing to replay";
  service_->Sweep(20 + spec_.verify_timeout_ms() + 1);
  EXPECT_FALSE(bans_.count(key)) << "the lost challenges are settled, not left to default";
  auto lost = store_->LostRounds(job_);
  ASSERT_TRUE(lost.ok());
  ASSERT_EQ(lost->size(), 1u);
  EXPECT_EQ((*lost)[0], std::make_pair(net::KeyToHex(key), uint64_t{0}));

  // Round 1: two rounds committed allow one loss; a second is a withheld opening.
  auto restarted = Make();  // the loss is in SQLite
  service_ = std::move(restarted);
  service_->OnRoundStart(1, "");
  for (auto& q : provers_) {
    Commit(q, 1);
    ASSERT_TRUE(service_->OnCommitment(q.id.public_key(), Message(q), 40).ok());
  }
  std::vector<VerificationService::Member> members;
  for (uint32_t i = 0; i < provers_.size(); ++i) members.push_back({provers_[i].id.public_key(), i});
  service_->OnRoundCommitted(1, members, 50);
  ASSERT_GT(lose(*service_, 1), 0u);
  ASSERT_TRUE(bans_.count(key));
  EXPECT_NE(bans_[key].find("more than restarts explain"), std::string::npos) << bans_[key];
}

TEST_F(ServiceTest, AMismatchGoesToARefereeWhoDecides) {
  CommitRound();
  Prover& p = provers_[0];
  const auto q = OpenRequests(p).front();
  service_->OnOpening(p.id.public_key(), Open(p, q.challenge_id(), q.step()), 30);
  const std::vector<net::PublicKey> verifiers = Asked(q.challenge_id(), false);
  ASSERT_FALSE(verifiers.empty());
  const net::PublicKey accuser = verifiers.back();
  // The accuser claims another update; the referee reproduces the prover's leaf exactly.
  const verifier::StepLeaf& leaf = p.leaves[q.step()];
  v1::VerifyResult lie;
  lie.set_challenge_id(q.challenge_id());
  lie.set_outcome(v1::VERIFY_MISMATCH);
  lie.set_state_before(DigestToBytes(leaf.state_before));
  lie.set_batch(DigestToBytes(leaf.batch));
  lie.set_update(DigestToBytes(Sha256Of("not the update")));
  lie.set_loss_bits(leaf.loss_bits);
  const size_t before = sent_.size();
  service_->OnVerifyResult(accuser, lie, 40);
  const std::vector<net::PublicKey> referees = Asked(q.challenge_id(), true);
  const net::PublicKey referee = referees.empty() ? net::PublicKey{} : referees.back();
  ASSERT_NE(referee, net::PublicKey{}) << before;
  EXPECT_NE(referee, accuser);
  EXPECT_NE(referee, p.id.public_key());
  v1::VerifyResult truth = lie;
  truth.set_outcome(v1::VERIFY_MATCH);
  truth.set_update(DigestToBytes(leaf.update));
  service_->OnVerifyResult(referee, truth, 50);
  EXPECT_TRUE(bans_.count(accuser));
  EXPECT_FALSE(bans_.count(p.id.public_key()));
  auto accuser_record = service_->ledger().Get(accuser, 0);
  ASSERT_TRUE(accuser_record.ok());
  EXPECT_EQ(accuser_record->false_accusations, 1u);
  EXPECT_NE(Record(p).verdict(), verifier::RoundVerdict::kRejected);
}

// Two verifiers per step: one colludes with a faking prover and vouches for its step, the other
// reports the mismatch; the referee convicts, and the colluder is banned with the prover.
TEST_F(ServiceTest, AVerifierThatVouchesForAConvictedStepIsBanned) {
  spec_.set_verifiers_per_step(2);
  service_ = Make();
  Prover extra;
  Commit(extra, 0);
  service_->OnRoundStart(0, "");
  std::vector<Prover*> all = {&provers_[0], &provers_[1], &provers_[2], &extra};
  for (Prover* p : all) ASSERT_TRUE(service_->OnCommitment(p->id.public_key(), Message(*p), 10).ok());
  std::vector<VerificationService::Member> members;
  for (uint32_t i = 0; i < all.size(); ++i) members.push_back({all[i]->id.public_key(), i});
  service_->OnRoundCommitted(0, members, 20);
  Prover& cheat = provers_[0];
  const auto q = OpenRequests(cheat).front();
  service_->OnOpening(cheat.id.public_key(), Open(cheat, q.challenge_id(), q.step()), 30);
  const std::vector<net::PublicKey> verifiers = Asked(q.challenge_id(), false);
  ASSERT_EQ(verifiers.size(), 2u);
  const verifier::StepLeaf& leaf = cheat.leaves[q.step()];
  v1::VerifyResult vouch;  // the colluder: "it matches"
  vouch.set_challenge_id(q.challenge_id());
  vouch.set_outcome(v1::VERIFY_MATCH);
  v1::VerifyResult honest;  // the honest replay lands elsewhere
  honest.set_challenge_id(q.challenge_id());
  honest.set_outcome(v1::VERIFY_MISMATCH);
  honest.set_state_before(DigestToBytes(leaf.state_before));
  honest.set_batch(DigestToBytes(leaf.batch));
  honest.set_update(DigestToBytes(Sha256Of("the honest update")));
  honest.set_loss_bits(leaf.loss_bits);
  service_->OnVerifyResult(verifiers[0], vouch, 40);
  service_->OnVerifyResult(verifiers[1], honest, 41);
  const std::vector<net::PublicKey> referees = Asked(q.challenge_id(), true);
  const net::PublicKey referee = referees.empty() ? net::PublicKey{} : referees.back();
  ASSERT_NE(referee, net::PublicKey{});
  EXPECT_NE(referee, cheat.id.public_key());
  EXPECT_TRUE(std::find(verifiers.begin(), verifiers.end(), referee) == verifiers.end());
  service_->OnVerifyResult(referee, honest, 50);  // the referee's replay agrees with the accuser
  EXPECT_TRUE(bans_.count(cheat.id.public_key()));
  EXPECT_TRUE(bans_.count(verifiers[0]));   // vouched for a convicted step
  EXPECT_FALSE(bans_.count(verifiers[1]));  // told the truth
  EXPECT_FALSE(bans_.count(referee));
  EXPECT_EQ(Record(cheat).verdict(), verifier::RoundVerdict::kRejected);
}

// With enough members a dispute goes to two referees; a split is broken by a third, and the
// referee in the minority is banned: one referee colluding with the prover cannot acquit it.
TEST_F(ServiceTest, ASplitBetweenTwoRefereesGoesToAThirdAndTheMinorityIsBanned) {
  std::array<Prover, 2> extra;
  for (auto& p : extra) Commit(p, 0);
  service_->OnRoundStart(0, "");
  std::vector<Prover*> all = {&provers_[0], &provers_[1], &provers_[2], &extra[0], &extra[1]};
  for (Prover* p : all) ASSERT_TRUE(service_->OnCommitment(p->id.public_key(), Message(*p), 10).ok());
  std::vector<VerificationService::Member> members;
  for (uint32_t i = 0; i < all.size(); ++i) members.push_back({all[i]->id.public_key(), i});
  service_->OnRoundCommitted(0, members, 20);
  Prover& cheat = provers_[0];
  const auto q = OpenRequests(cheat).front();
  service_->OnOpening(cheat.id.public_key(), Open(cheat, q.challenge_id(), q.step()), 30);
  auto asked = [&](bool referee) { return Asked(q.challenge_id(), referee); };
  const std::vector<net::PublicKey> verifiers = asked(false);
  ASSERT_EQ(verifiers.size(), 1u);
  const verifier::StepLeaf& leaf = cheat.leaves[q.step()];
  v1::VerifyResult honest;  // what an honest replay of the faked step finds
  honest.set_challenge_id(q.challenge_id());
  honest.set_outcome(v1::VERIFY_MISMATCH);
  honest.set_state_before(DigestToBytes(leaf.state_before));
  honest.set_batch(DigestToBytes(leaf.batch));
  honest.set_update(DigestToBytes(Sha256Of("the honest update")));
  honest.set_loss_bits(leaf.loss_bits);
  v1::VerifyResult cover = honest;  // a colluder reports the prover's own leaf as its replay
  cover.set_outcome(v1::VERIFY_MATCH);
  cover.set_update(DigestToBytes(leaf.update));
  service_->OnVerifyResult(verifiers[0], honest, 40);
  std::vector<net::PublicKey> referees = asked(true);
  ASSERT_EQ(referees.size(), 2u);
  service_->OnVerifyResult(referees[0], cover, 41);
  EXPECT_FALSE(bans_.count(cheat.id.public_key()));  // one referee's word decides nothing
  service_->OnVerifyResult(referees[1], honest, 42);
  const std::vector<net::PublicKey> now = asked(true);
  ASSERT_EQ(now.size(), 3u);  // the split went to a third
  net::PublicKey third{};
  for (const auto& k : now) {
    if (k != referees[0] && k != referees[1]) third = k;
  }
  EXPECT_FALSE(bans_.count(cheat.id.public_key()));
  service_->OnVerifyResult(third, honest, 43);
  EXPECT_TRUE(bans_.count(cheat.id.public_key()));
  EXPECT_TRUE(bans_.count(referees[0]));  // ruled against the majority
  EXPECT_FALSE(bans_.count(referees[1]));
  EXPECT_FALSE(bans_.count(third));
  EXPECT_FALSE(bans_.count(verifiers[0]));
  EXPECT_EQ(Record(cheat).verdict(), verifier::RoundVerdict::kRejected);
}

// Time the coordinator could not listen (its strand busy) moves every open deadline: an opening
// due during the stall is not a default, one still missing after the extended deadline is.
TEST_F(ServiceTest, AStalledCoordinatorExtendsTheDeadlinesItCouldNotWatch) {
  CommitRound();
  Prover& p = provers_[0];
  ASSERT_FALSE(OpenRequests(p).empty());
  service_->ExtendDeadlines(5000);
  service_->Sweep(20 + 1000 + 1);  // the original deadline has passed
  EXPECT_FALSE(bans_.count(p.id.public_key()));
  service_->Sweep(20 + 6000 + 1);
  ASSERT_TRUE(bans_.count(p.id.public_key()));
  EXPECT_NE(bans_[p.id.public_key()].find("withheld the opening"), std::string::npos);
}

// A prover that lost its connection before answering is asked again when it rejoins, with a new
// deadline; it is convicted only if it still does not answer.
TEST_F(ServiceTest, AReconnectedProverIsAskedAgainForItsOpenings) {
  CommitRound();
  Prover& p = provers_[0];
  const auto first = OpenRequests(p);
  ASSERT_FALSE(first.empty());
  sent_.clear();
  service_->OnMemberReconnected(p.id.public_key(), 900);
  const auto again = OpenRequests(p);
  ASSERT_EQ(again.size(), first.size());
  EXPECT_EQ(again[0].challenge_id(), first[0].challenge_id());
  EXPECT_TRUE(OpenRequests(provers_[1]).empty()) << "only the reconnected prover is asked";
  service_->Sweep(20 + 1000 + 1);  // its first deadline
  EXPECT_FALSE(bans_.count(p.id.public_key()));
  for (const auto& q : again) service_->OnOpening(p.id.public_key(), Open(p, q.challenge_id(), q.step()), 1000);
  service_->Sweep(900 + 1000 + 1);
  EXPECT_FALSE(bans_.count(p.id.public_key()));
}

// ---- openings peer to peer (verifier/opening_bulk.h) ------------------------------------------

// `p`'s opening of challenge `q` with its bulk detached, as a prover with a state server sends it.
v1::Opening Detached(v1::Opening o) {
  o.set_state(std::string(2 << 20, 's'));  // large enough to detach
  (void)verifier::DetachOpeningBulk(o);
  return o;
}

class BulkServiceTest : public ServiceTest {
 protected:
  // Round 0 committed, and `p`'s first challenge opened with a detached bulk: returns its
  // challenge id; the verifier's request went out.
  uint64_t OpenDetached(Prover& p) {
    service_->SetBulkSources([this](const net::PublicKey& key) -> std::optional<v1::Member> {
      v1::Member m;
      m.set_host("10.0.0.7");
      m.set_port(4242);
      m.set_public_key(net::KeyToBytes(key));
      return m;
    });
    CommitRound();
    const auto requests = OpenRequests(p);
    const auto q = requests.front();
    EXPECT_FALSE(q.inline_bulk());
    for (size_t i = 1; i < requests.size(); ++i) {  // its other challenges: opened whole
      service_->OnOpening(p.id.public_key(), Open(p, requests[i].challenge_id(), requests[i].step()), 30);
    }
    sent_.clear();
    service_->OnOpening(p.id.public_key(), Detached(Open(p, q.challenge_id(), q.step())), 30);
    return q.challenge_id();
  }
  v1::VerifyResult Unavailable(uint64_t id) {
    v1::VerifyResult r;
    r.set_challenge_id(id);
    r.set_outcome(v1::VERIFY_CANNOT_REPLAY);
    r.set_reason("cannot fetch the opening from the prover: refused");
    r.set_opening_unavailable(true);
    return r;
  }
};

// Verifiers are sent the light opening and told where to fetch the bulk.
TEST_F(BulkServiceTest, AVerifierIsToldWhereToFetchADetachedOpening) {
  Prover& p = provers_[0];
  const uint64_t id = OpenDetached(p);
  const auto requests = VerifyRequests(id);
  ASSERT_EQ(requests.size(), 1u);
  const v1::VerifyRequest& q = requests.front().second;
  EXPECT_TRUE(verifier::HasDetachedBulk(q.opening()));
  EXPECT_TRUE(q.opening().state().empty());
  EXPECT_EQ(q.bulk_source().port(), 4242u);
  EXPECT_EQ(q.bulk_source().public_key(), net::KeyToBytes(p.id.public_key()));
  v1::VerifyResult match;
  match.set_challenge_id(id);
  match.set_outcome(v1::VERIFY_MATCH);
  service_->OnVerifyResult(requests.front().first, match, 40);
  EXPECT_EQ(Record(p).steps_verified(), 1u);
}

// A verifier that cannot fetch it is no verdict: the prover is asked for the whole opening
// through the coordinator, which must carry the bulk it announced, and the verifier gets that.
TEST_F(BulkServiceTest, AnUnfetchableOpeningIsAskedForWholeAndForwarded) {
  Prover& p = provers_[0];
  const uint64_t id = OpenDetached(p);
  const net::PublicKey verifier_key = VerifyRequests(id).front().first;
  sent_.clear();
  service_->OnVerifyResult(verifier_key, Unavailable(id), 40);
  const auto asked = OpenRequests(p);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_TRUE(asked.front().inline_bulk());
  EXPECT_EQ(asked.front().challenge_id(), id);
  service_->Sweep(40 + 1000 - 1);  // nobody defaults while the whole opening is on its way
  EXPECT_FALSE(bans_.count(p.id.public_key()));
  v1::Opening whole = Open(p, id, asked.front().step());
  whole.set_state(std::string(2 << 20, 's'));  // the bulk it announced
  service_->OnOpening(p.id.public_key(), whole, 50);
  const auto forwarded = VerifyRequests(id);
  ASSERT_EQ(forwarded.size(), 1u);
  EXPECT_EQ(forwarded.front().first, verifier_key);
  EXPECT_FALSE(verifier::HasDetachedBulk(forwarded.front().second.opening()));
  EXPECT_EQ(forwarded.front().second.opening().state().size(), size_t{2} << 20);
  v1::VerifyResult match;
  match.set_challenge_id(id);
  match.set_outcome(v1::VERIFY_MATCH);
  service_->OnVerifyResult(verifier_key, match, 60);
  EXPECT_EQ(Record(p).steps_verified(), 1u);
  EXPECT_FALSE(bans_.count(p.id.public_key()));
}

// The whole opening must be the announced one: a prover that sends another is convicted...
TEST_F(BulkServiceTest, AWholeOpeningOtherThanTheAnnouncedOneConvictsTheProver) {
  Prover& p = provers_[0];
  const uint64_t id = OpenDetached(p);
  service_->OnVerifyResult(VerifyRequests(id).front().first, Unavailable(id), 40);
  v1::Opening other = Open(p, id, OpenRequests(p).back().step());
  other.set_state(std::string(2 << 20, 't'));  // not the bulk it announced
  service_->OnOpening(p.id.public_key(), other, 50);
  ASSERT_TRUE(bans_.count(p.id.public_key()));
  EXPECT_NE(bans_[p.id.public_key()].find("not the bulk it announced"), std::string::npos) << bans_[p.id.public_key()];
}

// ... and so is one that sends none in time.
TEST_F(BulkServiceTest, NoWholeOpeningInTimeConvictsTheProver) {
  Prover& p = provers_[1];
  const uint64_t id = OpenDetached(p);
  service_->OnVerifyResult(VerifyRequests(id).front().first, Unavailable(id), 40);
  service_->Sweep(40 + 1000 + 1);
  ASSERT_TRUE(bans_.count(p.id.public_key()));
  EXPECT_NE(bans_[p.id.public_key()].find("neither directly nor through the coordinator"), std::string::npos)
      << bans_[p.id.public_key()];
}

// ---- a job that publishes a calibration for (gpu-test prover, cpu-test verifier) ----------------

class CalibratedServiceTest : public ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    auto c = verifier::FitTolerance("gpu-test", "cpu-test", std::vector<verifier::DifferenceSample>{{1e-6, 1e-7}}, 4.0, 1);
    ASSERT_TRUE(c.ok());
    spec_.add_tolerance_calibrations(verifier::EncodeCalibration(*c));
    service_ = Make();
  }

  // Round 0 committed by `gpus` and the three cpu-test provers.
  void CommitMixedRound(std::vector<Prover*> gpus) {
    service_->OnRoundStart(0, "");
    std::vector<Prover*> all = gpus;
    for (auto& p : provers_) all.push_back(&p);
    for (Prover* p : all) ASSERT_TRUE(service_->OnCommitment(p->id.public_key(), Message(*p), 10).ok());
    std::vector<VerificationService::Member> members;
    for (uint32_t i = 0; i < all.size(); ++i) members.push_back({all[i]->id.public_key(), i});
    service_->OnRoundCommitted(0, members, 20);
  }

  // `gpus` commit as gpu-test and round 0 commits with them; gpus[0] opens its first challenge,
  // with the state after the step. Returns that challenge.
  v1::OpenRequest OpenFirstGpuChallenge(std::vector<Prover*> gpus) {
    for (size_t i = 0; i < gpus.size(); ++i) Commit(*gpus[i], 0, static_cast<uint8_t>(i), "gpu-test");
    CommitMixedRound(gpus);
    const auto q = OpenRequests(*gpus[0]).front();
    v1::Opening o = Open(*gpus[0], q.challenge_id(), q.step());
    o.set_state_after("opaque state after");
    service_->OnOpening(gpus[0]->id.public_key(), o, 30);
    return q;
  }

  bool IsCpu(const net::PublicKey& key) const {
    return std::any_of(provers_.begin(), provers_.end(), [&](const Prover& p) { return p.id.public_key() == key; });
  }

  // A replay's answer: the prover's inputs, another update (a calibrated pair's bits differ).
  v1::VerifyResult Answer(uint64_t id, const verifier::StepLeaf& leaf, v1::VerifyOutcome outcome) {
    v1::VerifyResult r;
    r.set_challenge_id(id);
    r.set_outcome(outcome);
    r.set_state_before(DigestToBytes(leaf.state_before));
    r.set_batch(DigestToBytes(leaf.batch));
    r.set_update(DigestToBytes(Sha256Of("another class's rounding of the update")));
    r.set_loss_bits(leaf.loss_bits);
    return r;
  }
};

// A prover of a calibrated class opens the state after each challenged step too (its verifiers of
// another class judge it), and withholding it convicts; other provers open as before.
TEST_F(CalibratedServiceTest, ACalibratedProverOpensTheStateAfterAndMustGiveIt) {
  Prover gpu;
  Commit(gpu, 0, 0, "gpu-test");
  CommitMixedRound({&gpu});
  const auto requests = OpenRequests(gpu);
  ASSERT_EQ(requests.size(), 2u);
  for (const auto& q : requests) EXPECT_TRUE(q.state_after());
  for (const auto& q : OpenRequests(provers_[0])) EXPECT_FALSE(q.state_after());

  v1::Opening with = Open(gpu, requests[0].challenge_id(), requests[0].step());
  with.set_state_after("opaque state after");
  service_->OnOpening(gpu.id.public_key(), with, 30);
  const auto verifiers = Asked(requests[0].challenge_id(), false);
  ASSERT_EQ(verifiers.size(), 1u);
  EXPECT_TRUE(IsCpu(verifiers[0]));
  EXPECT_FALSE(bans_.count(gpu.id.public_key()));

  service_->OnOpening(gpu.id.public_key(), Open(gpu, requests[1].challenge_id(), requests[1].step()), 31);
  ASSERT_TRUE(bans_.count(gpu.id.public_key()));
  EXPECT_NE(bans_[gpu.id.public_key()].find("withheld the state after"), std::string::npos) << bans_[gpu.id.public_key()];
}

// Referees of a calibrated pair rule by their judgement within the limits, not by bits: their
// replays differ from the honest prover's leaf, and they acquit it; the accuser, whose own
// tolerance judgement they overruled, is the one banned.
TEST_F(CalibratedServiceTest, RefereesOfACalibratedPairRuleWithinTheLimits) {
  Prover gpu;
  const auto q = OpenFirstGpuChallenge({&gpu});
  const net::PublicKey accuser = Asked(q.challenge_id(), false).front();
  const verifier::StepLeaf& leaf = gpu.leaves[q.step()];
  service_->OnVerifyResult(accuser, Answer(q.challenge_id(), leaf, v1::VERIFY_MISMATCH), 40);
  const auto referees = Asked(q.challenge_id(), true);
  ASSERT_EQ(referees.size(), 2u);
  for (const auto& r : referees) service_->OnVerifyResult(r, Answer(q.challenge_id(), leaf, v1::VERIFY_MATCH), 50);
  EXPECT_FALSE(bans_.count(gpu.id.public_key())) << bans_[gpu.id.public_key()];
  EXPECT_TRUE(bans_.count(accuser));
  auto accuser_record = service_->ledger().Get(accuser, 0);
  ASSERT_TRUE(accuser_record.ok());
  EXPECT_EQ(accuser_record->false_accusations, 1u);
  for (const auto& r : referees) EXPECT_FALSE(bans_.count(r));
  EXPECT_NE(Record(gpu).verdict(), verifier::RoundVerdict::kRejected);
}

// The same, but the referees find the step outside the limits: the prover is convicted; the
// verifier that vouched within its own pair's limits is not banned for it (a lie can sit inside
// one pair's tolerance and outside another's).
TEST_F(CalibratedServiceTest, AConvictionWithinToleranceBansNoToleranceVoucher) {
  spec_.set_verifiers_per_step(2);
  service_ = Make();
  Prover gpu;
  const auto q = OpenFirstGpuChallenge({&gpu});
  const auto verifiers = Asked(q.challenge_id(), false);
  ASSERT_EQ(verifiers.size(), 2u);
  const verifier::StepLeaf& leaf = gpu.leaves[q.step()];
  service_->OnVerifyResult(verifiers[0], Answer(q.challenge_id(), leaf, v1::VERIFY_MATCH), 40);
  service_->OnVerifyResult(verifiers[1], Answer(q.challenge_id(), leaf, v1::VERIFY_MISMATCH), 41);
  const auto referees = Asked(q.challenge_id(), true);
  ASSERT_EQ(referees.size(), 1u);  // four cpu members: two verified, one is left
  service_->OnVerifyResult(referees[0], Answer(q.challenge_id(), leaf, v1::VERIFY_MISMATCH), 50);
  EXPECT_TRUE(bans_.count(gpu.id.public_key()));
  EXPECT_FALSE(bans_.count(verifiers[0]));
  EXPECT_FALSE(bans_.count(verifiers[1]));
  EXPECT_EQ(Record(gpu).verdict(), verifier::RoundVerdict::kRejected);
}

// A same-class verifier compares bit for bit; when only referees of a calibrated class remain,
// their acquittal within the limits cannot show its accusation false (a lie may hide inside the
// limits), nor can its accusation convict: nobody is penalised.
TEST_F(CalibratedServiceTest, ABitwiseAccusationInsideTheRefereesToleranceBansNobody) {
  Prover gpu, twin;
  const auto q = OpenFirstGpuChallenge({&gpu, &twin});
  const auto verifiers = Asked(q.challenge_id(), false);
  ASSERT_EQ(verifiers.size(), 1u);
  EXPECT_EQ(verifiers[0], twin.id.public_key()) << "its own class verifies first";
  const verifier::StepLeaf& leaf = gpu.leaves[q.step()];
  service_->OnVerifyResult(twin.id.public_key(), Answer(q.challenge_id(), leaf, v1::VERIFY_MISMATCH), 40);
  const auto referees = Asked(q.challenge_id(), true);
  ASSERT_EQ(referees.size(), 2u);
  for (const auto& r : referees) {
    EXPECT_TRUE(IsCpu(r));
    service_->OnVerifyResult(r, Answer(q.challenge_id(), leaf, v1::VERIFY_MATCH), 50);
  }
  EXPECT_FALSE(bans_.count(gpu.id.public_key()));
  EXPECT_FALSE(bans_.count(twin.id.public_key()));
  EXPECT_NE(Record(gpu).verdict(), verifier::RoundVerdict::kRejected);
  EXPECT_EQ(Record(twin).false_accusations, 0u) << "an unresolved dispute charges nobody";
}

}  // namespace
}  // namespace tributary::launcher
