#include "benchmarks/wan/netns.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "core/files.h"

namespace tributary::wan {
namespace {

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

std::string NetnsPath(const std::string& name) { return std::string(kNetnsDir) + "/" + name; }
std::string OwnerPath(const std::string& run_id) { return std::string(kOwnerDir) + "/" + run_id; }

// The namespace calls below act on the calling thread only (network namespaces are per
// thread), so each runs on a thread of its own that nobody else uses.
Status OnHelperThread(const std::function<Status()>& fn) {
  Status result;
  std::thread helper([&] { result = fn(); });
  helper.join();
  return result;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

// Effective capability set of this process, from /proc/self/status.
uint64_t EffectiveCapabilities() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  }
  return 0;
}

// Makes /run/netns a shared mount point, as iproute2 does, so namespace mounts made here are
// seen by every mount namespace (e.g. `ip netns exec` children). A lock file serialises
// concurrent emulator starts, which would otherwise stack two bind mounts.
Status PrepareNetnsDir() {
  if (::mkdir(kNetnsDir, 0755) != 0 && errno != EEXIST) return IoError(Errno("mkdir /run/netns"));
  if (::mkdir(kOwnerDir, 0755) != 0 && errno != EEXIST) {
    return IoError(Errno(std::string("mkdir ") + kOwnerDir));
  }
  const std::string lock_path = std::string(kOwnerDir) + "/.lock";
  int lock = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) return IoError(Errno("open " + lock_path));
  ::flock(lock, LOCK_EX);
  Status st;
  bool bound = false;
  while (::mount("", kNetnsDir, "none", MS_SHARED | MS_REC, nullptr) != 0) {
    if (errno != EINVAL || bound) {
      st = IoError(Errno("cannot make /run/netns a shared mount"));
      break;
    }
    if (::mount(kNetnsDir, kNetnsDir, "none", MS_BIND | MS_REC, nullptr) != 0) {
      st = IoError(Errno("cannot bind-mount /run/netns onto itself"));
      break;
    }
    bound = true;
  }
  ::close(lock);
  return st;
}

Result<std::string> ProcStat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return NotFound("no process " + std::to_string(pid));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text;
}

// Fields of /proc/PID/stat after "pid (comm)": [0] = state, [19] = start time (field 22).
std::vector<std::string> StatFieldsAfterComm(const std::string& stat) {
  std::vector<std::string> fields;
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return fields;
  std::istringstream in(stat.substr(close + 1));
  std::string f;
  while (in >> f) fields.push_back(f);
  return fields;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Privileges

Status CheckPrivileges() {
  const uint64_t caps = EffectiveCapabilities();
  constexpr uint64_t kNetAdmin = uint64_t{1} << 12, kSysAdmin = uint64_t{1} << 21;
  std::string missing;
  if (!(caps & kSysAdmin)) missing += "CAP_SYS_ADMIN (to create and enter network namespaces)";
  if (!(caps & kNetAdmin)) {
    missing += std::string(missing.empty() ? "" : " and ") +
               "CAP_NET_ADMIN (to create TUN devices and set their addresses)";
  }
  if (!missing.empty()) {
    return FailedPrecondition("the WAN emulator needs root: this process (uid " +
                              std::to_string(::geteuid()) + ") lacks " + missing +
                              "; run it as root, e.g. with sudo");
  }
  if (::access("/dev/net/tun", F_OK) != 0) {
    return FailedPrecondition(
        "/dev/net/tun does not exist: load the tun module (modprobe tun) or create the device "
        "node (mkdir -p /dev/net && mknod /dev/net/tun c 10 200)");
  }
  int tun = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (tun < 0) return FailedPrecondition(Errno("cannot open /dev/net/tun"));
  ::close(tun);
  return OnHelperThread([] {
    if (::unshare(CLONE_NEWNET) != 0) {
      return FailedPrecondition(Errno("cannot create a network namespace (unshare CLONE_NEWNET)") +
                                "; is this a container without CAP_SYS_ADMIN?");
    }
    return Status::Ok();
  });
}

// ---------------------------------------------------------------------------------------------
// Named namespaces

Status CreateNamedNetns(const std::string& name) {
  TRIB_RETURN_IF_ERROR(PrepareNetnsDir());
  const std::string path = NetnsPath(name);
  int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) {
    if (errno == EEXIST) return FailedPrecondition("network namespace " + name + " already exists");
    return IoError(Errno("cannot create " + path));
  }
  ::close(fd);
  Status st = OnHelperThread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      return FailedPrecondition(Errno("cannot create network namespace " + name));
    }
    if (::mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
      return IoError(Errno("cannot bind-mount network namespace onto " + path));
    }
    return Status::Ok();
  });
  if (!st.ok()) ::unlink(path.c_str());
  return st;
}

