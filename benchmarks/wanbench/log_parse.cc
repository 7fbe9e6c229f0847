#include "benchmarks/wanbench/log_parse.h"

#include <ctime>
#include <regex>

namespace tributary::wanbench {
namespace {

std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace

std::optional<LogLine> ParseLogLine(std::string_view line) {
  static const std::regex re(R"(^(\d\d):(\d\d):(\d\d)\.(\d\d\d) (\w+) \[([^\]]*)\] (.*)$)");
  std::match_results<std::string_view::const_iterator> m;
  if (!std::regex_match(line.begin(), line.end(), m, re)) return std::nullopt;
  LogLine out;
  out.seconds_of_day = std::stoi(m[1]) * 3600.0 + std::stoi(m[2]) * 60.0 + std::stoi(m[3]) +
                       std::stoi(m[4]) / 1000.0;
  out.level = m[5];
  out.role = m[6];
  out.text = m[7];
  return out;
}

std::optional<CommitLine> ParseCommitLine(const LogLine& line) {
  static const std::regex re(
      R"(^round (\d+) complete: (\d+) peers, train loss ([-+0-9.eEnaif]+)(?:, eval loss ([-+0-9.eEnaif]+))?, \S+ \S+, ([0-9.]+) s, (\d+) attempt)");
  std::smatch m;
  if (!std::regex_search(line.text, m, re)) return std::nullopt;
  CommitLine c;
  c.seconds_of_day = line.seconds_of_day;
  c.round = std::stoull(m[1]);
  c.peers = static_cast<uint32_t>(std::stoul(m[2]));
  c.train_loss = std::stod(m[3]);
  if (m[4].matched) c.eval_loss = std::stod(m[4]);
  c.wall_seconds = std::stod(m[5]);
  c.attempts = static_cast<uint32_t>(std::stoul(m[6]));
  return c;
}

std::optional<LateEvalLine> ParseLateEvalLine(const LogLine& line) {
  static const std::regex re(R"(^round (\d+) eval loss ([-+0-9.eEnaif]+) \(evaluated beside training)");
  std::smatch m;
  if (!std::regex_search(line.text, m, re)) return std::nullopt;
  return LateEvalLine{std::stoull(m[1]), std::stod(m[2])};
}

std::optional<AttemptLine> ParseAttemptLine(const LogLine& line) {
  static const std::regex re(
      R"(^round (\d+) attempt (\d+): loss ([-+0-9.eEnaif]+), \S+ \S+, compute ([0-9.]+) s, comm ([0-9.]+) s, (\d+) bytes sent)");
  std::smatch m;
  if (!std::regex_search(line.text, m, re)) return std::nullopt;
  AttemptLine a;
  a.seconds_of_day = line.seconds_of_day;
  a.round = std::stoull(m[1]);
  a.attempt = static_cast<uint32_t>(std::stoul(m[2]));
  a.train_loss = std::stod(m[3]);
  a.compute_seconds = std::stod(m[4]);
  a.comm_seconds = std::stod(m[5]);
  a.bytes_sent = std::stoull(m[6]);
  return a;
}

std::optional<std::string> ParseJoinLine(const LogLine& line) {
  static const std::regex re(R"(^peer (\S+) \(.*\) joined job )");
  std::smatch m;
  if (!std::regex_search(line.text, m, re)) return std::nullopt;
  return m[1].str();
}

CoordinatorLog ParseCoordinatorLog(std::string_view text) {
  CoordinatorLog log;
  for (std::string_view raw : Lines(text)) {
    auto line = ParseLogLine(raw);
    if (!line) continue;
    if (auto c = ParseCommitLine(*line)) {
      log.commits.push_back(*c);
    } else if (auto e = ParseLateEvalLine(*line)) {
      // The loss of θ as the round committed: it belongs to that round's point in time.
      for (CommitLine& c : log.commits) {
        if (c.round == e->round) c.eval_loss = e->eval_loss;
      }
    } else if (ParseJoinLine(*line)) {
      log.joins.push_back(line->seconds_of_day);
    } else if (line->text.rfind("job ", 0) == 0 && line->text.find(" finished: ") != std::string::npos) {
      log.finished = true;
    }
  }
  return log;
}

std::vector<AttemptLine> ParsePeerLog(std::string_view text) {
  std::vector<AttemptLine> out;
  for (std::string_view raw : Lines(text)) {
    auto line = ParseLogLine(raw);
    if (!line) continue;
    if (auto a = ParseAttemptLine(*line)) out.push_back(*a);
  }
  return out;
}

double UnixTimeOf(double seconds_of_day, double reference_unix) {
  const std::time_t ref = static_cast<std::time_t>(reference_unix);
  std::tm local{};
  localtime_r(&ref, &local);
  local.tm_hour = local.tm_min = local.tm_sec = 0;
  local.tm_isdst = -1;
  const double midnight = static_cast<double>(std::mktime(&local));
  double t = midnight + seconds_of_day;
  // Logs are read within hours of the reference: pick the day that puts them closest.
  if (t - reference_unix > 12 * 3600) t -= 86400;
  if (reference_unix - t > 12 * 3600) t += 86400;
  return t;
}

}  // namespace tributary::wanbench
