// diloco-async (runtime/async_outer.h): the delayed outer update against a hand-computed
// reference, exact retry of both of a round's collectives, late joiners, checkpoints.
#include "runtime/async_outer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "runtime/job_spec.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"
#include "tests/common/test_corpus.h"

namespace tributary::runtime {
namespace {

const Averager kAlone = [](std::span<float>) { return Status::Ok(); };

// A stand-in for a group's average: every value times `factor`.
Averager Scales(float factor) {
  return [factor](std::span<float> v) {
    for (float& x : v) x *= factor;
    return Status::Ok();
  };
}

v1::JobSpec TinySpec(v1::Mode mode) {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_mode(mode);
  spec.set_n_layer(1);
  spec.set_n_head(2);
  spec.set_d_model(32);
  spec.set_context(16);
  spec.set_batch_size(4);
  spec.set_inner_steps(3);
  spec.set_rounds(3);
  spec.set_warmup_steps(2);
  spec.set_eval_batches(2);
  spec.set_num_peers(1);
  spec.set_outer_lr(0.5);
  spec.set_outer_momentum(0.9);
  return spec;
}

// θ from the canonical state bytes: magic, u64 id length, id, u64 rounds, u64 n, n floats.
std::vector<float> ThetaOf(const Trainer& t) {
  const std::string s = *t.ExportCommittedState();
  auto u64 = [&](size_t at) {
    uint64_t v = 0;
    std::memcpy(&v, s.data() + at, 8);
    return v;
  };
  size_t at = std::strlen("TRIBSTATE1");
  at += 8 + u64(at);  // job id
  at += 8;            // rounds
  const uint64_t n = u64(at);
  at += 8;
  std::vector<float> theta(n);
  std::memcpy(theta.data(), s.data() + at, n * sizeof(float));
  return theta;
}

class AsyncOuterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    PinComputeThreads(1);
    corpus_dir_ = new std::string(::tributary::testing::MakeTempCorpus("async-outer"));
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
std::string* AsyncOuterTest::corpus_dir_ = nullptr;

TEST(OuterLearningRate, RampsLinearlyOverTheWarmupRounds) {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_outer_lr(0.8);
  EXPECT_DOUBLE_EQ(OuterLearningRate(spec, 0), 0.8);
  spec.set_outer_warmup_rounds(4);
  EXPECT_DOUBLE_EQ(OuterLearningRate(spec, 0), 0.2);
  EXPECT_DOUBLE_EQ(OuterLearningRate(spec, 2), 0.6);
  EXPECT_DOUBLE_EQ(OuterLearningRate(spec, 3), 0.8);
  EXPECT_DOUBLE_EQ(OuterLearningRate(spec, 100), 0.8);
}

class DelayedUpdateTest : public AsyncOuterTest, public ::testing::WithParamInterface<uint32_t> {};

// Three rounds; the "group" replaces each averaged Δ by a known vector (D, E, F), so θ after
// every round is a closed form of θ_0, lr, μ and those vectors:
//   round 0: no collective, θ_1 = θ_0
//   round 1: the collective carries Δ_0 (bit-equal to a synchronous DiLoCo round 0's Δ)
//            → D; m = D, θ_2 = θ_1 − lr_0 (D + μ m)
//   round 2 (last): Δ_1 → E; m = μ m + E, θ' = θ_2 − lr_1 (E + μ m); then Δ_2 → F (blocking);
//            m = μ m + F, θ_3 = θ' − lr_2 (F + μ m)
TEST_P(DelayedUpdateTest, MatchesAHandComputedReference) {
  v1::JobSpec spec = TinySpec(v1::MODE_DILOCO_ASYNC);
  spec.set_outer_warmup_rounds(GetParam());
  const double mu = spec.outer_momentum();
  auto lr = [&](int k) { return OuterLearningRate(spec, k); };
  auto t = Make(spec);
  const std::vector<float> theta0 = ThetaOf(*t);
  const size_t n = theta0.size();

  // Δ_0 as synchronous DiLoCo computes it: same seed, same batches, same inner steps.
  std::vector<float> sync_delta0;
  {
    v1::JobSpec sync_spec = spec;
    sync_spec.set_mode(v1::MODE_DILOCO);
    auto sync = Make(sync_spec);
    const Averager capture = [&](std::span<float> v) {
      sync_delta0.assign(v.begin(), v.end());
      return Status::Ok();
    };
    ASSERT_TRUE(sync->RunRound(capture).ok());
    ASSERT_EQ(sync_delta0.size(), n);
  }

  int calls = 0;
  const Averager none = [&](std::span<float>) {
    ++calls;
    return Status::Ok();
  };
  ASSERT_TRUE(t->RunRound(none).ok());
  EXPECT_EQ(calls, 0) << "round 0 has nothing to average";
  EXPECT_EQ(ThetaOf(*t), theta0) << "round 0 applies no update";

  auto D = [](size_t i) { return 1e-3f * static_cast<float>(int(i % 5) - 2); };
  auto E = [](size_t i) { return 1e-3f * static_cast<float>(int(i % 3) - 1); };
  auto F = [](size_t i) { return 2e-3f * (static_cast<float>(i % 4) - 1.5f); };

  calls = 0;
  const Averager round1 = [&](std::span<float> v) {
    ++calls;
    EXPECT_TRUE(std::equal(v.begin(), v.end(), sync_delta0.begin(), sync_delta0.end()))
        << "round 1 must average this peer's Δ of round 0";
    for (size_t i = 0; i < v.size(); ++i) v[i] = D(i);
    return Status::Ok();
  };
  ASSERT_TRUE(t->RunRound(round1).ok());
  EXPECT_EQ(calls, 1);
  std::vector<double> m(n), expect(n);
  for (size_t i = 0; i < n; ++i) {
    m[i] = D(i);
    expect[i] = theta0[i] - lr(0) * (D(i) + mu * m[i]);
  }
  std::vector<float> got = ThetaOf(*t);
  for (size_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], expect[i], 1e-6) << "θ_2[" << i << "]";