Status RemoveNamedNetns(const std::string& name) {
  const std::string path = NetnsPath(name);
  const bool unmounted = ::umount2(path.c_str(), MNT_DETACH) == 0;
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT && !unmounted) return NotFound("no network namespace " + name);
    if (errno != ENOENT) return IoError(Errno("cannot remove " + path));
  }
  return Status::Ok();
}

bool NamedNetnsExists(const std::string& name) {
  struct stat st;
  return ::stat(NetnsPath(name).c_str(), &st) == 0;
}

std::vector<std::string> ListNamedNetns() {
  std::vector<std::string> names;
  DIR* dir = ::opendir(kNetnsDir);
  if (!dir) return names;
  while (dirent* e = ::readdir(dir)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(dir);
  return names;
}

Status RunInNetns(const std::string& name, const std::function<Status()>& fn) {
  return OnHelperThread([&] {
    const std::string path = NetnsPath(name);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NotFound(Errno("cannot open network namespace " + path));
    const int rc = ::setns(fd, CLONE_NEWNET);
    ::close(fd);
    if (rc != 0) return FailedPrecondition(Errno("cannot enter network namespace " + name));
    return fn();
  });
}

// ---------------------------------------------------------------------------------------------
// Run ids and owners

std::string NextRunId(const std::string& prefix) {
  static std::atomic<int> runs{0};
  const int n = runs.fetch_add(1);
  std::string id = prefix + "-" + std::to_string(::getpid());
  if (n > 0) id += "-" + std::to_string(n);
  return id;
}

std::string PeerNamespace(const std::string& run_id, int peer) {
  return run_id + "-p" + std::to_string(peer);
}

std::optional<ParsedName> ParseNamespaceName(std::string_view name) {
  const size_t p = name.rfind("-p");
  if (p == std::string_view::npos || !AllDigits(name.substr(p + 2))) return std::nullopt;
  ParsedName out;
  out.run_id = std::string(name.substr(0, p));
  out.peer = std::stoi(std::string(name.substr(p + 2)));
  std::vector<std::string> parts;
  std::stringstream ss(out.run_id);
  for (std::string part; std::getline(ss, part, '-');) parts.push_back(part);
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || !AllDigits(parts[1]) ||
      (parts.size() == 3 && !AllDigits(parts[2])) || parts[1].size() > 9) {
    return std::nullopt;
  }
  for (char c : parts[0]) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return std::nullopt;
  }
  out.prefix = parts[0];
  out.pid = static_cast<pid_t>(std::stol(parts[1]));
  return out;
}

Status WriteOwnerRecord(const std::string& run_id) {
  if (::mkdir(kOwnerDir, 0755) != 0 && errno != EEXIST) {
    return IoError(Errno(std::string("mkdir ") + kOwnerDir));
  }
  TRIB_ASSIGN_OR_RETURN(std::string stat, ProcStat(::getpid()));
  const auto fields = StatFieldsAfterComm(stat);
  if (fields.size() < 20) return Internal("cannot parse /proc/self/stat");
  return WriteFileAtomically(OwnerPath(run_id), "pid " + std::to_string(::getpid()) + " start " +
                                                    fields[19] + "\n");
}

void RemoveOwnerRecord(const std::string& run_id) { ::unlink(OwnerPath(run_id).c_str()); }

bool RunOwnerAlive(const std::string& run_id, pid_t pid) {
  auto stat = ProcStat(pid);
  if (!stat.ok()) return false;
  const auto fields = StatFieldsAfterComm(*stat);
  if (fields.size() < 20 || fields[0] == "Z" || fields[0] == "X") return false;
  auto record = ReadWholeFile(OwnerPath(run_id));
  if (record.ok()) {
    std::istringstream in(*record);
    std::string pid_word, start_word, start;
    long recorded_pid = 0;
    in >> pid_word >> recorded_pid >> start_word >> start;
    if (recorded_pid == pid && !start.empty() && start != fields[19]) return false;  // pid reused
  }
  return true;
}

std::string CleanupReport::Summary() const {
  std::string s = "removed " + std::to_string(removed.size()) + " namespace(s)";
  for (const auto& n : removed) s += "\n  removed " + n;
  for (const auto& n : owner_alive) s += "\n  kept " + n + " (its owner process still runs)";
  for (const auto& n : failed) s += "\n  FAILED " + n;
  return s;
}

