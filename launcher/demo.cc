#include "launcher/demo.h"

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "core/digest.h"
#include "core/files.h"
#include "core/human_bytes.h"
#include "launcher/coordinator.h"
#include "launcher/process.h"
#include "net/identity.h"
#include "runtime/job_spec.h"
#include "runtime/reference.h"
#include "runtime/training_data.h"

namespace tributary::launcher {
namespace {

std::string DefaultRunDir() {
  char stamp[32];
  std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
  return std::string("runs/demo-") + stamp;
}

class ProgressLine {
 public:
  explicit ProgressLine(uint32_t rounds) : rounds_(rounds), tty_(::isatty(STDOUT_FILENO)) {}
  void Update(const RoundSummary& s) {
    total_bytes_ += s.bytes_sent;
    total_tokens_ += s.tokens;
    std::snprintf(line_, sizeof(line_),
                  "round %3llu/%u | train loss %.4f | eval loss %s | %6.0f tok/s | sent %s | "
                  "%u peers",
                  static_cast<unsigned long long>(s.round + 1), rounds_, s.train_loss,
                  s.eval_loss ? fmt::format("{:.4f}", *s.eval_loss).c_str() : "  -   ",
                  s.wall_seconds > 0 ? s.tokens / s.wall_seconds : 0.0,
                  HumanBytes(static_cast<double>(total_bytes_)).c_str(), s.peers);
    if (tty_) {
      std::printf("\r%s\033[K", line_);
    } else {
      std::printf("%s\n", line_);
    }
    std::fflush(stdout);
  }
  // A round's eval loss that rank 0 computed beside training arrives with a later report, after
  // that round's line showed "-": it gets a line of its own (above the live one on a terminal).
  void LateEval(uint64_t round, double eval_loss) {
    const std::string late = fmt::format("round {:3}/{} | eval loss {:.4f} (evaluated beside training)",
                                         round + 1, rounds_, eval_loss);
    if (tty_) {
      std::printf("\r%s\033[K\n%s", late.c_str(), line_);
    } else {
      std::printf("%s\n", late.c_str());
    }
    std::fflush(stdout);
  }
  void Done() {
    if (tty_) std::printf("\n");
  }
  uint64_t total_bytes() const { return total_bytes_; }
  uint64_t total_tokens() const { return total_tokens_; }

