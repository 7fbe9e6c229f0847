#include "runtime/trainer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <cstring>
#include <fstream>
#include <cmath>
#include <condition_variable>
#include <iostream>
#include <limits>
#include <mutex>
#include <thread>

#include "core/files.h"
#include "runtime/job_spec.h"
#include "runtime/reference.h"
#include "runtime/training_data.h"
#include "tests/common/test_corpus.h"
#include "verifier/chain_ends.h"
#include "verifier/commitment.h"

namespace tributary::runtime {
namespace {

const Averager kAlone = [](std::span<float>) { return Status::Ok(); };

v1::JobSpec TinySpec(v1::Mode mode) {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_mode(mode);
  spec.set_n_layer(1);
  spec.set_n_head(2);
  spec.set_d_model(32);
  spec.set_context(16);
  spec.set_batch_size(4);
  spec.set_inner_steps(3);
  spec.set_rounds(4);
  spec.set_warmup_steps(2);
  spec.set_eval_batches(2);
  spec.set_num_peers(1);
  return spec;
}

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    PinComputeThreads(1);
    corpus_dir_ = new std::string(::tributary::testing::MakeTempCorpus("trainer"));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*corpus_dir_);
    delete corpus_dir_;
  }

  std::unique_ptr<Trainer> Make(const v1::JobSpec& spec) {
    auto data = LoadTrainingData(*corpus_dir_, spec);
    EXPECT_TRUE(data.ok()) << data.status().ToString();
    auto trainer = Trainer::Create(spec, *data, WorkerPlacement{});
    EXPECT_TRUE(trainer.ok()) << trainer.status().ToString();
    return trainer.ok() ? std::move(trainer).value() : nullptr;
  }

  static std::string* corpus_dir_;
};
std::string* TrainerTest::corpus_dir_ = nullptr;

class TrainerModeTest : public TrainerTest, public ::testing::WithParamInterface<v1::Mode> {};

TEST_P(TrainerModeTest, SameSpecGivesBitIdenticalTheta) {
  auto a = Make(TinySpec(GetParam()));
  auto b = Make(TinySpec(GetParam()));
  EXPECT_EQ(a->ThetaDigest(), b->ThetaDigest()) << "initialisation must depend only on the seed";
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(a->RunRound(kAlone).ok());
    ASSERT_TRUE(b->RunRound(kAlone).ok());
  }
  EXPECT_EQ(a->ThetaDigest(), b->ThetaDigest());
  v1::JobSpec other = TinySpec(GetParam());
  other.set_seed(99);
  EXPECT_NE(Make(other)->ThetaDigest(), Make(TinySpec(GetParam()))->ThetaDigest());
}

TEST_P(TrainerModeTest, CheckpointResumesBitExactly) {
  const v1::JobSpec spec = TinySpec(GetParam());
  auto straight = Make(spec);
  for (int r = 0; r < 4; ++r) ASSERT_TRUE(straight->RunRound(kAlone).ok());

  const std::string dir = ::tributary::testing::FreshTempDir("ckpt");
  const std::string path = dir + "/run.ckpt";
  auto first = Make(spec);
  for (int r = 0; r < 2; ++r) ASSERT_TRUE(first->RunRound(kAlone).ok());
  ASSERT_TRUE(first->SaveCheckpoint(path).ok());
  first.reset();

  auto resumed = Make(spec);
  Status loaded = resumed->LoadCheckpoint(path);
  ASSERT_TRUE(loaded.ok()) << loaded.ToString();
  EXPECT_EQ(resumed->completed_rounds(), 2u);
  for (int r = 0; r < 2; ++r) ASSERT_TRUE(resumed->RunRound(kAlone).ok());
  EXPECT_EQ(resumed->ThetaDigest(), straight->ThetaDigest());
  std::filesystem::remove_all(dir);
}