  calls = 0;
  const Averager round2 = [&](std::span<float> v) {
    ++calls;
    EXPECT_TRUE(std::any_of(v.begin(), v.end(), [](float x) { return x != 0; })) << "collective " << calls;
    for (size_t i = 0; i < v.size(); ++i) v[i] = calls == 1 ? E(i) : F(i);
    return Status::Ok();
  };
  ASSERT_TRUE(t->RunRound(round2).ok());
  EXPECT_EQ(calls, 2) << "the last round also averages its own Δ";
  for (size_t i = 0; i < n; ++i) {
    m[i] = mu * m[i] + E(i);
    expect[i] -= lr(1) * (E(i) + mu * m[i]);
    m[i] = mu * m[i] + F(i);
    expect[i] -= lr(2) * (F(i) + mu * m[i]);
  }
  got = ThetaOf(*t);
  for (size_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], expect[i], 1e-6) << "θ_3[" << i << "]";
}

INSTANTIATE_TEST_SUITE_P(Warmup, DelayedUpdateTest, ::testing::Values(0u, 2u));

// The delayed average moves the local model at the apply step: the inner steps before it do not
// depend on what the group averaged, every step from it on does. Two peers identical through
// round 0 whose groups return different averages in round 1 show exactly that split.
class ApplyStepTest : public AsyncOuterTest, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(ApplyStepTest, TheGroupsAverageEntersAtTheApplyStep) {
  v1::JobSpec spec = TinySpec(v1::MODE_DILOCO_ASYNC);
  spec.set_async_apply_step(GetParam());
  const uint32_t apply = AsyncApplyStep(spec);
  std::vector<std::vector<Digest>> before(2);
  std::vector<std::vector<float>> theta(2);
  for (int peer = 0; peer < 2; ++peer) {
    auto t = Make(spec);
    ASSERT_TRUE(t->RunRound(kAlone).ok());
    t->SetStepObserver([&, peer](StepRecord record) {
      if (record.round == 1) before[peer].push_back(record.state_before);
    });
    const Averager group = [peer](std::span<float> v) {
      for (size_t i = 0; i < v.size(); ++i) v[i] = 1e-3f * static_cast<float>((int(i) + peer) % 5 - 2);
      return Status::Ok();
    };
    ASSERT_TRUE(t->RunRound(group).ok());
    theta[peer] = ThetaOf(*t);
  }
  ASSERT_EQ(before[0].size(), spec.inner_steps());
  ASSERT_EQ(before[1].size(), spec.inner_steps());
  for (uint32_t step = 0; step < spec.inner_steps(); ++step) {
    if (step < apply) {
      EXPECT_EQ(before[0][step], before[1][step]) << "step " << step << " ran before the apply step " << apply;
    } else {
      EXPECT_NE(before[0][step], before[1][step]) << "step " << step << " ran after the apply step " << apply;
    }
  }
  EXPECT_NE(theta[0], theta[1]) << "the averages differ, so the outer steps do";
}

