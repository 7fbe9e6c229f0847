#include "benchmarks/wan/probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

extern char** environ;

namespace tributary::wan {
namespace {

using std::chrono::microseconds;
using std::chrono::nanoseconds;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Closes the descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

sockaddr_in SockAddr(const std::string& ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  return a;
}

// A UDP socket in `peer`'s namespace bound to the peer's address on an ephemeral port.
Result<int> BoundUdpSocket(const WanEmulator& wan, int peer, uint16_t* port) {
  TRIB_ASSIGN_OR_RETURN(int fd, wan.OpenSocket(peer, AF_INET, SOCK_DGRAM));
  sockaddr_in a = SockAddr(wan.Address(peer), 0);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    Status st = IoError(Errno("bind " + wan.Address(peer)));
    ::close(fd);
    return st;
  }
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

int64_t NowNs() {
  return std::chrono::duration_cast<nanoseconds>(Clock::now().time_since_epoch()).count();
}

struct Probe {
  uint32_t seq;
  int64_t sent_ns;
};

// Runs the calling thread under SCHED_FIFO (below the forwarding thread) while alive, best
// effort, so that compilers on a busy machine do not add their time slices to measured RTTs.
class ScopedRealtime {
 public:
  ScopedRealtime() {
    if (::pthread_getschedparam(::pthread_self(), &policy_, &saved_) != 0) return;
    sched_param p{};
    p.sched_priority = 5;
    active_ = ::pthread_setschedparam(::pthread_self(), SCHED_FIFO, &p) == 0;
  }
  ~ScopedRealtime() {
    if (active_) ::pthread_setschedparam(::pthread_self(), policy_, &saved_);
  }
  ScopedRealtime(const ScopedRealtime&) = delete;
  ScopedRealtime& operator=(const ScopedRealtime&) = delete;

 private:
  int policy_ = SCHED_OTHER;
  sched_param saved_{};
  bool active_ = false;
};

}  // namespace

Result<RttStats> MeasureUdpRtt(const WanEmulator& wan, int from, int to, int count,
                               Millis interval, Millis timeout) {
  uint16_t port = 0;
  TRIB_ASSIGN_OR_RETURN(int server_fd, BoundUdpSocket(wan, to, &port));
  Fd server(server_fd);
  TRIB_ASSIGN_OR_RETURN(int client_fd, wan.OpenSocket(from, AF_INET, SOCK_DGRAM));
  Fd client(client_fd);
  sockaddr_in dst = SockAddr(wan.Address(to), port);
  if (::connect(client.get(), reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0) {
    return IoError(Errno("connect to echo server"));
  }

  std::atomic<bool> stop{false};
  std::thread echo([&] {
    ScopedRealtime realtime;
    char buf[2048];
    pollfd p{server.get(), POLLIN, 0};
    while (!stop.load()) {
      if (::poll(&p, 1, 20) <= 0) continue;
      sockaddr_in peer{};
      socklen_t len = sizeof(peer);
      ssize_t n = ::recvfrom(server.get(), buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&peer), &len);
      if (n > 0) ::sendto(server.get(), buf, static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&peer), len);
    }
  });

  RttStats stats;
  std::vector<double> rtts;
  ScopedRealtime realtime;
  const auto start = Clock::now();
  for (int k = 0; k < count; ++k) {
    std::this_thread::sleep_until(start + k * interval);
    Probe probe{static_cast<uint32_t>(k), NowNs()};
    if (::send(client.get(), &probe, sizeof(probe), 0) != sizeof(probe)) continue;
    ++stats.sent;
    const Deadline give_up = Clock::now() + timeout;
    for (;;) {
      pollfd p{client.get(), POLLIN, 0};
      const long left = std::max<long>(0, MillisLeft(give_up));
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
      Probe echo_back{};
      if (::recv(client.get(), &echo_back, sizeof(echo_back), 0) != sizeof(echo_back)) continue;
      if (echo_back.seq != probe.seq) continue;  // a late echo of an earlier probe
      rtts.push_back((NowNs() - probe.sent_ns) / 1e6);
      break;
    }
  }
  stop = true;
  echo.join();

  stats.received = static_cast<int>(rtts.size());
  if (rtts.empty()) return Unavailable("no echo came back from peer " + std::to_string(to));
  std::sort(rtts.begin(), rtts.end());
  stats.min_ms = rtts.front();
  stats.max_ms = rtts.back();
  stats.median_ms = rtts[rtts.size() / 2];
  stats.p90_ms = rtts[std::min(rtts.size() - 1, rtts.size() * 9 / 10)];
  double sum = 0;
  for (double r : rtts) sum += r;
  stats.mean_ms = sum / static_cast<double>(rtts.size());
  return stats;
}