CleanupReport CleanupRun(const std::string& run_id, bool force) {
  CleanupReport report;
  std::vector<std::string> mine;
  pid_t pid = 0;
  for (const auto& name : ListNamedNetns()) {
    auto parsed = ParseNamespaceName(name);
    if (parsed && parsed->run_id == run_id) {
      mine.push_back(name);
      pid = parsed->pid;
    }
  }
  if (pid == 0) {
    std::string probe = PeerNamespace(run_id, 0);
    if (auto parsed = ParseNamespaceName(probe)) pid = parsed->pid;
  }
  const bool alive = pid > 0 && RunOwnerAlive(run_id, pid);
  if (alive && !force) {
    report.owner_alive = mine;
    return report;
  }
  for (const auto& name : mine) {
    Status st = RemoveNamedNetns(name);
    if (st.ok() || st.code() == StatusCode::kNotFound) {
      report.removed.push_back(name);
    } else {
      report.failed.push_back(name + ": " + st.message());
    }
  }
  if (report.failed.empty()) RemoveOwnerRecord(run_id);
  return report;
}

CleanupReport SweepStaleRuns(const std::string& prefix) {
  std::map<std::string, bool> runs;  // run id → seen
  for (const auto& name : ListNamedNetns()) {
    auto parsed = ParseNamespaceName(name);
    if (parsed && parsed->prefix == prefix) runs[parsed->run_id] = true;
  }
  // Owner records whose namespaces are already gone are swept too.
  if (DIR* dir = ::opendir(kOwnerDir)) {
    while (dirent* e = ::readdir(dir)) {
      std::string n = e->d_name;
      if (n.rfind(prefix + "-", 0) == 0) runs[n] = true;
    }
    ::closedir(dir);
  }
  CleanupReport total;
  for (const auto& [run_id, _] : runs) {
    CleanupReport r = CleanupRun(run_id, /*force=*/false);
    total.removed.insert(total.removed.end(), r.removed.begin(), r.removed.end());
    total.owner_alive.insert(total.owner_alive.end(), r.owner_alive.begin(), r.owner_alive.end());
    total.failed.insert(total.failed.end(), r.failed.begin(), r.failed.end());
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// Signal-time cleanup. The handler may only use async-signal-safe calls, so the armed paths
// live in fixed slots that the handler reads without locks.

namespace {

constexpr int kSlots = 1024;
constexpr size_t kPathMax = 160;
enum SlotState : int { kFree = 0, kBusy = 1, kArmed = 2 };

struct Slot {
  std::atomic<int> state{kFree};
  pid_t owner;  // a forked child (before exec) must not tear down its parent's namespaces
  char path[kPathMax];
};
Slot g_slots[kSlots];
struct sigaction g_previous[NSIG];
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

void TearDownArmed() {
  const pid_t self = ::getpid();
  for (Slot& slot : g_slots) {
    if (slot.state.load(std::memory_order_acquire) != kArmed || slot.owner != self) continue;
    ::umount2(slot.path, MNT_DETACH);  // fails harmlessly for owner records
    ::unlink(slot.path);
  }
}

void OnSignal(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  TearDownArmed();
  const struct sigaction& prev = g_previous[sig];
  if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction) {
    prev.sa_sigaction(sig, info, context);
  } else if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler != SIG_DFL &&
             prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
  } else {
    // Die of the signal as the process would have without us; it stays blocked until return.
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  }
  errno = saved_errno;
}

}  // namespace

void InstallSignalCleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::atexit(TearDownArmed);  // exit() without Stop() skips destructors of live emulators
    for (int sig : kSignals) {
      struct sigaction prev {};
      ::sigaction(sig, nullptr, &prev);
      if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler == SIG_IGN) continue;  // e.g. nohup
      g_previous[sig] = prev;
      struct sigaction act {};
      act.sa_sigaction = OnSignal;
      act.sa_flags = SA_SIGINFO | SA_RESTART;
      sigemptyset(&act.sa_mask);
      ::sigaction(sig, &act, nullptr);
    }
  });
}

void ArmSignalCleanup(const std::string& path) {
  if (path.size() >= kPathMax) return;
  for (Slot& slot : g_slots) {
    int expected = kFree;
    if (slot.state.compare_exchange_strong(expected, kBusy)) {
      std::memcpy(slot.path, path.c_str(), path.size() + 1);
      slot.owner = ::getpid();
      slot.state.store(kArmed, std::memory_order_release);
      return;
    }
  }
}

void DisarmSignalCleanup(const std::string& path) {
  for (Slot& slot : g_slots) {
    int expected = kArmed;
    if (slot.state.load() == kArmed && path == slot.path &&
        slot.state.compare_exchange_strong(expected, kBusy)) {
      slot.path[0] = '\0';
      slot.state.store(kFree, std::memory_order_release);
      return;
    }
  }
}

}  // namespace tributary::wan
