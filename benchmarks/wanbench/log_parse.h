// Reads what the `tributary` processes log (core/logging.cc: "HH:MM:SS.mmm level [role] text")
// into per-round records: the coordinator's commit lines (peers, losses, round wall time) and
// each peer's attempt lines (compute and all-reduce seconds, bytes sent). Pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::wanbench {

struct LogLine {
  double seconds_of_day = 0;  // local time, as spdlog writes it
  std::string level;
  std::string role;
  std::string text;
};
std::optional<LogLine> ParseLogLine(std::string_view line);

// "round 3 complete: 4 peers, train loss 2.1000, eval loss 2.2000, θ ab12, 3.40 s, 1 attempt(s)"
struct CommitLine {
  double seconds_of_day = 0;
  uint64_t round = 0;
  uint32_t peers = 0;
  double train_loss = 0;
  std::optional<double> eval_loss;
  double wall_seconds = 0;  // from the round's first RoundStart to its commit
  uint32_t attempts = 1;
};
std::optional<CommitLine> ParseCommitLine(const LogLine& line);

// "round 4 eval loss 2.3000 (evaluated beside training by p0)": a loss that came after its
// round's commit line (JobSpec.eval_beside_training); the parsed log gives it to that round.
struct LateEvalLine {
  uint64_t round = 0;
  double eval_loss = 0;
};
std::optional<LateEvalLine> ParseLateEvalLine(const LogLine& line);

// "round 3 attempt 0: loss 2.1000, θ ab12, compute 1.23 s, comm 0.45 s, 123456 bytes sent"
struct AttemptLine {
  double seconds_of_day = 0;
  uint64_t round = 0;
  uint32_t attempt = 0;
  double train_loss = 0;
  double compute_seconds = 0;
  double comm_seconds = 0;
  uint64_t bytes_sent = 0;
};
std::optional<AttemptLine> ParseAttemptLine(const LogLine& line);

// The coordinator's "peer NAME (KEY) joined job ..." line: the name, or nullopt.
std::optional<std::string> ParseJoinLine(const LogLine& line);

struct CoordinatorLog {
  std::vector<CommitLine> commits;
  std::vector<double> joins;  // seconds_of_day of each admission
  bool finished = false;      // "job ... finished"
};
CoordinatorLog ParseCoordinatorLog(std::string_view text);
std::vector<AttemptLine> ParsePeerLog(std::string_view text);

// Local seconds-of-day to Unix time, for a log written around `reference_unix` (a line stamped
// just before midnight is read as yesterday's when the reference is just after it).
double UnixTimeOf(double seconds_of_day, double reference_unix);

}  // namespace tributary::wanbench