Result<OneWayCount> CountOneWay(const WanEmulator& wan, int from, int to, int count, int bytes,
                                microseconds gap) {
  if (bytes < 4 || bytes > 1400) return InvalidArgument("datagram size must be in [4, 1400]");
  uint16_t port = 0;
  TRIB_ASSIGN_OR_RETURN(int rx_fd, BoundUdpSocket(wan, to, &port));
  Fd rx(rx_fd);
  // Hold every datagram until we read them all after sending (root may exceed rmem_max).
  int rcvbuf = 32 << 20;
  ::setsockopt(rx.get(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
  TRIB_ASSIGN_OR_RETURN(int tx_fd, wan.OpenSocket(from, AF_INET, SOCK_DGRAM));
  Fd tx(tx_fd);
  sockaddr_in dst = SockAddr(wan.Address(to), port);
  if (::connect(tx.get(), reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0) {
    return IoError(Errno("connect"));
  }
  OneWayCount out;
  std::vector<char> buf(static_cast<size_t>(bytes), 0);
  const auto start = Clock::now();
  for (uint32_t k = 0; k < static_cast<uint32_t>(count); ++k) {
    std::this_thread::sleep_until(start + k * gap);
    std::memcpy(buf.data(), &k, sizeof(k));
    if (::send(tx.get(), buf.data(), buf.size(), 0) == static_cast<ssize_t>(buf.size())) ++out.sent;
  }
  // Read until the link has been quiet for a while (longer than any delay the tests use).
  for (;;) {
    pollfd p{rx.get(), POLLIN, 0};
    if (::poll(&p, 1, 500) <= 0) break;
    uint32_t seq;
    if (::recv(rx.get(), buf.data(), buf.size(), 0) >= 4) {
      std::memcpy(&seq, buf.data(), sizeof(seq));
      out.order.push_back(seq);
      ++out.received;
    }
  }
  return out;
}

Result<IperfResult> ParseIperf3Json(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Corruption("iperf3 output is not JSON");
  if (j.contains("error")) return Unavailable("iperf3: " + j["error"].get<std::string>());
  const nlohmann::json* end = j.contains("end") ? &j["end"] : nullptr;
  if (!end || !end->contains("sum_received") || !end->contains("sum_sent")) {
    return Corruption("iperf3 JSON lacks end.sum_received / end.sum_sent");
  }
  IperfResult r;
  r.receiver_mbit = (*end)["sum_received"].value("bits_per_second", 0.0) / 1e6;
  r.sender_mbit = (*end)["sum_sent"].value("bits_per_second", 0.0) / 1e6;
  r.retransmits = (*end)["sum_sent"].value("retransmits", int64_t{0});
  r.seconds = (*end)["sum_received"].value("seconds", 0.0);
  if (end->contains("sum_received_bidir_reverse")) {
    r.reverse_receiver_mbit = (*end)["sum_received_bidir_reverse"].value("bits_per_second", 0.0) / 1e6;
  }
  return r;
}

namespace {

Result<pid_t> Spawn(const std::vector<std::string>& argv, int stdout_fd, int stderr_fd) {
  std::vector<std::string> copy = argv;
  std::vector<char*> args;
  for (auto& s : copy) args.push_back(s.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  if (stdout_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, stdout_fd, STDOUT_FILENO);
  } else {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  }
  if (stderr_fd >= 0) {
    posix_spawn_file_actions_adddup2(&actions, stderr_fd, STDERR_FILENO);
  } else {
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return IoError("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Waits for `pid` until `deadline`, then kills it. Returns the exit code (128 + signal).
int WaitOrKill(pid_t pid, Deadline deadline) {
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (Clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      return WaitExit(pid);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

Result<CommandResult> RunCommand(const std::vector<std::string>& argv, Deadline deadline,
                                 bool merge_stderr) {
  if (argv.empty()) return InvalidArgument("empty command");
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return IoError(Errno("pipe"));
  auto pid = Spawn(argv, pipe_fds[1], merge_stderr ? pipe_fds[1] : -1);
  ::close(pipe_fds[1]);
  Fd out(pipe_fds[0]);
  if (!pid.ok()) return pid.status();
  CommandResult result;
  char buf[65536];
  for (;;) {
    pollfd p{out.get(), POLLIN, 0};
    const long left = MillisLeft(deadline);
    if (left <= 0) break;
    if (::poll(&p, 1, static_cast<int>(std::min<long>(left, 1000))) <= 0) continue;
    const ssize_t n = ::read(out.get(), buf, sizeof(buf));
    if (n <= 0) break;
    result.output.append(buf, static_cast<size_t>(n));
  }
  result.exit_code = WaitOrKill(*pid, deadline);
  return result;
}

Result<IperfResult> RunIperf3(const WanEmulator& wan, int server, int client, int seconds,
                              int omit_seconds, int port, const std::string& congestion, bool bidir) {
  std::vector<std::string> server_argv = wan.ExecPrefix(server);
  for (const char* a : {"iperf3", "-s", "-1", "-B"}) server_argv.push_back(a);
  server_argv.push_back(wan.Address(server));
  server_argv.push_back("-p");
  server_argv.push_back(std::to_string(port));
  TRIB_ASSIGN_OR_RETURN(pid_t server_pid, Spawn(server_argv, -1, -1));

  std::vector<std::string> client_argv = wan.ExecPrefix(client);
  for (const char* a : {"iperf3", "-J", "-c"}) client_argv.push_back(a);
  client_argv.push_back(wan.Address(server));
  for (const std::string& a : {std::string("-p"), std::to_string(port), std::string("-t"),
                               std::to_string(seconds), std::string("-O"),
                               std::to_string(omit_seconds)}) {
    client_argv.push_back(a);
  }
  if (!congestion.empty()) {
    client_argv.push_back("-C");
    client_argv.push_back(congestion);
  }
  if (bidir) client_argv.push_back("--bidir");
  // The server needs a moment to listen; a refused connection is retried, nothing else is.
  Result<IperfResult> result = Unavailable("iperf3 never ran");
  const Deadline give_up = DeadlineAfter(Millis(5000));
  for (;;) {
    auto run = RunCommand(client_argv, DeadlineAfter(Millis((seconds + omit_seconds + 20) * 1000)));
    if (!run.ok()) {
      result = run.status();
      break;
    }
    result = ParseIperf3Json(run->output);
    const bool refused = !result.ok() && result.status().message().find("unable to connect") !=
                                             std::string::npos;
    if (!refused || Clock::now() >= give_up) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  WaitOrKill(server_pid, DeadlineAfter(Millis(3000)));
  return result;
}

}  // namespace tributary::wan
