// ChildProcess: a real OS process started from argv with its output sent to a log file.
// The launcher uses it to run peers; tests use it to run the `tributary` binary. The destructor
// kills (SIGKILL) and reaps a child that is still running, so no process outlives its owner.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/status.h"

namespace tributary::launcher {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with argv; `env` entries are added to / override the environment.
  // stdout and stderr both go to `log_path` (appended), or are inherited when it is empty.
  static Result<ChildProcess> Spawn(const std::vector<std::string>& argv,
                                    const std::map<std::string, std::string>& env = {},
                                    const std::string& log_path = "");
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  // Exit code (or 128 + signal) once the child ended; nullopt while it runs.
  std::optional<int> Poll();
  // Waits until the child ends or `deadline`; DeadlineExceeded leaves it running.
  Result<int> Wait(Deadline deadline);
  void Signal(int signal);

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

// Absolute path of the running executable (/proc/self/exe).
std::string SelfExecutable();

}  // namespace tributary::launcher
