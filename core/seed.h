// Deterministic, platform-independent randomness for anything a verifier must recompute
// (batch offsets, per-step seeds). Derived only from public values; no hidden state.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace tributary {

// SplitMix64 finaliser: a bijective 64-bit mixer with good avalanche.
constexpr uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Seed for a tuple of public values, e.g. DeriveSeed({job_seed, shard, round, step}).
inline uint64_t DeriveSeed(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x5472696275746172ULL;  // "Tributar"
  for (uint64_t p : parts) h = Mix64(h ^ Mix64(p));
  return h;
}

// Small counter-based generator: the i-th draw depends only on (seed, i).
class SeedStream {
 public:
  explicit SeedStream(uint64_t seed) : seed_(seed) {}
  uint64_t Next() { return Mix64(seed_ + 0x9e3779b97f4a7c15ULL * ++counter_); }
  // Uniform in [0, bound) without modulo bias (Lemire's method with rejection).
  uint64_t Below(uint64_t bound) {
    if (bound == 0) return 0;
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      __uint128_t m = static_cast<__uint128_t>(Next()) * bound;
      if (static_cast<uint64_t>(m) >= threshold) return static_cast<uint64_t>(m >> 64);
    }
  }

 private:
  uint64_t seed_;
  uint64_t counter_ = 0;
};

}  // namespace tributary
