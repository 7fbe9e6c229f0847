// tributary_adversary: a peer with an injected misbehaviour (tests/adversary/policy.h). Test-only;
// the same flags as `tributary peer` plus --attack.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>

#include "core/logging.h"
#include "launcher/client.h"
#include "runtime/peer.h"
#include "runtime/trainer.h"
#include "tests/adversary/policy.h"

int main(int argc, char** argv) {
  using namespace tributary;
  CLI::App app{"tributary_adversary: a cheating peer for the verifier's attack harness"};
  runtime::PeerOptions options;
  adversary::PolicyOptions policy;
  std::string coordinator, key;
  app.add_option("--coordinator", coordinator, "HOST:PORT")->required();
  app.add_option("--coordinator-key", key, "coordinator's public key (hex)");
  app.add_option("--job", options.job_id, "job id")->required();
  app.add_option("--name", options.name, "name");
  app.add_option("--identity", options.identity_path, "Ed25519 key file (tributary keygen)");
  app.add_option("--data", options.corpus_dir, "corpus directory")->required();
  app.add_option("--attack", policy.attack, "the misbehaviour")->required();
  app.add_option("--rate", policy.rate, "fraction of steps faked (partial, skip)");
  app.add_option("--scale", policy.scale, "factor (scale)");
  app.add_option("--seed", policy.seed, "which steps are faked");
  app.add_option("--device", options.device, "train and replay on: cpu, cuda, cuda:N");
  int threads = 1;
  app.add_option("--threads", threads, "compute threads");
  CLI11_PARSE(app, argc, argv);
  InitLogging("adversary-" + policy.attack, "info");
  auto hooks = adversary::MakePolicy(policy);
  if (!hooks.ok()) {
    std::fprintf(stderr, "%s\n", hooks.status().ToString().c_str());
    return 2;
  }
  auto address = launcher::ParseCoordinator(coordinator, key);
  if (!address.ok()) {
    std::fprintf(stderr, "%s\n", address.status().ToString().c_str());
    return 2;
  }
  options.coordinator_host = address->host;
  options.coordinator_port = address->port;
  options.coordinator_key = address->key;
  options.adversary = &*hooks;
  runtime::PinComputeThreads(threads);
  auto outcome = runtime::RunPeer(options);
  if (!outcome.ok()) {
    std::fprintf(stderr, "adversary %s ended: %s\n", policy.attack.c_str(), outcome.status().ToString().c_str());
    return 1;
  }
  return 0;
}