// 0: the default (ceil(3 / 2) = 2); 3 = inner_steps: applied when the round ends.
INSTANTIATE_TEST_SUITE_P(Steps, ApplyStepTest, ::testing::Values(0u, 1u, 3u));

// A member dying in either collective of a round (the delayed one during the inner steps, or
// the last round's own) fails the round without advancing; the retry re-sends the preserved
// sources, so the result is bit-identical to a run without the failure. A delayed collective
// that fails at the apply step leaves the steps before it done: the retry resumes after them.
class RetryTest : public AsyncOuterTest, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(RetryTest, RetryOfEitherCollectiveIsExact) {
  v1::JobSpec spec = TinySpec(v1::MODE_DILOCO_ASYNC);
  spec.set_async_apply_step(GetParam());
  auto straight = Make(spec);
  for (int r = 0; r < 3; ++r) ASSERT_TRUE(straight->RunRound(kAlone).ok());

  auto retried = Make(spec);
  ASSERT_TRUE(retried->RunRound(kAlone).ok());
  for (int failing_call : {1, 2}) {  // round 1: the delayed collective; round 2: the final one
    int calls = 0;
    const Averager dies = [&](std::span<float> v) {
      if (++calls == failing_call) {
        std::fill(v.begin(), v.end(), 7.0f);  // garbage in the buffer must not leak into the retry
        return Unavailable("neighbour died");
      }
      return Status::Ok();
    };
    auto failed = retried->TryRound(dies);
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.status().message().find("neighbour died"), std::string::npos);
    EXPECT_FALSE(retried->has_tentative_round());
    ASSERT_TRUE(retried->TryRound(kAlone).ok());
    ASSERT_TRUE(retried->Commit().ok());
  }
  EXPECT_EQ(retried->ThetaDigest(), straight->ThetaDigest());
  EXPECT_EQ(retried->CommittedStateDigest(), straight->CommittedStateDigest());
}

INSTANTIATE_TEST_SUITE_P(ApplySteps, RetryTest, ::testing::Values(0u, 1u, 3u));

// Steps run ahead of a round (Trainer::Speculate, between the report and the next RoundStart)
// are exactly the steps the round would run: a trainer that runs ahead after every round, for
// a few steps or as many as it may, ends bit-identical to one that never does, and running
// ahead leaves θ and the state digest untouched. A round retried with another group's average
// starts elsewhere, and the steps run ahead are dropped, not used. Running ahead of round 0,
// before the optimizer holds any state, trades an empty optimizer state with the steps' one.
struct AheadCase {
  v1::Mode mode;
  int calls;  // stop() answers false this many times (-1: never stops)
};
class RunAheadTest : public AsyncOuterTest, public ::testing::WithParamInterface<AheadCase> {};

TEST_P(RunAheadTest, StepsRunAheadAreTheStepsTheRoundRuns) {
  v1::JobSpec spec = TinySpec(GetParam().mode);
  spec.set_rounds(4);
  const Averager halve = Scales(0.5f);
  const Averager other = Scales(0.25f);
  auto run_ahead = [&](Trainer& t) {
    int left = GetParam().calls;
    const Digest theta = t.ThetaDigest(), state = t.CurrentStateDigest();
    ASSERT_TRUE(t.Speculate([&] { return left >= 0 && left-- == 0; }).ok());
    EXPECT_EQ(t.ThetaDigest(), theta) << "running ahead must not move the visible θ";
    EXPECT_EQ(t.CurrentStateDigest(), state) << "nor the optimizer";
  };
  // Both go through the same rounds; only `ahead` runs ahead between them. Round 2 first runs
  // with one average, is abandoned (not committed), and is retried with another.
  auto plain = Make(spec);
  auto ahead = Make(spec);
  run_ahead(*ahead);  // round 0: no optimizer state yet
  for (int r = 0; r < 4; ++r) {
    for (Trainer* t : {plain.get(), ahead.get()}) {
      const bool speculate = t == ahead.get();
      if (r == 2) {
        ASSERT_TRUE(t->TryRound(halve).ok());
        if (speculate) run_ahead(*t);
        t->Abandon();
      }
      ASSERT_TRUE(t->TryRound(r == 2 ? other : halve).ok());
      if (speculate) run_ahead(*t);  // tentative: the next round's start is known already
      ASSERT_TRUE(t->Commit().ok());
      if (speculate) run_ahead(*t);  // committed, the RoundStart not here yet
    }
  }
  EXPECT_EQ(ahead->ThetaDigest(), plain->ThetaDigest());
  EXPECT_EQ(ahead->CommittedStateDigest(), plain->CommittedStateDigest());
}

