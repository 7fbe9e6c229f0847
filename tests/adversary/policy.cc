#include "tests/adversary/policy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>

#include "collectives/codec/wire_format.h"
#include "core/seed.h"

namespace tributary::adversary {

bool Faked(uint64_t seed, double rate, uint64_t round, uint64_t step) {
  if (rate >= 1.0) return true;
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull ^ (round << 20) ^ step);
  return std::uniform_real_distribution<double>(0, 1)(rng) < rate;
}

namespace {

// What the sent-Δ attacks remember between rounds: the Δ this peer sent, and the group's average.
struct SentMemory {
  std::vector<float> own, averaged;
};


// Rewrites each (faked) step's update Δθ = after − before as f(Δθ).
template <typename F>
runtime::StepTamper RewriteUpdate(const PolicyOptions& o, F f) {
  runtime::StepTamper t;
  t.after = [o, f](uint64_t round, uint64_t step, std::span<const float> before, std::span<float> after) {
    if (!Faked(o.seed, o.rate, round, step)) return;
    for (size_t i = 0; i < after.size(); ++i) after[i] = before[i] + f(after[i] - before[i], i);
  };
  return t;
}

// Writes `value` over the first 4 bytes after the codec header of each payload it sends: for
// fp32 the first element of the shard, for the other codecs a value or a scale; either way the
// payload no longer decodes to finite values.
std::function<void(uint32_t, std::string&)> OverwriteFirstValue(float value) {
  return [value](uint32_t, std::string& payload) {
    if (payload.size() >= collectives::codec::kHeaderBytes + sizeof value) {
      std::memcpy(payload.data() + collectives::codec::kHeaderBytes, &value, sizeof value);
    }
  };
}

}  // namespace

const std::vector<std::string>& AttackNames() {
  static const std::vector<std::string> names = {"honest",   "zero",      "random",      "skip",   "partial",
                                                 "shard",    "sign_flip", "scale",       "subnormal",
                                                 "withhold", "equivocate", "commit_late", "accuse", "collude",
                                                 "class_lie", "stale",  "copy",      "send_scaled", "manifest_lie",
                                                 "alie",     "ipm",       "send_nan",    "send_inf",
                                                 "send_garbage", "send_residual", "residual_lie", "owner_scale",
                                                 "unserved_bulk", "withhold_bulk", "forged_moments",
                                                 "forged_start"};
  return names;
}

