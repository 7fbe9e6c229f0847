// WanEmulator: N peers, each in its own network namespace with one TUN interface holding
// 10.77.0.(i+1)/24 (the config's subnet), and one forwarding thread that reads every IP packet a
// peer sends and writes it into the destination peer's TUN after the directed link's queue,
// serialisation, loss, delay and jitter (LinkModel).
//
// Threads and ownership: the emulator owns the namespaces, the TUN file descriptors and one
// event-loop thread ("wan-forward", epoll + a priority queue of due packets). Start returns once
// every namespace is configured and the loop runs; Stop (or the destructor) ends the loop, closes
// the TUNs and removes the namespaces. Processes still running inside a namespace at Stop keep
// running in an anonymous namespace: whoever started them stops them.
//
// Run a program in a peer with `ip netns exec <Namespace(i)> cmd` (ExecPrefix), or open a socket
// there from this process with OpenSocket.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "benchmarks/wan/wan_config.h"
#include "core/status.h"

namespace tributary::wan {

struct LinkStats {
  uint64_t packets = 0;        // delivered to the destination TUN
  uint64_t bytes = 0;          // IP bytes delivered
  uint64_t dropped_queue = 0;  // tail drops
  uint64_t dropped_loss = 0;   // random loss
};

struct EmulatorStats {
  std::vector<LinkStats> links;  // num_peers × num_peers, row = sender
  // Per peer: packets its TUN dropped because the forwarding thread did not read them in time.
  // Nonzero means the emulator, not the emulated link, was the bottleneck.
  std::vector<uint64_t> tun_dropped;
  uint64_t unroutable = 0;       // not IPv4, or not addressed to another peer
  uint64_t buffer_exhausted = 0; // dropped because max_inflight_bytes was reached
  uint64_t write_errors = 0;
  const LinkStats& link(int from, int to, int num_peers) const {
    return links[static_cast<size_t>(from * num_peers + to)];
  }
};

class WanEmulator {
 public:
  // OK when this process can create namespaces and TUN devices; otherwise says what is missing.
  static Status CheckPrerequisites();
  static Result<std::unique_ptr<WanEmulator>> Start(const WanConfig& config);

  ~WanEmulator();
  WanEmulator(const WanEmulator&) = delete;
  WanEmulator& operator=(const WanEmulator&) = delete;

  // Idempotent. Ends forwarding, closes the TUN devices, removes the namespaces.
  void Stop();

  int num_peers() const { return config_.num_peers; }
  const WanConfig& config() const { return config_; }
  const std::string& run_id() const { return run_id_; }
  std::string Namespace(int peer) const;
  std::string Address(int peer) const;
  std::string InterfaceName() const { return "twan0"; }
  // {"ip", "netns", "exec", Namespace(peer)}: prepend to a command to run it as that peer.
  std::vector<std::string> ExecPrefix(int peer) const;

  // A socket(domain, type | SOCK_CLOEXEC, 0) created inside the peer's namespace. The caller
  // owns (and closes) it.
  Result<int> OpenSocket(int peer, int domain, int type) const;

  // Changes one directed link while running (e.g. to degrade it mid-benchmark). Call it from
  // the thread that owns the emulator; Stats() may be called from any thread.
  Status UpdateLink(int from, int to, const LinkParams& params);

  EmulatorStats Stats() const;

  class Forwarder;  // the event loop (wan_emulator.cc)

 private:
  explicit WanEmulator(const WanConfig& config);
  Status Setup();
  Status SetupPeer(int peer);

  WanConfig config_;
  std::string run_id_;
  std::vector<std::string> armed_paths_;  // namespaces + owner record, for signal cleanup
  std::vector<std::string> created_;      // namespaces that exist
  std::vector<int> tun_fds_;
  std::vector<int> netlink_fds_;  // one per peer, for the TUN's kernel drop counter
  std::vector<int> ifindexes_;
  mutable std::mutex netlink_mu_;
  std::unique_ptr<Forwarder> forwarder_;
  std::thread loop_;
  bool stopped_ = false;
};

}  // namespace tributary::wan
