// Test helpers for meshes and butterflies on a LocalCluster (ranks as threads, real TCP), plus
// the float64 reference aggregators the butterfly is checked against.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "collectives/butterfly.h"
#include "collectives/mesh.h"
#include "core/seed.h"
#include "tests/collectives/cluster.h"

namespace tributary::collectives::testing {

inline bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Uniform in [-1, 1), a pure function of (seed, i).
inline std::vector<float> Uniform(uint64_t seed, size_t n) {
  SeedStream stream(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(stream.Next() >> 40) * 0x1p-23f - 1.0f;
  return v;
}

// One input vector per rank, each a pure function of (seed, rank).
inline std::vector<std::vector<float>> Inputs(uint32_t world, size_t n, uint64_t seed) {
  std::vector<std::vector<float>> inputs;
  for (uint32_t r = 0; r < world; ++r) inputs.push_back(Uniform(DeriveSeed({seed, r}), n));
  return inputs;
}

// Bit-for-bit equality: what "the same result on every rank" means.
inline bool SameBits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

// The members at `ranks` (indices into `all`), renumbered 0..k-1: a group of survivors.
inline std::vector<MeshMember> Subgroup(const std::vector<MeshMember>& all,
                                        const std::vector<uint32_t>& ranks) {
  std::vector<MeshMember> out;
  for (uint32_t r : ranks) {
    out.push_back(all[r]);
    out.back().rank = static_cast<uint32_t>(out.size() - 1);
  }
  return out;
}

struct MeshFormOptions {
  std::string job_id = "job";
  uint64_t round = 1;
  uint32_t attempt = 0;
  Millis timeout{10000};
};

// Forms a mesh of `ranks` (cluster indices; all of them when empty) on every one at once.
inline std::vector<std::unique_ptr<Mesh>> FormMeshes(LocalCluster& cluster,
                                                     std::vector<uint32_t> ranks = {},
                                                     const MeshFormOptions& o = {}) {
  if (ranks.empty()) {
    for (uint32_t r = 0; r < cluster.world(); ++r) ranks.push_back(r);
  }
  const std::vector<MeshMember> members = Subgroup(cluster.members(), ranks);
  const uint32_t world = static_cast<uint32_t>(ranks.size());
  auto results = OnEveryRank(world, [&](uint32_t r) {
    return Mesh::Form(cluster.io(ranks[r]), cluster.listener(ranks[r]), r, members, o.job_id,
                      o.round, o.attempt, nullptr, DeadlineAfter(o.timeout));
  });
  std::vector<std::unique_ptr<Mesh>> meshes;
  for (auto& result : results) {
    EXPECT_TRUE(result.ok()) << result.status().ToString();
    meshes.push_back(result.ok() ? std::move(result).value() : nullptr);
  }
  return meshes;
}

// One rank's end of a collective call on its mesh.
struct MeshOutcome {
  Status status;
  std::vector<float> data;               // the rank's buffer after the call
  std::optional<PeerFailure> failure;    // whom its mesh blamed
};

// Runs call(mesh, data) on every rank at once, each on a copy of its input.
template <typename Call>
std::vector<MeshOutcome> OnEveryMesh(std::vector<std::unique_ptr<Mesh>>& meshes,
                                     const std::vector<std::vector<float>>& inputs, Call call) {
  return OnEveryRank(static_cast<uint32_t>(meshes.size()), [&](uint32_t r) {
    MeshOutcome out{Status::Ok(), inputs[r], std::nullopt};
    auto result = call(*meshes[r], std::span<float>(out.data));
    if (!result.ok()) out.status = result.status();
    out.failure = meshes[r]->failure();
    return out;
  });
}

// Shard s of a tensor of n elements over `world` ranks, as ButterflyAllreduce cuts it.
inline size_t ShardBegin(size_t n, uint32_t world, uint32_t s) {
  return s * (n / world) + std::min<size_t>(s, n % world);
}

// --- float64 reference aggregators -----------------------------------------------------------

using Vectors = std::vector<std::vector<double>>;

inline std::vector<double> RefMean(const Vectors& in) {
  std::vector<double> out(in[0].size(), 0.0);
  for (const auto& v : in) {
    for (size_t j = 0; j < v.size(); ++j) out[j] += v[j];
  }
  for (double& x : out) x /= static_cast<double>(in.size());
  return out;
}

inline std::vector<double> RefTrimmedMean(const Vectors& in, uint32_t trim) {
  std::vector<double> out(in[0].size());
  std::vector<double> column(in.size());
  for (size_t j = 0; j < out.size(); ++j) {
    for (size_t i = 0; i < in.size(); ++i) column[i] = in[i][j];
    std::sort(column.begin(), column.end());
    double sum = 0;
    for (size_t i = trim; i < column.size() - trim; ++i) sum += column[i];
    out[j] = sum / static_cast<double>(column.size() - 2 * trim);
  }
  return out;
}

inline std::vector<double> RefMedian(const Vectors& in) { return RefTrimmedMean(in, (in.size() - 1) / 2); }

// x ← x + (1/n)·Σ clip_τ(g_i − x), clipping by the ℓ2 norm of the whole vector, from the median.
inline std::vector<double> RefCenteredClip(const Vectors& in, double tau, uint32_t iterations) {
  std::vector<double> x = RefMedian(in);
  for (uint32_t t = 0; t < iterations; ++t) {
    std::vector<double> step(x.size(), 0.0);
    for (const auto& g : in) {
      double norm = 0;
      for (size_t j = 0; j < x.size(); ++j) norm += (g[j] - x[j]) * (g[j] - x[j]);
      norm = std::sqrt(norm);
      const double w = norm > tau ? tau / norm : 1.0;
      for (size_t j = 0; j < x.size(); ++j) step[j] += w * (g[j] - x[j]);
    }
    for (size_t j = 0; j < x.size(); ++j) x[j] += step[j] / static_cast<double>(in.size());
  }
  return x;
}

inline std::vector<double> RefAggregate(const robust::AggregatorSpec& spec, const Vectors& in) {
  switch (spec.kind) {
    case robust::AggregatorKind::kMean:
      return RefMean(in);
    case robust::AggregatorKind::kTrimmedMean:
      return RefTrimmedMean(in, spec.trim);
    case robust::AggregatorKind::kCoordinateMedian:
      return RefMedian(in);
    case robust::AggregatorKind::kCenteredClip:
      return RefCenteredClip(in, spec.tau, spec.iterations);
    default:
      ADD_FAILURE() << "no reference for " << robust::ToString(spec);
      return {};
  }
}

// The reference result of a butterfly over raw `inputs` (one vector per rank): the aggregator
// applied shard by shard (CenteredClip's norm is per shard), scaled to a sum unless averaging.
inline std::vector<double> RefButterfly(const robust::AggregatorSpec& spec,
                                        const std::vector<std::vector<float>>& inputs,
                                        bool average) {
  const uint32_t world = static_cast<uint32_t>(inputs.size());
  const size_t n = inputs[0].size();
  std::vector<double> out(n);
  for (uint32_t s = 0; s < world; ++s) {
    const size_t begin = ShardBegin(n, world, s), end = ShardBegin(n, world, s + 1);
    if (begin == end) continue;
    Vectors shard;
    for (const auto& v : inputs) shard.emplace_back(v.begin() + begin, v.begin() + end);
    std::vector<double> agg = RefAggregate(spec, shard);
    for (size_t j = 0; j < agg.size(); ++j) out[begin + j] = average ? agg[j] : agg[j] * world;
  }
  return out;
}

}  // namespace tributary::collectives::testing