INSTANTIATE_TEST_SUITE_P(Modes, RunAheadTest,
                         ::testing::Values(AheadCase{v1::MODE_DILOCO, 2}, AheadCase{v1::MODE_DILOCO, -1},
                                           AheadCase{v1::MODE_DILOCO_ASYNC, 2},
                                           AheadCase{v1::MODE_DILOCO_ASYNC, -1}));

// The eager start: round r's inner steps begin at θ_r − f·(this peer's own Δ_{r−1}), f being
// async_eager_fraction (0 = the default, 0.75). Round 1's first step must start exactly there.
class EagerStartTest : public AsyncOuterTest, public ::testing::WithParamInterface<double> {};

TEST_P(EagerStartTest, RoundOneStartsTheEagerFractionOfItsOwnDeltaAheadOfTheta) {
  v1::JobSpec spec = TinySpec(v1::MODE_DILOCO_ASYNC);
  spec.set_async_eager_fraction(GetParam());
  ASSERT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec).ToString();
  const double f = GetParam() > 0 ? GetParam() : 0.75;
  EXPECT_EQ(AsyncEagerFraction(spec), f);
  auto t = Make(spec);
  ASSERT_TRUE(t->RunRound(kAlone).ok());
  const std::vector<float> theta1 = ThetaOf(*t);  // round 0 applies no update: θ_1 = θ_0
  std::vector<float> start, own_delta;
  t->SetStepObserver([&](StepRecord record) {
    if (record.round == 1 && record.step == 0) start = record.before.params;
  });
  const Averager group = [&](std::span<float> v) {
    own_delta.assign(v.begin(), v.end());
    return Status::Ok();
  };
  ASSERT_TRUE(t->RunRound(group).ok());
  ASSERT_EQ(start.size(), theta1.size());
  ASSERT_EQ(own_delta.size(), theta1.size());
  size_t moved = 0;
  for (size_t i = 0; i < theta1.size(); ++i) {
    const float expect = theta1[i] - own_delta[i] * static_cast<float>(f);
    ASSERT_FLOAT_EQ(start[i], expect) << "parameter " << i;
    if (own_delta[i] != 0) ++moved;
  }
  EXPECT_GT(moved, theta1.size() / 2) << "round 0 trained: its Δ is not zero";
}

// 0: the default (0.75); 1: the whole own Δ (before session 18).
INSTANTIATE_TEST_SUITE_P(Fractions, EagerStartTest, ::testing::Values(0.0, 0.5, 1.0));

