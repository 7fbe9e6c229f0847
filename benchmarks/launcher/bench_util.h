// Helpers shared by the launcher benchmarks: log timestamps, /proc readings, small statistics.
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "benchmarks/common/bench_stats.h"
#include "core/files.h"

namespace tributary::bench {

// Seconds since local midnight, the clock of spdlog's "%H:%M:%S.%e" prefix.
inline double NowOfDay() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  localtime_r(&t, &tm);
  const double ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  return tm.tm_hour * 3600.0 + tm.tm_min * 60.0 + tm.tm_sec + ms / 1000.0;
}

// A log line's own timestamp (seconds of day), when it has one.
inline std::optional<double> LineTime(const std::string& line) {
  static const std::regex re(R"(^(\d\d):(\d\d):(\d\d)\.(\d{3}) )");
  std::smatch m;
  if (!std::regex_search(line, m, re)) return std::nullopt;
  return std::stoi(m[1]) * 3600.0 + std::stoi(m[2]) * 60.0 + std::stoi(m[3]) +
         std::stoi(m[4]) / 1000.0;
}

inline std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// First line of `log` matching `re`, with its match.
inline std::optional<std::pair<std::string, std::smatch>> FindLine(
    const std::vector<std::string>& lines, const std::regex& re) {
  for (const auto& line : lines) {
    std::smatch m;
    if (std::regex_search(line, m, re)) return std::make_pair(line, m);
  }
  return std::nullopt;
}

// utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15).
inline double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// A "Key:   value kB" line of /proc/PID/status, in kB.
inline long ProcessStatusKb(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  }
  return -1;
}

inline long OpenFds(pid_t pid) {
  std::error_code ec;
  long n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

// Raises the soft open-file limit to the hard limit (children inherit it). Returns the new soft
// limit.
inline rlim_t RaiseFdLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

}  // namespace tributary::bench
