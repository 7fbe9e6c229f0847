// `tributary demo`: the embedded default. Starts a coordinator in this process and N peer
// processes on loopback, shows one live progress line, then trains the single-process reference
// on the same number of tokens and prints a comparison table (also written as JSON).
#pragma once

#include <string>

#include "core/status.h"
#include "proto/tributary.pb.h"

namespace tributary::launcher {

struct DemoOptions {
  v1::JobSpec spec;           // corpus_digest is filled in from corpus_dir
  std::string corpus_dir;
  std::string run_dir;        // peer logs and summary.json; empty = runs/demo-<time>
  bool run_reference = true;
  int reference_threads = 2;  // the reference runs alone, after the peers
  std::string device = "cpu"; // the peers' compute device (cpu, cuda, cuda:N), or a comma-separated list dealt in turn
};

// Returns a non-OK status if any part of the run failed; prints progress and the table.
Status RunDemo(const DemoOptions& options);

}  // namespace tributary::launcher