Result<runtime::AdversaryHooks> MakePolicy(const PolicyOptions& o) {
  runtime::AdversaryHooks h;
  const std::string& a = o.attack;
  if (a == "honest") {
  } else if (a == "zero") {  // claims every step, computes none: the update is zero
    h.step.plan = [](uint64_t, uint64_t) { return runtime::StepTamper::Plan{true, 0}; };
  } else if (a == "skip") {  // skips a fraction of its steps (default: every other one)
    const double rate = o.rate >= 1.0 ? 0.5 : o.rate;
    h.step.plan = [o, rate](uint64_t round, uint64_t step) {
      const bool skip = rate == 0.5 ? step % 2 == 1 : Faked(o.seed, rate, round, step);
      return runtime::StepTamper::Plan{skip, 0};
    };
  } else if (a == "random" || a == "partial") {  // replaces (a fraction f of) its updates by noise
    auto rng = std::make_shared<std::mt19937_64>(o.seed);
    h.step = RewriteUpdate(o, [rng](float, size_t) {
      return static_cast<float>(std::normal_distribution<double>(0, 1e-2)(*rng));
    });
  } else if (a == "shard") {  // trains on another worker's data
    h.step.plan = [](uint64_t, uint64_t) { return runtime::StepTamper::Plan{false, 1}; };
  } else if (a == "sign_flip") {
    h.step = RewriteUpdate(o, [](float d, size_t) { return -d; });
  } else if (a == "scale") {
    const float k = static_cast<float>(o.scale);
    h.step = RewriteUpdate(o, [k](float d, size_t) { return k * d; });
  } else if (a == "subnormal") {  // finite but denormal values injected into the state
    h.step = RewriteUpdate(o, [](float d, size_t i) {
      return i % 97 == 0 ? std::numeric_limits<float>::denorm_min() : d;
    });
  } else if (a == "forged_moments") {
    // Honest steps from a start whose AdamW moments it chose: a tiny second moment and a first
    // moment along the sign of each parameter make step 0 push every weight outwards by about
    // the learning rate. Every step, step 0 included, replays bit for bit from the committed
    // state; only the moments' origin is a lie.
    h.step.round_start = [](uint64_t, verifier::TrainingState& state) {
      const size_t n = state.params.size();
      if (state.adam_step == 0) state.adam_step = 1;
      state.exp_avg.assign(n, 0.0f);
      state.exp_avg_sq.assign(n, 1e-12f);
      for (size_t i = 0; i < n; ++i) state.exp_avg[i] = state.params[i] < 0 ? 1e-2f : -1e-2f;
    };
  } else if (a == "forged_start") {
    // Round 0 from a θ of its choosing (every weight's sign flipped), then honest steps and the
    // honest Δ = θ_0 − θ_end, which drags the average towards that θ. Every step replays from
    // its committed state and the Δ audit matches; only step 0's start is a lie, which a
    // step-0 replay finds when step 0 is sampled, and the published θ_0 finds always.
    h.step.round_start = [](uint64_t round, verifier::TrainingState& state) {
      if (round != 0) return;
      for (float& p : state.params) p = -p;
    };
  } else if (a == "withhold") {
    h.withhold_openings = true;
  } else if (a == "unserved_bulk") {  // honest, but its openings' bulk cannot be fetched from it
    h.unserved_bulk = true;
  } else if (a == "withhold_bulk") {  // announces its openings, serves their bulk to nobody
    h.unserved_bulk = true;
    h.withhold_inline_bulk = true;
  } else if (a == "equivocate") {
    h.equivocate = true;
  } else if (a == "commit_late") {
    h.commit_after_report = true;
  } else if (a == "accuse") {
    h.accuse_falsely = true;
  } else if (a == "collude") {
    h.vouch_always = true;
  } else if (a == "class_lie") {
    h.claimed_class = "tributary.dclass.v1;device=cpu;torch=0.0.0;threads=1;blas=none;core=none;isa=;env=";
  } else if (a == "stale") {  // trains honestly, sends the previous round's Δ
    auto memory = std::make_shared<SentMemory>();
    h.sent_delta = [memory](uint64_t, std::span<float> sent) {
      std::vector<float> honest(sent.begin(), sent.end());
      if (memory->own.size() == sent.size()) std::copy(memory->own.begin(), memory->own.end(), sent.begin());
      memory->own = std::move(honest);
    };
  } else if (a == "copy") {  // a free rider: sends the group's previous average as its own Δ
    auto memory = std::make_shared<SentMemory>();
    h.sent_delta = [memory](uint64_t, std::span<float> sent) {
      if (memory->averaged.size() == sent.size()) std::copy(memory->averaged.begin(), memory->averaged.end(), sent.begin());
    };
    h.averaged_delta = [memory](uint64_t, std::span<const float> averaged) {
      memory->averaged.assign(averaged.begin(), averaged.end());
    };
  } else if (a == "send_scaled") {  // trains honestly, sends its Δ scaled (the committed steps stay honest)
    const float k = static_cast<float>(o.scale);
    h.sent_delta = [k](uint64_t, std::span<float> sent) {
      for (float& v : sent) v *= k;
    };
  } else if (a == "owner_scale") {  // trains and sends honestly; as a shard owner, returns its shard's
                                     // aggregate scaled (every member then applies it)
    const float k = static_cast<float>(o.scale);
    h.owner_aggregate = [k](uint64_t, std::span<float> aggregate) {
      for (float& v : aggregate) v *= k;
    };
  } else if (a == "alie") {
    // "A little is enough" (Baruch et al. 2019): μ − z·σ per coordinate, small enough to pass
    // distance-based filters. Alone, the attacker estimates μ by its own Δ and σ by how far that
    // lies from the group's previous average.
    auto memory = std::make_shared<SentMemory>();
    h.sent_delta = [memory](uint64_t, std::span<float> sent) {
      constexpr float kZ = 1.5f;
      const bool have = memory->averaged.size() == sent.size();
      for (size_t i = 0; i < sent.size(); ++i) {
        const float sigma = std::fabs(have ? sent[i] - memory->averaged[i] : sent[i]);
        sent[i] -= kZ * sigma;
      }
    };
    h.averaged_delta = [memory](uint64_t, std::span<const float> averaged) {
      memory->averaged.assign(averaged.begin(), averaged.end());
    };
  } else if (a == "ipm") {  // inner-product manipulation (Xie et al. 2020): −ε·μ, here ε = 0.5
    h.sent_delta = [](uint64_t, std::span<float> sent) {
      for (float& v : sent) v *= -0.5f;
    };
  } else if (a == "manifest_lie") {  // signs shard digests other than those of what it sends
    h.manifest_lies = true;
  } else if (a == "send_nan") {  // trains honestly, sends a NaN in each payload (and signs it)
    h.sent_payload = OverwriteFirstValue(std::numeric_limits<float>::quiet_NaN());
  } else if (a == "send_inf") {  // same with +Inf
    h.sent_payload = OverwriteFirstValue(std::numeric_limits<float>::infinity());
  } else if (a == "send_garbage") {  // same with a payload one byte short (does not decode)
    h.sent_payload = [](uint32_t, std::string& payload) {
      if (!payload.empty()) payload.pop_back();
    };
  } else if (a == "send_residual" || a == "residual_lie") {
    // Trains honestly and sends Δ, but encodes it with an error-feedback residual it made up
    // (every element 0.01 more than it owes), so its payloads carry a drift its Δ does not:
    // stated in its manifest (send_residual), or hidden behind the honest residual's digest
    // (residual_lie). Needs a lossy codec.
    h.sent_residual = [](uint64_t, std::span<float> residual) {
      for (float& v : residual) v += 0.01f;
    };
    h.residual_claim_untampered = a == "residual_lie";
  } else {
    return InvalidArgument("unknown attack '" + a + "'");
  }
  return h;
}

}  // namespace tributary::adversary