// The next round's delayed collective started as soon as a round is tentative (the peer does it
// when it reports, StartNextDelayedAverage) is the collective that round would run: a trainer
// that starts it early every round ends bit-identical to one that never does, the round's own
// averager is then called only for the last round's final collective, one started over a round
// that is abandoned is dropped (its average would be wrong), and one that fails fails the round
// it was started for, whose retry is exact.
TEST_F(AsyncOuterTest, DelayedCollectiveStartedEarlyIsTheOneTheRoundRuns) {
  v1::JobSpec spec = TinySpec(v1::MODE_DILOCO_ASYNC);
  spec.set_rounds(4);
  const Averager halve = Scales(0.5f);
  const Averager other = Scales(0.25f);
  const Averager wrong = Scales(-3.0f);  // would change θ if it were ever applied
  const Averager dies = [](std::span<float> v) {
    std::fill(v.begin(), v.end(), 7.0f);
    return Unavailable("neighbour died");
  };

  // Round 2's first attempt is abandoned and retried with another average.
  auto plain = Make(spec);
  for (int r = 0; r < 4; ++r) {
    if (r == 2) {
      ASSERT_TRUE(plain->TryRound(halve).ok());
      plain->Abandon();
    }
    ASSERT_TRUE(plain->TryRound(r == 2 ? other : halve).ok());
    ASSERT_TRUE(plain->Commit().ok());
  }

  auto early = Make(spec);
  int own_calls = 0;
  const Averager counted = [&](std::span<float> v) {
    ++own_calls;
    return halve(v);
  };
  // Round 0; round 1's collective starts early and fails, so round 1 fails and is retried.
  ASSERT_TRUE(early->TryRound(halve).ok());
  ASSERT_TRUE(early->StartNextDelayedAverage(dies).ok());
  EXPECT_TRUE(early->has_next_delayed_average());
  ASSERT_TRUE(early->Commit().ok());
  auto failed = early->TryRound(counted);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("neighbour died"), std::string::npos);
  EXPECT_FALSE(early->has_next_delayed_average()) << "the round took it";
  EXPECT_EQ(own_calls, 0) << "the early collective stood for the round's own";
  ASSERT_TRUE(early->TryRound(halve).ok()) << "the retry starts its own collective";
  // Round 1 (tentative) starts round 2's collective; round 2 takes it.
  ASSERT_TRUE(early->StartNextDelayedAverage(halve).ok());
  ASSERT_TRUE(early->Commit().ok());
  ASSERT_TRUE(early->TryRound(counted).ok());
  EXPECT_EQ(own_calls, 0);
  // Round 2's first attempt starts round 3's collective and is abandoned: it must go with it.
  ASSERT_TRUE(early->StartNextDelayedAverage(wrong).ok());
  early->Abandon();
  EXPECT_FALSE(early->has_next_delayed_average());
  ASSERT_TRUE(early->TryRound(other).ok());
  ASSERT_TRUE(early->StartNextDelayedAverage(halve).ok());
  ASSERT_TRUE(early->Commit().ok());
  // Round 3 is the last: its delayed collective was started early, its final one is its own.
  own_calls = 0;
  ASSERT_TRUE(early->TryRound(counted).ok());
  EXPECT_EQ(own_calls, 1);
  EXPECT_FALSE(early->StartNextDelayedAverage(halve).ok()) << "no round after the last";
  ASSERT_TRUE(early->Commit().ok());

  EXPECT_EQ(early->ThetaDigest(), plain->ThetaDigest());
  EXPECT_EQ(early->CommittedStateDigest(), plain->CommittedStateDigest());

  auto sync = Make(TinySpec(v1::MODE_DILOCO));
  ASSERT_TRUE(sync->TryRound(halve).ok());
  EXPECT_FALSE(sync->StartNextDelayedAverage(halve).ok()) << "synchronous DiLoCo averages in the round";
}

