// What the WAN emulator emulates: N peers on one IPv4 subnet and an N×N matrix of directed
// links. A config comes from a preset (every peer gets the same access profile), from a TOML
// scenario (presets per peer, full matrices, single-link overrides), or is built in code.
// Everything here is pure; ValidateConfig is the single gate before WanEmulator::Start.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "benchmarks/wan/link_model.h"
#include "core/status.h"

namespace tributary::wan {

// How one peer is attached to the internet. Links are composed from the two ends' profiles
// (ComposeLink), so heterogeneous peers (a datacentre and a home) get asymmetric links.
struct PeerProfile {
  double up_mbit = 0;    // 0 = unlimited
  double down_mbit = 0;  // 0 = unlimited
  double rtt_ms = 0;     // round trip between two peers that both have this profile
  double jitter_ms = 0;
  JitterDistribution jitter_distribution = JitterDistribution::kUniform;
  bool allow_reorder = false;
  double loss = 0;
  int64_t queue_bytes = 0;  // 0 = one bandwidth-delay product of the composed link, ≥ 64 KiB
  int64_t queue_packets = 0;
};

struct WanConfig {
  int num_peers = 0;
  std::string subnet = "10.77.0.0/24";  // peer i gets host address i + 1
  int mtu = 1500;                       // of every peer's TUN interface
  uint64_t seed = 1;                    // loss and jitter draws; each link has its own stream
  std::string name_prefix = "trib";     // namespaces are "<prefix>-<pid>[-<n>]-p<peer>"
  // Tear namespaces down on SIGINT/SIGTERM/SIGHUP/SIGQUIT, then die of the signal as before.
  // A program that handles those signals itself (and calls Stop) sets this to false.
  bool handle_signals = true;
  // When > 0, each peer namespace's TCP autotuning limit (net.ipv4.tcp_rmem/tcp_wmem maximum)
  // in bytes. Linux's default 4 MiB send-buffer cap keeps one TCP stream below 1 Gbit/s at
  // 30 ms RTT; 0 keeps the kernel defaults, as an untuned host would have.
  int64_t tcp_buffer_bytes = 0;
  // Run the forwarding thread under SCHED_FIFO when allowed, so that other busy processes on
  // the machine do not add milliseconds of scheduling delay to every packet.
  bool realtime = true;
  std::vector<LinkParams> links;  // num_peers × num_peers, row = sender; the diagonal is unused

  LinkParams& link(int from, int to) { return links[static_cast<size_t>(from * num_peers + to)]; }
  const LinkParams& link(int from, int to) const {
    return links[static_cast<size_t>(from * num_peers + to)];
  }
};

// "lan", "continent", "transatlantic", "home".
std::vector<std::string> PresetNames();
Result<PeerProfile> PresetProfile(std::string_view name);

// The link from a peer with profile `from` to one with profile `to`:
//   rate  = min(from.up, to.down)            delay = mean of the two one-way delays (rtt / 2)
//   loss, jitter = the worse of the two        distribution, reordering, queue = the sender's
// Two peers of the same profile therefore get exactly that profile's numbers.
LinkParams ComposeLink(const PeerProfile& from, const PeerProfile& to);

// The queue a link gets when none is given: one bandwidth-delay product (rate × RTT, with
// RTT = 2 × one-way delay), at least 64 KiB; 0 (no limit) for an unshaped link.
int64_t AutoQueueBytes(double rate_mbit, double one_way_delay_ms);

// A full mesh with peer i attached by profiles[i].
WanConfig MeshConfig(const std::vector<PeerProfile>& profiles);
Result<WanConfig> PresetConfig(std::string_view preset, int num_peers);

// Scenario files, documented in docs/WAN_EMULATOR.md. Errors name the file, the line and the
// key: unknown keys, wrong types, out-of-range values and wrong matrix shapes are all refused.
Result<WanConfig> ParseScenario(const std::string& toml_text, const std::string& source_name);
Result<WanConfig> LoadScenarioFile(const std::string& path);

// The subnet "a.b.c.d/p" as a host-order base address and prefix length.
struct Subnet {
  uint32_t base = 0;
  int prefix = 24;
};
Result<Subnet> ParseSubnet(const std::string& cidr);
std::string FormatIpv4(uint32_t host_order);

Status ValidateLink(const LinkParams& link, const std::string& where);
Status ValidateConfig(const WanConfig& config);

// A human-readable table of every directed link, for logs and the CLI.
std::string DescribeLinks(const WanConfig& config);

}  // namespace tributary::wan
