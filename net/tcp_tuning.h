// TCP congestion control for the links between hosts.
//
// Every Connection to a non-loopback address asks the kernel for the preferred algorithm, BBR by
// default. A collective's traffic is bursts separated by idle gaps (compute, barriers), and
// Linux's CUBIC shrinks an application-limited window after each gap (RFC 7661), so every burst
// climbs again: on a 100 Mbit/s, 50 ms link, 16 MiB between 2 peers reached 62 % of iperf3 with
// CUBIC against 97 % with BBR, which paces at the measured bottleneck rate instead
// (docs/BENCHMARKS.md, "Congestion control"). Loopback keeps the kernel's default: there is no
// link to fill. When the kernel refuses (the module is missing, or an unprivileged process may
// not pick it: net.ipv4.tcp_allowed_congestion_control), the connection keeps the default and the
// first refusal is logged once, naming the fix.
#pragma once

#include <string>

#include "core/status.h"

namespace tributary::net {

inline constexpr const char* kDefaultCongestionControl = "bbr";

// For connections made from now on; "" keeps the kernel's default. Thread-safe.
void SetPreferredCongestionControl(std::string name);
std::string PreferredCongestionControl();

// Asks for the preferred algorithm on a connected TCP socket unless `loopback`. Never fails the
// connection: a refusal leaves the kernel's default (logged once per process).
void ApplyPreferredCongestionControl(int fd, bool loopback);

// The algorithm the kernel runs for this socket ("bbr", "cubic", ...).
Result<std::string> CongestionControlOf(int fd);

// Re-initialises the socket's congestion control (a switch to "reno" and back): BBR starts over
// with a fresh min-RTT window, so its next ProbeRTT is 10 s away. For an idle connection only.
Status RestartCongestionControl(int fd);

// What the kernel gives a new connection in this network namespace
// (net.ipv4.tcp_congestion_control); "" when that cannot be read.
std::string KernelDefaultCongestionControl();

}  // namespace tributary::net