// async_apply_when_ready: an average that has not arrived by the apply step k does not hold the
// steps up; it enters before the first step after it has arrived. Round 1's average here returns
// only once step 3 has run, with k = 1: it must enter before step 4, and the round's θ (the outer
// step from the average) is the one a trainer that waited at k reaches. Only the peer's own Δ
// (and its loss) differ: it trained steps 1–3 from its eager start.
TEST_F(AsyncOuterTest, WhenReadyTheAverageEntersAtTheFirstStepAfterItArrives) {
  v1::JobSpec spec = TinySpec(v1::MODE_DILOCO_ASYNC);
  spec.set_inner_steps(6);
  spec.set_async_apply_step(1);
  const Averager halve = Scales(0.5f);
  // The steps of round 1 before which the parameters moved (the delayed average entered).
  auto run = [&](bool when_ready, std::vector<uint64_t>* entered_before) {
    spec.set_async_apply_when_ready(when_ready);
    auto t = Make(spec);
    EXPECT_TRUE(t->RunRound(kAlone).ok());
    std::mutex mu;
    std::condition_variable cv;
    bool released = !when_ready;  // a trainer that waits at k would wait here
    std::atomic<bool> returned{false};
    std::optional<verifier::StateHalves> previous;
    t->SetStepObserver([&](StepRecord record) {
      if (record.round != 1) return;
      if (previous && !(previous->parameters == record.halves_before.parameters)) {
        entered_before->push_back(record.step);
      }
      previous = record.halves_after;
      if (record.step == 3 && when_ready) {
        {
          std::lock_guard<std::mutex> lock(mu);
          released = true;
        }
        cv.notify_all();
        while (!returned) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // set before step 3 if it waited
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the future becomes ready
      }
    });
    const Averager late = [&](std::span<float> v) {
      std::unique_lock<std::mutex> lock(mu);
      // Bounded: a trainer that waits at k instead never runs step 3, and fails below.
      cv.wait_for(lock, std::chrono::seconds(5), [&] { return released; });
      Status st = halve(v);
      returned = true;
      return st;
    };
    auto round1 = t->RunRound(late);
    EXPECT_TRUE(round1.ok());
    return std::make_pair(std::move(t), round1.ok() ? round1->train_loss : 0.0);
  };
  std::vector<uint64_t> waited_at, entered_at;
  auto [waiting, waiting_loss] = run(false, &waited_at);
  auto [ready, ready_loss] = run(true, &entered_at);
  EXPECT_EQ(waited_at, std::vector<uint64_t>{1}) << "without the key the steps wait at k";
  EXPECT_EQ(entered_at, std::vector<uint64_t>{4}) << "it arrived after step 3";
  EXPECT_EQ(ready->ThetaDigest(), waiting->ThetaDigest()) << "θ comes from the average alone";
  EXPECT_NE(ready_loss, waiting_loss) << "steps 1-3 trained from the eager start, not from the average";
}

// The report's state digest encodes the tentative state once; Commit keeps those bytes as the
// committed state's, which the peer publishes. They must be exactly what encoding the committed
// state afresh gives, also after running ahead (which moves the model and puts it back) and
// after an abandoned attempt. Both DiLoCo modes.
TEST_F(AsyncOuterTest, CommittedStateIsTheReportedEncoding) {
  const Averager halve = Scales(0.5f);
  const Averager other = Scales(0.25f);
  for (v1::Mode mode : {v1::MODE_DILOCO, v1::MODE_DILOCO_ASYNC}) {
    const v1::JobSpec spec = TinySpec(mode);
    auto reported = Make(spec);  // digests its tentative state before each commit, as a peer does
    auto plain = Make(spec);     // encodes only when asked, after the commit
    for (int r = 0; r < 3; ++r) {
      if (r == 1) {  // an attempt (reported by one of them) abandoned by both
        ASSERT_TRUE(reported->TryRound(other).ok());
        ASSERT_TRUE(plain->TryRound(other).ok());
        (void)reported->CurrentStateDigest();
        reported->Abandon();
        plain->Abandon();
      }
      ASSERT_TRUE(reported->TryRound(halve).ok());
      ASSERT_TRUE(plain->TryRound(halve).ok());
      const Digest digest = reported->CurrentStateDigest();
      ASSERT_TRUE(reported->Speculate([] { return false; }).ok());
      ASSERT_TRUE(reported->Commit().ok());
      ASSERT_TRUE(plain->Commit().ok());
      const std::string fresh = *plain->ExportCommittedState();
      EXPECT_EQ(*reported->ExportCommittedState(), fresh) << "round " << r;
      EXPECT_EQ(reported->CommittedStateDigest(), digest) << "round " << r;
      EXPECT_EQ(reported->CommittedStateDigest(), Sha256Of(fresh)) << "round " << r;
      EXPECT_EQ(reported->CommittedStateBytes(), reported->CommittedStateBytes()) << "encoded once";
    }
  }
}

