// Connecting a Gloo group, for code that already uses Gloo directly: the backend
// (GlooCommunicator) and the benchmarks' Gloo baselines share this one path, so every
// comparison with Gloo connects the way the backend does. Includes Gloo headers: .cc files only.
//
// Gloo reports errors by throwing; GlooCall turns anything thrown into Unavailable so that no
// exception leaves the calling file.
#pragma once

#include <gloo/rendezvous/context.h>

#include <chrono>
#include <exception>
#include <memory>
#include <string>

#include "core/status.h"

namespace tributary::collectives {

template <typename F>
Status GlooCall(const std::string& what, F&& f) {
  try {
    f();
    return Status::Ok();
  } catch (const std::exception& e) {
    return Unavailable("gloo " + what + ": " + e.what());
  }
}

struct GlooRendezvous {
  uint32_t rank = 0;
  uint32_t world = 1;
  std::string host = "127.0.0.1";  // the address this rank's TCP device binds
  std::string store_dir;           // a FileStore directory every rank sees
  std::string prefix;              // keys of this group inside store_dir (empty: none)
  std::chrono::milliseconds timeout{30000};  // connecting and every later wait
};

// Blocking until every rank has connected its full mesh (or the timeout).
Result<std::shared_ptr<gloo::rendezvous::Context>> ConnectGloo(const GlooRendezvous& r);

}  // namespace tributary::collectives
