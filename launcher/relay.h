// RelayServer: lets peers behind NAT contribute. Two endpoints of one ring edge each dial the
// relay and send RelayJoin{token}; the relay pairs the two connections holding the same token
// and forwards bytes both ways until either side closes. It never parses what it forwards: the
// secure handshake and the AEAD records run end to end through it, so the relay sees ciphertext
// only. Tokens are random, single-use, known only to the two endpoints (they arrive inside the
// encrypted coordinator channel), and expire if their partner does not show up in time.
//
// Threads: everything runs on the IoThread given to Start, on one strand for the pairing table.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "core/clock.h"
#include "core/status.h"
#include "net/io_thread.h"

namespace tributary::launcher {

class RelayServer {
 public:
  static Result<std::unique_ptr<RelayServer>> Start(net::IoThread& io, const std::string& host,
                                                    uint16_t port = 0,
                                                    Millis pairing_timeout = Millis(60000));
  ~RelayServer();
  uint16_t port() const;
  uint64_t pairs() const;            // edges paired so far
  uint64_t bytes_forwarded() const;  // both directions, all pairs

  struct Impl;

 private:
  explicit RelayServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace tributary::launcher
