// A child process for the benchmark: argv[0] looked up in PATH, output to a log file, its own
// process group (a Ctrl-C at the terminal reaches only the benchmark, which then stops its
// children in order), and PR_SET_PDEATHSIG = SIGKILL, so a child dies with the benchmark even if
// the benchmark itself is SIGKILLed. `ip netns exec` execs its command in place, so the pid is
// that of the peer itself and killing it kills the peer.
//
// launcher::ChildProcess does not set a death signal or a process group; that is why this exists.
// Create and destroy Subprocesses on one thread (the death signal follows the creating thread).
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/status.h"

namespace tributary::wanbench {

class Subprocess {
 public:
  // stdout and stderr go to `log_path` (created or truncated); `env` adds to the environment.
  static Result<Subprocess> Start(const std::vector<std::string>& argv, const std::string& log_path,
                                  const std::map<std::string, std::string>& env = {});
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  ~Subprocess();  // SIGKILL and reap if still running

  pid_t pid() const { return pid_; }
  // Exit code, or 128 + signal; nullopt while running.
  std::optional<int> Poll();
  Result<int> Wait(Deadline deadline);
  void Kill();  // SIGKILL and reap
  // CPU seconds (user + system) the process used, once it has ended: how much of the shared
  // cores it actually got.
  std::optional<double> cpu_seconds() const { return cpu_seconds_; }

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  void Reaped(int status, const struct rusage& usage);
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::optional<double> cpu_seconds_;
};

// The absolute path of `name` found in PATH (or `name` itself if it contains '/'); NotFound
// naming the missing program otherwise.
Result<std::string> FindProgram(const std::string& name);

}  // namespace tributary::wanbench
