// Measurements through a running WanEmulator, for its tests and `tributary-wanem --validate`:
// a UDP echo RTT probe (there is no `ping` here) run from this process with sockets opened in
// the two peers' namespaces, and iperf3 run as a peer with `ip netns exec`.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "benchmarks/wan/wan_emulator.h"
#include "core/clock.h"
#include "core/status.h"

namespace tributary::wan {

struct RttStats {
  int sent = 0;
  int received = 0;
  double min_ms = 0, median_ms = 0, mean_ms = 0, p90_ms = 0, max_ms = 0;
};

// Sends `count` probes from peer `from` to a UDP echo server in peer `to`, one every `interval`
// (each waits up to `timeout` for its echo), and reports the round trips that came back.
Result<RttStats> MeasureUdpRtt(const WanEmulator& wan, int from, int to, int count,
                               Millis interval, Millis timeout);

// Sends `count` UDP datagrams of `bytes` from peer `from` to peer `to`, one every `gap`, and
// counts how many arrive (for loss checks; no echo, so only the from→to link is measured).
struct OneWayCount {
  int sent = 0;
  int received = 0;
  std::vector<uint32_t> order;  // sequence numbers in arrival order
};
Result<OneWayCount> CountOneWay(const WanEmulator& wan, int from, int to, int count, int bytes,
                                std::chrono::microseconds gap);

struct IperfResult {
  double receiver_mbit = 0;  // goodput seen by the receiver (TCP payload bits / s)
  double sender_mbit = 0;
  int64_t retransmits = 0;
  double seconds = 0;
  // With both directions loaded (iperf3 --bidir): the reverse flow's receiver goodput.
  double reverse_receiver_mbit = 0;
};
// Parses `iperf3 -J` output of a TCP client run.
Result<IperfResult> ParseIperf3Json(const std::string& json);

// iperf3 TCP from peer `client` to peer `server`: `iperf3 -s -1` in the server's namespace and
// `iperf3 -c -J` in the client's, both through `ip netns exec`. `omit_seconds` of slow start
// are left out of the average. `congestion` non-empty: both ends run that TCP congestion
// control (iperf3 -C), so a comparison with our connections runs the same algorithm. `bidir`:
// one stream each way at once (iperf3 --bidir), each direction's data sharing the link with
// the other's ACKs, as in an exchange between two peers.
Result<IperfResult> RunIperf3(const WanEmulator& wan, int server, int client, int seconds,
                              int omit_seconds, int port = 5201, const std::string& congestion = "",
                              bool bidir = false);

// Runs argv (argv[0] looked up in PATH) and returns its exit code and stdout; stderr is appended
// to the output when `merge_stderr`. Kills the child at `deadline`.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
Result<CommandResult> RunCommand(const std::vector<std::string>& argv, Deadline deadline,
                                 bool merge_stderr = false);

}  // namespace tributary::wan