// The peer snapshots the reported state, then runs the next round's first steps while another
// thread encodes and hashes it for the report: those digests must be of the reported state (not
// of the steps run meanwhile), be what the trainer itself states, and be what Commit keeps.
TEST_F(AsyncOuterTest, ReportEncodingMadeBesideTheStepsRunAheadIsOfTheReportedState) {
  const Averager halve = Scales(0.5f);
  for (v1::Mode mode : {v1::MODE_DILOCO, v1::MODE_DILOCO_ASYNC}) {
    const v1::JobSpec spec = TinySpec(mode);
    auto beside = Make(spec);
    auto plain = Make(spec);
    EXPECT_EQ(beside->EncodeTentativeState().status().code(), StatusCode::kFailedPrecondition);
    for (int r = 0; r < 3; ++r) {
      ASSERT_TRUE(beside->TryRound(halve).ok());
      ASSERT_TRUE(plain->TryRound(halve).ok());
      auto encoding = beside->EncodeTentativeState();
      ASSERT_TRUE(encoding.ok()) << encoding.status().ToString();
      std::shared_future<StateEncoding> future = *encoding;
      // Waited for on a thread of its own, as the peer's report does, while this one trains on.
      auto waited = std::async(std::launch::async, [future] { return future.get(); });
      ASSERT_TRUE(beside->Speculate([] { return false; }).ok());
      const StateEncoding e = waited.get();
      EXPECT_EQ(e.theta, plain->ThetaDigest()) << "round " << r;
      EXPECT_EQ(e.theta, beside->ThetaDigest()) << "round " << r;
      EXPECT_EQ(e.state, plain->CurrentStateDigest()) << "round " << r;
      EXPECT_EQ(e.state, beside->CurrentStateDigest()) << "round " << r;
      EXPECT_EQ(e.state, Sha256Of(*e.bytes)) << "round " << r;
      ASSERT_TRUE(beside->Commit().ok());
      ASSERT_TRUE(plain->Commit().ok());
      EXPECT_EQ(*beside->ExportCommittedState(), *plain->ExportCommittedState()) << "round " << r;
      EXPECT_EQ(beside->CommittedStateBytes(), e.bytes) << "the report's bytes are the committed ones";
      EXPECT_EQ(beside->ThetaDigest(), plain->ThetaDigest()) << "round " << r;
    }
  }
}

// A peer that imported the shared state did not train the previous round: it contributes zeros
// (and still takes part, so the others' collective completes), and then θ matches the veteran's.
TEST_F(AsyncOuterTest, LateJoinerContributesZerosAndStaysIdentical) {
  const v1::JobSpec spec = TinySpec(v1::MODE_DILOCO_ASYNC);
  auto veteran = Make(spec);
  ASSERT_TRUE(veteran->RunRound(kAlone).ok());
  auto joiner = Make(spec);
  ASSERT_TRUE(joiner->ImportState(*veteran->ExportCommittedState()).ok());
  bool zeros = false;
  const Averager group = [&](std::span<float> v) {
    zeros = std::all_of(v.begin(), v.end(), [](float x) { return x == 0; });
    for (size_t i = 0; i < v.size(); ++i) v[i] = 1e-4f * static_cast<float>(i % 7);
    return Status::Ok();
  };
  ASSERT_TRUE(joiner->RunRound(group).ok());
  EXPECT_TRUE(zeros);
  ASSERT_TRUE(veteran->RunRound(group).ok());
  EXPECT_FALSE(zeros) << "the veteran sends its Δ of round 0";
  EXPECT_EQ(joiner->ThetaDigest(), veteran->ThetaDigest());
  EXPECT_EQ(joiner->CommittedStateDigest(), veteran->CommittedStateDigest());
}

// The pending Δ is part of a peer's checkpoint: a resumed peer continues bit-exactly.
TEST_F(AsyncOuterTest, CheckpointKeepsThePendingPseudoGradient) {
  const v1::JobSpec spec = TinySpec(v1::MODE_DILOCO_ASYNC);
  const std::string dir = ::tributary::testing::FreshTempDir("async-ckpt");
  auto straight = Make(spec);
  ASSERT_TRUE(straight->RunRound(kAlone).ok());
  ASSERT_TRUE(straight->SaveCheckpoint(dir + "/a.ckpt").ok());
  auto resumed = Make(spec);
  ASSERT_TRUE(resumed->LoadCheckpoint(dir + "/a.ckpt").ok());
  for (int r = 1; r < 3; ++r) {
    ASSERT_TRUE(straight->RunRound(kAlone).ok());
    ASSERT_TRUE(resumed->RunRound(kAlone).ok());
  }
  EXPECT_EQ(resumed->ThetaDigest(), straight->ThetaDigest());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tributary::runtime
