// Named network namespaces for the WAN emulator, made the way `ip netns add` makes them (an
// nsfs bind mount at /run/netns/NAME), so `ip netns exec NAME cmd` and `ip netns list` work.
//
// Ownership: a run "<prefix>-<pid>[-<n>]" owns the namespaces "<run>-p<peer>" and an owner record
// /run/tributary-wan/<run> holding the owner's pid and start time. Teardown happens in Stop(),
// in a signal handler (SIGINT/TERM/HUP/QUIT, async-signal-safe: umount2 + unlink only), or, after
// SIGKILL, in a later CleanupRun / SweepStaleRuns that checks the owner is really gone.
//
// No function here changes the calling thread's namespace: namespace work runs on a short-lived
// helper thread. File descriptors that thread opens (TUN devices, sockets) stay bound to the
// namespace they were opened in after the thread has ended.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tributary::wan {

inline constexpr const char* kNetnsDir = "/run/netns";
inline constexpr const char* kOwnerDir = "/run/tributary-wan";

// OK, or FailedPrecondition naming exactly what is missing (capabilities, /dev/net/tun, the
// ability to create a namespace) and what to do about it.
Status CheckPrivileges();

Status CreateNamedNetns(const std::string& name);  // FailedPrecondition if it exists
Status RemoveNamedNetns(const std::string& name);  // NotFound if absent
bool NamedNetnsExists(const std::string& name);
std::vector<std::string> ListNamedNetns();

// Runs `fn` on a helper thread that has joined namespace `name`, and waits for it.
Status RunInNetns(const std::string& name, const std::function<Status()>& fn);

// "<prefix>-<pid>" for the first run of this process, "<prefix>-<pid>-<n>" after that.
std::string NextRunId(const std::string& prefix);
std::string PeerNamespace(const std::string& run_id, int peer);  // "<run>-p<peer>"

struct ParsedName {
  std::string run_id;
  std::string prefix;
  pid_t pid = 0;
  int peer = 0;
};
// Parses "<prefix>-<pid>[-<n>]-p<peer>"; nullopt for names this emulator did not make.
std::optional<ParsedName> ParseNamespaceName(std::string_view name);

Status WriteOwnerRecord(const std::string& run_id);
void RemoveOwnerRecord(const std::string& run_id);
// True while the process that made `run_id` runs: its pid exists, is not a zombie, and (when
// the owner record survives) has the recorded start time, so a recycled pid does not count.
bool RunOwnerAlive(const std::string& run_id, pid_t pid);

struct CleanupReport {
  std::vector<std::string> removed;     // namespaces removed
  std::vector<std::string> owner_alive; // namespaces left because their owner still runs
  std::vector<std::string> failed;      // "name: reason"
  std::string Summary() const;
};
// Removes the namespaces of one run. Refuses (keeps them) while the owner runs unless `force`.
CleanupReport CleanupRun(const std::string& run_id, bool force);
// Removes every run whose names start with "<prefix>-" and whose owner is gone.
CleanupReport SweepStaleRuns(const std::string& prefix);

// Async-signal-safe teardown: armed namespaces and owner records are removed by the handler
// that InstallSignalCleanup puts on SIGINT, SIGTERM, SIGHUP and SIGQUIT, and at exit(). After
// cleaning up, the handler calls the previous handler, or restores the default action and
// re-raises. Only the process that armed a path removes it, never a forked child.
void InstallSignalCleanup();
void ArmSignalCleanup(const std::string& path);
void DisarmSignalCleanup(const std::string& path);

}  // namespace tributary::wan