 private:
  uint32_t rounds_;
  bool tty_;
  uint64_t total_bytes_ = 0, total_tokens_ = 0;
  char line_[256] = "";
};

}  // namespace

Status RunDemo(const DemoOptions& options) {
  v1::JobSpec spec = options.spec;
  spec.clear_corpus_digest();  // always the corpus the demo's peers are given
  TRIB_RETURN_IF_ERROR(runtime::PublishJobDigests(spec, options.corpus_dir));
  TRIB_RETURN_IF_ERROR(runtime::ValidateJobSpec(spec));
  const std::string run_dir = options.run_dir.empty() ? DefaultRunDir() : options.run_dir;
  TRIB_RETURN_IF_ERROR(MakeDirectories(run_dir));
  const std::string corpus_dir = std::filesystem::absolute(options.corpus_dir).string();

  Coordinator::Options copts;
  copts.spec = spec;
  TRIB_ASSIGN_OR_RETURN(auto coordinator, Coordinator::Start(copts));
  const std::string job_id = coordinator->job_id();
  std::printf("Tributary demo: job %s, %s, %u peers, %u rounds × %u inner steps, model %s\n",
              job_id.c_str(), runtime::ModeName(spec.mode()).c_str(), spec.num_peers(),
              spec.rounds(), spec.inner_steps(), spec.model().c_str());
  std::printf("coordinator on 127.0.0.1:%u; peer logs in %s/\n", coordinator->port(),
              run_dir.c_str());
  std::fflush(stdout);

  ProgressLine progress(spec.rounds());
  coordinator->OnRound([&progress](const RoundSummary& s) { progress.Update(s); });
  coordinator->OnLateEval([&progress](uint64_t round, double loss) { progress.LateEval(round, loss); });

  std::vector<ChildProcess> peers;
  const std::map<std::string, std::string> env = {{"OPENBLAS_NUM_THREADS", "1"},
                                                  {"OMP_NUM_THREADS", "1"}};
  // A list of devices is dealt to the peers in turn ("cuda,cpu": a job of GPU and CPU peers).
  std::vector<std::string> devices;
  for (size_t start = 0; start <= options.device.size();) {
    const size_t comma = std::min(options.device.find(',', start), options.device.size());
    devices.push_back(options.device.substr(start, comma - start));
    start = comma + 1;
  }
  for (uint32_t i = 0; i < spec.num_peers(); ++i) {
    const std::string name = "peer-" + std::to_string(i);
    std::vector<std::string> argv = {SelfExecutable(), "peer",
                                     "--coordinator", "127.0.0.1:" + std::to_string(coordinator->port()),
                                     "--job", job_id, "--name", name, "--data", corpus_dir,
                                     "--threads", "1", "--device", devices[i % devices.size()], "--coordinator-key",
                                     net::KeyToHex(coordinator->public_key())};
    TRIB_ASSIGN_OR_RETURN(ChildProcess child,
                          ChildProcess::Spawn(argv, env, run_dir + "/" + name + ".log"));
    peers.push_back(std::move(child));
  }

  // Watch both the job and the children: a peer that dies before joining would otherwise leave
  // the coordinator waiting for its Hello forever.
  Result<JobOutcome> outcome = DeadlineExceeded("not finished");
  for (;;) {
    outcome = coordinator->Wait(DeadlineAfter(Millis(500)));
    if (outcome.ok()) break;
    for (size_t i = 0; i < peers.size(); ++i) {
      auto code = peers[i].Poll();
      if (code && *code != 0) {
        progress.Done();
        return Aborted("peer-" + std::to_string(i) + " exited with code " + std::to_string(*code) +
                       "; see " + run_dir + "/peer-" + std::to_string(i) + ".log");
      }
    }
  }
  progress.Done();
  for (size_t i = 0; i < peers.size(); ++i) {
    auto code = peers[i].Wait(DeadlineAfter(Millis(30000)));
    if (!code.ok() || *code != 0) {
      spdlog::warn("peer-{} ended with {}", i, code.ok() ? std::to_string(*code) : code.status().ToString());
    }
  }
  if (!outcome->status.ok()) return outcome->status;

  const RoundSummary& last = outcome->rounds.back();
  const double run_eval = last.eval_loss.value_or(-1);
  nlohmann::json summary = {
      {"job_id", job_id},
      {"mode", runtime::ModeName(spec.mode())},
      {"peers", spec.num_peers()},
      {"rounds", spec.rounds()},
      {"inner_steps", spec.inner_steps()},
      {"tributary", {{"eval_loss", run_eval}, {"tokens", progress.total_tokens()},
                     {"wall_seconds", outcome->wall_seconds},
                     {"bytes_on_wire", progress.total_bytes()},
                     {"theta_digest", last.theta_digest}}}};

  std::printf("\n| run | eval loss | tokens | wall time | bytes on the wire |\n");
  std::printf("|---|---:|---:|---:|---:|\n");
  std::printf("| Tributary %s, %u peers | %.4f | %llu | %.1f s | %s |\n",
              runtime::ModeName(spec.mode()).c_str(), spec.num_peers(), run_eval,
              static_cast<unsigned long long>(progress.total_tokens()), outcome->wall_seconds,
              HumanBytes(static_cast<double>(progress.total_bytes())).c_str());
  std::fflush(stdout);

  if (options.run_reference) {
    std::printf("(training the single-process reference on the same tokens...)\n");
    std::fflush(stdout);
    runtime::PinComputeThreads(options.reference_threads);
    runtime::ReferenceOptions ropts;
    ropts.corpus_dir = corpus_dir;
    TRIB_ASSIGN_OR_RETURN(runtime::ReferenceOutcome ref, runtime::RunReference(spec, ropts));
    std::printf("| single process, batch ×%u | %.4f | %llu | %.1f s | 0 B |\n", spec.num_peers(),
                ref.final_eval_loss, static_cast<unsigned long long>(ref.tokens),
                ref.wall_seconds);
    summary["reference"] = {{"eval_loss", ref.final_eval_loss}, {"tokens", ref.tokens},
                            {"wall_seconds", ref.wall_seconds}};
    std::printf("\neval loss ratio (Tributary / reference): %.3f\n", run_eval / ref.final_eval_loss);
  }
  std::ofstream(run_dir + "/summary.json") << summary.dump(2) << "\n";
  std::printf("summary written to %s/summary.json\n", run_dir.c_str());
  return Status::Ok();
}

}  // namespace tributary::launcher