TEST_P(TrainerModeTest, LossFallsOverRounds) {
  v1::JobSpec spec = TinySpec(GetParam());
  spec.set_inner_steps(10);
  spec.set_inner_lr(1e-2);
  auto trainer = Make(spec);
  auto before = trainer->EvalLoss();
  ASSERT_TRUE(before.ok());
  for (int r = 0; r < 4; ++r) ASSERT_TRUE(trainer->RunRound(kAlone).ok());
  auto after = trainer->EvalLoss();
  ASSERT_TRUE(after.ok());
  EXPECT_LT(*after, *before - 0.3) << "before " << *before << " after " << *after;
}

INSTANTIATE_TEST_SUITE_P(Modes, TrainerModeTest, ::testing::Values(v1::MODE_DDP, v1::MODE_DILOCO),
                         [](const auto& info) { return ModeName(info.param); });

TEST_F(TrainerTest, CorruptForeignAndTruncatedCheckpointsAreRefused) {
  const v1::JobSpec spec = TinySpec(v1::MODE_DILOCO);
  const std::string dir = ::tributary::testing::FreshTempDir("ckpt-bad");
  const std::string path = dir + "/run.ckpt";
  auto trainer = Make(spec);
  ASSERT_TRUE(trainer->RunRound(kAlone).ok());
  ASSERT_TRUE(trainer->SaveCheckpoint(path).ok());
  auto bytes = ReadWholeFile(path);
  ASSERT_TRUE(bytes.ok());

  std::string flipped = *bytes;
  flipped[flipped.size() / 2] ^= 0x01;
  ASSERT_TRUE(WriteFileAtomically(path + ".flipped", flipped).ok());
  Status corrupt = Make(spec)->LoadCheckpoint(path + ".flipped");
  EXPECT_EQ(corrupt.code(), StatusCode::kCorruption);
  EXPECT_NE(corrupt.message().find("SHA-256"), std::string::npos);

  ASSERT_TRUE(WriteFileAtomically(path + ".short", bytes->substr(0, 20)).ok());
  EXPECT_EQ(Make(spec)->LoadCheckpoint(path + ".short").code(), StatusCode::kCorruption);

  v1::JobSpec other = spec;
  other.set_seed(5);
  Status foreign = Make(other)->LoadCheckpoint(path);
  EXPECT_EQ(foreign.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(foreign.message().find("belongs to job"), std::string::npos);

  EXPECT_EQ(Make(spec)->LoadCheckpoint(dir + "/missing.ckpt").code(), StatusCode::kNotFound);

  // A failed load leaves the trainer usable and unchanged.
  auto fresh = Make(spec);
  const Digest before = fresh->ThetaDigest();
  (void)fresh->LoadCheckpoint(path + ".flipped");
  EXPECT_EQ(fresh->ThetaDigest(), before);
  EXPECT_EQ(fresh->completed_rounds(), 0u);
  std::filesystem::remove_all(dir);
}

TEST_F(TrainerTest, AveragerFailureFailsTheRoundWithoutAdvancing) {
  for (v1::Mode mode : {v1::MODE_DDP, v1::MODE_DILOCO}) {
    auto trainer = Make(TinySpec(mode));
    const Averager broken = [](std::span<float>) { return Unavailable("peer 2 closed the connection"); };
    auto result = trainer->RunRound(broken);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(result.status().message().find("peer 2"), std::string::npos);
    EXPECT_EQ(trainer->completed_rounds(), 0u);
  }
}

TEST_F(TrainerTest, DilocoAppliesTheAveragedPseudoGradient) {
  // Two trainers; one sees its pseudo-gradient replaced by zeros (as if the group cancelled it):
  // with Δ = 0 the outer step must leave θ_global exactly at its round-start value.
  auto zeroed = Make(TinySpec(v1::MODE_DILOCO));
  const Digest start = zeroed->ThetaDigest();
  const Averager zero = [](std::span<float> v) {
    std::fill(v.begin(), v.end(), 0.0f);
    return Status::Ok();
  };
  ASSERT_TRUE(zeroed->RunRound(zero).ok());
  EXPECT_EQ(zeroed->ThetaDigest(), start);
  auto normal = Make(TinySpec(v1::MODE_DILOCO));
  ASSERT_TRUE(normal->RunRound(kAlone).ok());
  EXPECT_NE(normal->ThetaDigest(), start);
}

TEST_F(TrainerTest, RunningPastTheLastRoundIsRefused) {
  v1::JobSpec spec = TinySpec(v1::MODE_DDP);
  spec.set_rounds(1);
  auto trainer = Make(spec);
  ASSERT_TRUE(trainer->RunRound(kAlone).ok());
  EXPECT_EQ(trainer->RunRound(kAlone).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(TrainerTest, MissingOrForeignCorpusIsAClearError) {
  v1::JobSpec spec = TinySpec(v1::MODE_DDP);
  auto missing = LoadTrainingData("/nonexistent/moby-dick", spec);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("scripts/setup.sh"), std::string::npos);

  spec.set_corpus_digest(std::string(32, '\x01'));
  auto foreign = LoadTrainingData(*corpus_dir_, spec);
  ASSERT_FALSE(foreign.ok());
  EXPECT_EQ(foreign.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(foreign.status().message().find("same data"), std::string::npos);
}

TEST_F(TrainerTest, AVerifyingJobPublishesTheThetaEveryTrainerStartsFrom) {
  v1::JobSpec spec = TinySpec(v1::MODE_DILOCO);
  spec.set_verify_samples(1);
  ASSERT_TRUE(PublishJobDigests(spec, *corpus_dir_).ok());
  auto corpus = CorpusDigest(*corpus_dir_);
  ASSERT_TRUE(corpus.ok());
  EXPECT_EQ(spec.corpus_digest(), DigestToBytes(*corpus));
  ASSERT_EQ(spec.initial_theta_digest().size(), 32u);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  auto trainer = Make(spec);
  ASSERT_TRUE(trainer);
  EXPECT_EQ(spec.initial_theta_digest(), DigestToBytes(trainer->ThetaDigest()));
  // The seed decides θ_0, so another seed publishes another digest.
  v1::JobSpec reseeded = TinySpec(v1::MODE_DILOCO);
  reseeded.set_verify_samples(1);
  reseeded.set_seed(spec.seed() + 1);
  ASSERT_TRUE(PublishJobDigests(reseeded, *corpus_dir_).ok());
  EXPECT_NE(reseeded.initial_theta_digest(), spec.initial_theta_digest());
  // What a spec already states is kept; a job that does not verify publishes no θ_0.
  v1::JobSpec pinned = spec;
  pinned.set_initial_theta_digest(std::string(32, '\x07'));
  ASSERT_TRUE(PublishJobDigests(pinned, *corpus_dir_).ok());
  EXPECT_EQ(pinned.initial_theta_digest(), std::string(32, '\x07'));
  v1::JobSpec unverified = TinySpec(v1::MODE_DILOCO);
  ASSERT_TRUE(PublishJobDigests(unverified, *corpus_dir_).ok());
  EXPECT_TRUE(unverified.initial_theta_digest().empty());
  EXPECT_EQ(unverified.corpus_digest(), DigestToBytes(*corpus));
  // A stated corpus digest must still be this corpus's.
  v1::JobSpec foreign = spec;
  foreign.clear_initial_theta_digest();
  foreign.set_corpus_digest(std::string(32, '\x01'));
  Status refused = PublishJobDigests(foreign, *corpus_dir_);
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition) << refused.ToString();
}

TEST_F(TrainerTest, ReferenceTrainsTheCombinedBatchAndStopsAndResumes) {
  v1::JobSpec job = TinySpec(v1::MODE_DILOCO);
  job.set_num_peers(3);
  const v1::JobSpec ref = ReferenceSpec(job, 0);
  EXPECT_EQ(ref.mode(), v1::MODE_DDP);
  EXPECT_EQ(ref.batch_size(), 12u);

  ReferenceOptions full;
  full.corpus_dir = *corpus_dir_;
  auto straight = RunReference(job, full);
  ASSERT_TRUE(straight.ok()) << straight.status().ToString();
  EXPECT_EQ(straight->rounds, 4u);
  EXPECT_EQ(straight->tokens, 4u * 3u * 12u * 16u);

  const std::string dir = ::tributary::testing::FreshTempDir("ref");
  ReferenceOptions half = full;
  half.checkpoint_path = dir + "/ref.ckpt";
  half.stop_after_rounds = 2;
  auto first = RunReference(job, half);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->rounds, 2u);
  ReferenceOptions rest = full;
  rest.resume_from = dir + "/ref.ckpt";
  auto second = RunReference(job, rest);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->theta_digest, straight->theta_digest);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tributary::runtime

namespace tributary::runtime {
namespace {

class TentativeTest : public TrainerModeTest {};

TEST_P(TentativeTest, AbandonRestoresTheCommittedStateExactly) {
  auto t = Make(TinySpec(GetParam()));
  ASSERT_TRUE(t->RunRound(kAlone).ok());
  const Digest committed_theta = t->ThetaDigest();
  const Digest committed_state = t->CommittedStateDigest();
  ASSERT_TRUE(t->TryRound(kAlone).ok());
  EXPECT_TRUE(t->has_tentative_round());
  EXPECT_NE(t->ThetaDigest(), committed_theta);
  EXPECT_EQ(t->TryRound(kAlone).status().code(), StatusCode::kFailedPrecondition);
  t->Abandon();
  EXPECT_EQ(t->ThetaDigest(), committed_theta);
  EXPECT_EQ(t->CommittedStateDigest(), committed_state);
  EXPECT_EQ(t->completed_rounds(), 1u);
}

TEST_P(TentativeTest, RetryAfterAFailedCollectiveEqualsAnUninterruptedRound) {
  auto straight = Make(TinySpec(GetParam()));
  ASSERT_TRUE(straight->RunRound(kAlone).ok());
  ASSERT_TRUE(straight->RunRound(kAlone).ok());

  auto retried = Make(TinySpec(GetParam()));
  ASSERT_TRUE(retried->RunRound(kAlone).ok());
  // DDP averages every step: fail the second; DiLoCo averages once per round: fail that one.
  const int failing_call = GetParam() == v1::MODE_DDP ? 2 : 1;
  int calls = 0;
  const Averager dies_midway = [&calls, failing_call](std::span<float>) {
    return ++calls == failing_call ? Unavailable("neighbour died") : Status::Ok();
  };
  auto failed = retried->TryRound(dies_midway);
  ASSERT_FALSE(failed.ok());
  EXPECT_FALSE(retried->has_tentative_round());
  ASSERT_TRUE(retried->TryRound(kAlone).ok());
  ASSERT_TRUE(retried->Commit().ok());
  // DiLoCo reuses its pseudo-gradient (inner steps not repeated); DDP restores AdamW too.
  EXPECT_EQ(retried->ThetaDigest(), straight->ThetaDigest());
  EXPECT_EQ(retried->CommittedStateDigest(), straight->CommittedStateDigest());
}

TEST_P(TentativeTest, ExportedStateMakesALateJoinerIdentical) {
  auto veteran = Make(TinySpec(GetParam()));
  for (int r = 0; r < 2; ++r) ASSERT_TRUE(veteran->RunRound(kAlone).ok());
  auto state = veteran->ExportCommittedState();
  ASSERT_TRUE(state.ok());
  auto joiner = Make(TinySpec(GetParam()));
  Status imported = joiner->ImportState(*state);
  ASSERT_TRUE(imported.ok()) << imported.ToString();
  EXPECT_EQ(joiner->completed_rounds(), 2u);
  EXPECT_EQ(joiner->ThetaDigest(), veteran->ThetaDigest());
  EXPECT_EQ(joiner->CommittedStateDigest(), veteran->CommittedStateDigest());
  // In a group every member applies the same averaged update; stand in for that average with
  // one fixed vector so both end the round identical although their local steps differ.
  const Averager group_average = [](std::span<float> v) {
    for (size_t i = 0; i < v.size(); ++i) v[i] = 1e-4f * static_cast<float>(i % 7);
    return Status::Ok();
  };
  ASSERT_TRUE(veteran->RunRound(group_average).ok());
  ASSERT_TRUE(joiner->RunRound(group_average).ok());
  EXPECT_EQ(joiner->ThetaDigest(), veteran->ThetaDigest());
}

// What a round report's chain ends (verifier/chain_ends.h) are made of: every step's state
// digests are the StepStateDigest of their halves; a DiLoCo worker's optimiser carries over from
// one round's last step to the next round's first; a worker that imports a state starts its
// optimiser afresh, since its moments belong to the θ it trained, not to the downloaded one.
TEST_F(TrainerTest, StepRecordsCarryTheHalvesOfTheirStatesAndAnImportStartsTheOptimiserAfresh) {
  const v1::JobSpec spec = TinySpec(v1::MODE_DILOCO);
  auto t = Make(spec);
  std::vector<StepRecord> records;
  t->SetStepObserver([&records](StepRecord r) { records.push_back(std::move(r)); });
  ASSERT_TRUE(t->RunRound(kAlone).ok());
  const Digest theta_1 = t->ThetaDigest();
  ASSERT_TRUE(t->RunRound(kAlone).ok());
  ASSERT_EQ(records.size(), 2 * spec.inner_steps());
  for (const StepRecord& r : records) {
    EXPECT_EQ(r.state_before, verifier::StepStateDigest(r.halves_before.parameters, r.halves_before.optimizer));
    EXPECT_EQ(r.update, verifier::StepStateDigest(r.halves_after.parameters, r.halves_after.optimizer));
  }
  EXPECT_EQ(records[0].halves_before.optimizer, verifier::FreshOptimizerDigest());
  const StepRecord& last_of_round_0 = records[spec.inner_steps() - 1];
  const StepRecord& first_of_round_1 = records[spec.inner_steps()];
  EXPECT_EQ(first_of_round_1.halves_before.optimizer, last_of_round_0.halves_after.optimizer);
  EXPECT_NE(first_of_round_1.halves_before.optimizer, verifier::FreshOptimizerDigest());
  EXPECT_EQ(first_of_round_1.halves_before.parameters, theta_1) << "a round's steps start from its θ";

  auto state = t->ExportCommittedState();
  ASSERT_TRUE(state.ok());
  ASSERT_TRUE(t->ImportState(*state).ok());
  records.clear();
  ASSERT_TRUE(t->RunRound(kAlone).ok());
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(records[0].halves_before.optimizer, verifier::FreshOptimizerDigest());
}

TEST_P(TentativeTest, BadStateIsRejectedAndChangesNothing) {
  auto veteran = Make(TinySpec(GetParam()));
  ASSERT_TRUE(veteran->RunRound(kAlone).ok());
  const std::string good = *veteran->ExportCommittedState();
  auto joiner = Make(TinySpec(GetParam()));
  const Digest before = joiner->CommittedStateDigest();

  std::string truncated = good.substr(0, good.size() - 3);
  EXPECT_EQ(joiner->ImportState(truncated).code(), StatusCode::kCorruption);
  EXPECT_EQ(joiner->ImportState(good + "x").code(), StatusCode::kCorruption);
  EXPECT_EQ(joiner->ImportState("garbage").code(), StatusCode::kCorruption);
  std::string nan = good;
  // The first θ value sits after magic, id length, id, rounds and the element count.
  const size_t first_value = 10 + 8 + 16 + 8 + 8;
  const float bad = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan.data() + first_value, &bad, sizeof(bad));
  EXPECT_EQ(joiner->ImportState(nan).code(), StatusCode::kCorruption);
  v1::JobSpec other = TinySpec(GetParam());
  other.set_seed(77);
  auto foreign = Make(other);
  EXPECT_EQ(foreign->ImportState(good).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(joiner->CommittedStateDigest(), before);
  EXPECT_EQ(joiner->completed_rounds(), 0u);
}


// One group's all-reduce in memory, for trainers on separate threads: blocks until every member
// has contributed, then hands each the mean summed in member order (bit-identical for all).
class GroupBus {
 public:
  explicit GroupBus(size_t members) : inputs_(members) {}

  Status Average(size_t member, std::span<float> values) {
    std::unique_lock<std::mutex> lock(mu_);
    inputs_[member].assign(values.begin(), values.end());
    const uint64_t generation = generation_;
    if (++arrived_ == inputs_.size()) {
      result_.assign(values.size(), 0.0f);
      for (const auto& in : inputs_) {
        if (in.size() != values.size()) return InvalidArgument("members disagree on the size");
        for (size_t i = 0; i < in.size(); ++i) result_[i] += in[i];
      }
      for (float& v : result_) v /= static_cast<float>(inputs_.size());
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
    std::copy(result_.begin(), result_.end(), values.begin());
    return Status::Ok();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::vector<float>> inputs_;
  std::vector<float> result_;
  size_t arrived_ = 0;
  uint64_t generation_ = 0;
};

std::vector<float> ThetaOf(const Trainer& trainer) {
  const std::string state = *trainer.ExportCommittedState();
  const size_t first_value = 10 + 8 + 16 + 8 + 8;  // magic, id length, id, rounds, count
  std::vector<float> theta(static_cast<size_t>(trainer.num_parameters()));
  std::memcpy(theta.data(), state.data() + first_value, theta.size() * sizeof(float));
  return theta;
}

// Largest distance between two workers' θ, relative to the norm of θ.
double Spread(const std::vector<std::unique_ptr<Trainer>>& workers) {
  std::vector<std::vector<float>> thetas;
  for (const auto& w : workers) thetas.push_back(ThetaOf(*w));
  double norm = 0, worst = 0;
  for (float v : thetas[0]) norm += double(v) * v;
  for (size_t a = 0; a < thetas.size(); ++a) {
    for (size_t b = a + 1; b < thetas.size(); ++b) {
      double d = 0;
      for (size_t i = 0; i < thetas[a].size(); ++i) d += std::pow(double(thetas[a][i]) - thetas[b][i], 2);
      worst = std::max(worst, d);
    }
  }
  return std::sqrt(worst / norm);
}

// Six DiLoCo workers in groups of three, re-mixed like launcher/grouping.h does for 6 / 3
// (blocks, then dealt); `mix` decides whether a group whose members come from different groups
// averages θ and momentum too. Returns the spread of θ after each round.
class GroupMixTest : public TrainerTest {
 protected:
  std::vector<double> Run(bool mix, int rounds, std::vector<std::unique_ptr<Trainer>>& workers,
                          const std::vector<std::vector<std::vector<size_t>>>& schedule) {
    v1::JobSpec spec = TinySpec(v1::MODE_DILOCO);
    spec.set_num_peers(6);
    spec.set_group_size(3);
    spec.set_rounds(static_cast<uint32_t>(rounds));
    auto data = LoadTrainingData(*corpus_dir_, spec);
    EXPECT_TRUE(data.ok());
    workers.clear();
    for (uint32_t shard = 0; shard < 6; ++shard) {
      workers.push_back(std::move(Trainer::Create(spec, *data, WorkerPlacement{shard, 6, 0})).value());
    }
    std::vector<double> spread;
    std::vector<int> group_of_last(6, 0);
    for (int r = 0; r < rounds; ++r) {
      const auto& groups = schedule[static_cast<size_t>(r) % schedule.size()];
      std::vector<std::thread> threads;
      std::vector<Status> results(6);
      std::vector<std::unique_ptr<GroupBus>> delta_bus, mix_bus;
      for (const auto& g : groups) {
        delta_bus.push_back(std::make_unique<GroupBus>(g.size()));
        mix_bus.push_back(std::make_unique<GroupBus>(g.size()));
      }
      for (size_t gi = 0; gi < groups.size(); ++gi) {
        // Mix only where the members come from different groups of the last round.
        bool mixed_origin = false;
        for (size_t w : groups[gi]) mixed_origin = mixed_origin || group_of_last[w] != group_of_last[groups[gi][0]];
        for (size_t slot = 0; slot < groups[gi].size(); ++slot) {
          const size_t w = groups[gi][slot];
          GroupBus* db = delta_bus[gi].get();
          GroupBus* mb = mix_bus[gi].get();
          Averager average = [db, slot](std::span<float> v) { return db->Average(slot, v); };
          Averager mixer;
          if (mix && mixed_origin && r > 0) mixer = [mb, slot](std::span<float> v) { return mb->Average(slot, v); };
          threads.emplace_back([&, w, average, mixer] {
            auto stats = workers[w]->TryRound(average, mixer);
            results[w] = stats.ok() ? workers[w]->Commit() : stats.status();
          });
        }
      }
      for (auto& t : threads) t.join();
      for (const Status& st : results) EXPECT_TRUE(st.ok()) << st.ToString();
      for (size_t gi = 0; gi < groups.size(); ++gi) {
        for (size_t w : groups[gi]) group_of_last[w] = static_cast<int>(gi);
      }
      spread.push_back(Spread(workers));
    }
    return spread;
  }
};

TEST_F(GroupMixTest, MixRoundsMakeGroupsBitIdenticalAndBringGroupsTogether) {
  const std::vector<std::vector<std::vector<size_t>>> remixed = {{{0, 1, 2}, {3, 4, 5}}, {{0, 2, 4}, {1, 3, 5}}};
  std::vector<std::unique_ptr<Trainer>> mixed, unmixed;
  const auto with_mix = Run(true, 4, mixed, remixed);
  const auto without = Run(false, 4, unmixed, remixed);
  // After a mix round every member of each group holds the same θ and the same full state.
  for (const auto& group : remixed[1]) {
    for (size_t w : group) {
      EXPECT_EQ(mixed[w]->CommittedStateDigest(), mixed[group[0]]->CommittedStateDigest()) << "worker " << w;
      EXPECT_EQ(mixed[w]->ThetaDigest(), mixed[group[0]]->ThetaDigest());
    }
  }
  // Without the mix, members of one group keep their own θ: workers 0 and 4 (one group in the
  // last round, different groups in round 0) differ.
  EXPECT_NE(unmixed[0]->ThetaDigest(), unmixed[4]->ThetaDigest());
  // Round 0 is identical (everyone starts at θ_0). From the first mix on, θ across all six is
  // closer with mixing than without, and the gap keeps closing while the unmixed one grows.
  EXPECT_EQ(with_mix[0], without[0]);
  for (size_t r = 0; r < with_mix.size(); ++r) {
    std::cout << "round " << r << ": θ spread across six workers, with mixing " << with_mix[r] << ", without "
              << without[r] << "\n";
  }
  for (size_t r = 1; r < with_mix.size(); ++r) {
    EXPECT_LT(with_mix[r], 0.75 * without[r]) << "round " << r;
    EXPECT_LT(with_mix[r], with_mix[r - 1]) << "round " << r << ": mixing must keep pulling the groups together";
  }
  EXPECT_LT(with_mix.back(), 0.25 * without.back());
  // One group of everyone that mixes averages exactly: all six end bit-identical.
  std::vector<std::unique_ptr<Trainer>> merged;
  Run(true, 3, merged, {{{0, 1, 2}, {3, 4, 5}}, {{0, 1, 2}, {3, 4, 5}}, {{0, 1, 2, 3, 4, 5}}});
  for (size_t w = 1; w < 6; ++w) EXPECT_EQ(merged[w]->CommittedStateDigest(), merged[0]->CommittedStateDigest());
}

TEST_F(GroupMixTest, MixIsRefusedOutsideDiloco) {
  auto ddp = Make(TinySpec(v1::MODE_DDP));
  auto st = ddp->TryRound(kAlone, kAlone);
  EXPECT_EQ(st.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(ddp->completed_rounds(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Modes, TentativeTest, ::testing::Values(v1::MODE_DDP, v1::MODE_DILOCO),
                         [](const auto& info) { return ModeName(info.param); });

}  // namespace
}  // namespace tributary::runtime
