// Test helper for the sent-Δ proofs (verifier/contribution.h): one sender's signed fp32
// contributions to every butterfly shard of a small tensor, with an optional rewrite of the
// payloads before they are digested and signed (what tests/adversary's send_nan does), and the
// bad-payload proof an owner would make of one of them. Shared by tests/verifier and
// tests/launcher.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "collectives/codec/codec.h"
#include "collectives/codec/wire_format.h"
#include "net/identity.h"
#include "verifier/contribution.h"

namespace tributary::testing {

struct SignedContributions {
  verifier::SignedManifest manifest;
  std::vector<std::string> payloads;  // by shard, as sent
};

struct ContributionSetup {
  std::string job_id = "job-1";
  uint64_t round = 4;
  uint64_t attempt = 1;
  uint64_t numel = 30;  // the whole tensor, cut into `world` shards of numel / world elements
  uint32_t world = 3;
  std::function<void(uint64_t shard, std::string& payload)> tamper;  // before signing
};

inline SignedContributions SignContributions(const net::Identity& sender, const ContributionSetup& s = {}) {
  SignedContributions out;
  verifier::ContributionManifest body;
  body.job_id = s.job_id;
  body.peer = sender.public_key();
  body.round = s.round;
  body.attempt = s.attempt;
  body.numel = s.numel;
  body.pseudo_gradient = Sha256Of("delta");
  auto fp32 = collectives::codec::MakeCodec("fp32");
  EXPECT_TRUE(fp32.ok());
  const uint64_t size = s.numel / s.world;
  for (uint32_t shard = 0; shard < s.world; ++shard) {
    std::vector<float> values(size);
    for (uint64_t i = 0; i < size; ++i) values[i] = 0.01f * static_cast<float>(shard * size + i + 1);
    auto payload = (*fp32)->Encode(values);
    EXPECT_TRUE(payload.ok());
    if (s.tamper) s.tamper(shard, *payload);
    body.shard_digests.push_back(Sha256Of(*payload));
    out.payloads.push_back(std::move(payload).value());
  }
  auto manifest = verifier::SignManifest(body, sender);
  EXPECT_TRUE(manifest.ok()) << manifest.status().ToString();
  out.manifest = std::move(manifest).value();
  return out;
}

// The proof the owner of `shard` makes of the payload it received there.
inline verifier::BadContributionPayload BadPayloadProofOf(const net::Identity& sender, const SignedContributions& c,
                                                          uint64_t shard) {
  const std::string& payload = c.payloads[shard];
  return {c.manifest, shard, payload, verifier::SignContribution(sender, c.manifest, shard, Sha256Of(payload))};
}

// Writes `value` over the first fp32 element of a payload (after the codec header).
inline std::function<void(uint64_t, std::string&)> OverwriteFirstValue(float value) {
  return [value](uint64_t, std::string& payload) {
    std::memcpy(payload.data() + collectives::codec::kHeaderBytes, &value, sizeof value);
  };
}

}  // namespace tributary::testing
