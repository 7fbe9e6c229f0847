#include "benchmarks/wanbench/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

extern char** environ;

namespace tributary::wanbench {

Result<std::string> FindProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) return name;
    return NotFound("'" + name + "' is not an executable file");
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  dirs += ":/usr/sbin:/sbin";  // `ip` lives here and root's PATH may lack it under sudo -E
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string candidate = dirs.substr(start, end - start) + "/" + name;
    if (end > start && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return NotFound("'" + name + "' is not installed (not found in PATH)");
}

Result<Subprocess> Subprocess::Start(const std::vector<std::string>& argv, const std::string& log_path,
                                     const std::map<std::string, std::string>& env) {
  if (argv.empty()) return InvalidArgument("cannot start an empty command");
  TRIB_ASSIGN_OR_RETURN(std::string program, FindProgram(argv[0]));
  // Everything the child needs is built before fork: after fork only async-signal-safe calls.
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    const auto eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : env) merged[k] = v;
  std::vector<std::string> env_strings, args = argv;
  for (const auto& [k, v] : merged) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, argp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  for (auto& s : args) argp.push_back(s.data());
  argp.push_back(nullptr);
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return IoError("cannot open " + log_path + ": " + std::strerror(errno));
  const pid_t parent = ::getpid();
  sigset_t all, old;
  sigfillset(&all);
  // No signal handler of ours may run in the child between fork and exec.
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);  // the benchmark died before prctl
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
    }
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::execve(program.c_str(), argp.data(), envp.data());
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(log_fd);
  if (pid < 0) return IoError(std::string("fork failed: ") + std::strerror(fork_errno));
  return Subprocess(pid);
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(other.pid_), exit_code_(other.exit_code_), cpu_seconds_(other.cpu_seconds_) {
  other.pid_ = -1;
}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    Kill();
    pid_ = other.pid_;
    exit_code_ = other.exit_code_;
    cpu_seconds_ = other.cpu_seconds_;
    other.pid_ = -1;
  }
  return *this;
}

Subprocess::~Subprocess() { Kill(); }

void Subprocess::Reaped(int status, const struct rusage& usage) {
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto seconds = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  cpu_seconds_ = seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

std::optional<int> Subprocess::Poll() {
  if (exit_code_ || pid_ <= 0) return exit_code_;
  int status = 0;
  struct rusage usage {};
  if (::wait4(pid_, &status, WNOHANG, &usage) == pid_) Reaped(status, usage);
  return exit_code_;
}

Result<int> Subprocess::Wait(Deadline deadline) {
  for (;;) {
    if (auto code = Poll()) return *code;
    if (Clock::now() >= deadline) return DeadlineExceeded("process " + std::to_string(pid_) + " still runs");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Subprocess::Kill() {
  if (pid_ <= 0 || Poll()) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  struct rusage usage {};
  if (::wait4(pid_, &status, 0, &usage) == pid_) Reaped(status, usage);
}

}  // namespace tributary::wanbench
