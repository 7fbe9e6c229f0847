// `tributary`: the single executable. Subcommands:
//   demo         coordinator + N local peer processes + single-process reference, with a table
//   coordinator  serve one job to peers
//   peer         join a coordinator and train
//   train        the single-process reference (supports --checkpoint / --resume)
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/digest.h"
#include "core/files.h"
#include "core/logging.h"
#include "launcher/coordinator.h"
#include "launcher/demo.h"
#include "launcher/process.h"
#include "models/corpus.h"
#include "runtime/job_spec.h"
#include "runtime/peer.h"
#include "runtime/reference.h"
#include "runtime/trainer.h"

namespace tributary {
namespace {

namespace v1 = ::tributary::v1;

// Job options shared by every subcommand that defines a job.
struct JobFlags {
  std::string job_file;
  std::string mode;
  std::string model;
  int64_t rounds = -1, inner_steps = -1, peers = -1, batch_size = -1, seed = -1;
  int64_t n_layer = -1, n_head = -1, d_model = -1, context = -1, round_timeout_ms = -1, checkpoint_every = -1;
  double inner_lr = -1, outer_lr = -1;

  void Register(CLI::App* app) {
    app->add_option("--job-file", job_file, "TOML job file (keys as in jobs/demo.toml)");
    app->add_option("--mode", mode, "ddp or diloco");
    app->add_option("--model", model, "gpt or mlp");
    app->add_option("--rounds", rounds, "outer rounds");
    app->add_option("--inner-steps", inner_steps, "inner steps per round (H)");
    app->add_option("--peers", peers, "number of peers in the job");
    app->add_option("--batch-size", batch_size, "sequences per peer per step");
    app->add_option("--seed", seed, "job seed (model init and batches)");
    app->add_option("--n-layer", n_layer, "transformer layers");
    app->add_option("--n-head", n_head, "attention heads");
    app->add_option("--d-model", d_model, "model width");
    app->add_option("--context", context, "sequence length in tokens");
    app->add_option("--inner-lr", inner_lr, "peak inner AdamW learning rate");
    app->add_option("--outer-lr", outer_lr, "outer Nesterov learning rate (diloco)");
    app->add_option("--round-timeout-ms", round_timeout_ms, "deadline of one round");
    app->add_option("--checkpoint-every", checkpoint_every, "rounds between peer checkpoints");
  }

  Result<v1::JobSpec> Build() const {
    v1::JobSpec spec = runtime::DefaultJobSpec();
    if (!job_file.empty()) TRIB_RETURN_IF_ERROR(runtime::ApplyTomlFile(job_file, spec));
    if (!mode.empty()) {
      TRIB_ASSIGN_OR_RETURN(v1::Mode m, runtime::ParseMode(mode));
      spec.set_mode(m);
    }
    if (!model.empty()) spec.set_model(model);
    if (rounds >= 0) spec.set_rounds(static_cast<uint32_t>(rounds));
    if (inner_steps >= 0) spec.set_inner_steps(static_cast<uint32_t>(inner_steps));
    if (peers >= 0) spec.set_num_peers(static_cast<uint32_t>(peers));
    if (batch_size >= 0) spec.set_batch_size(static_cast<uint32_t>(batch_size));
    if (seed >= 0) spec.set_seed(static_cast<uint64_t>(seed));
    if (n_layer >= 0) spec.set_n_layer(static_cast<uint32_t>(n_layer));
    if (n_head >= 0) spec.set_n_head(static_cast<uint32_t>(n_head));
    if (d_model >= 0) spec.set_d_model(static_cast<uint32_t>(d_model));
    if (context >= 0) spec.set_context(static_cast<uint32_t>(context));
    if (inner_lr > 0) spec.set_inner_lr(inner_lr);
    if (outer_lr > 0) spec.set_outer_lr(outer_lr);
    if (round_timeout_ms >= 0) spec.set_round_timeout_ms(static_cast<uint32_t>(round_timeout_ms));
    if (checkpoint_every >= 0) spec.set_checkpoint_every(static_cast<uint32_t>(checkpoint_every));
    TRIB_RETURN_IF_ERROR(runtime::ValidateJobSpec(spec));
    return spec;
  }
};

Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return InvalidArgument("expected HOST:PORT, got '" + text + "'");
  }
  int port = 0;
  try {
    port = std::stoi(text.substr(colon + 1));
  } catch (...) {
    port = 0;
  }
  if (port <= 0 || port > 65535) return InvalidArgument("bad port in '" + text + "'");
  return std::make_pair(text.substr(0, colon), static_cast<uint16_t>(port));
}

// models::DefaultCorpusDir() is relative to the working directory; when that does not exist,
// fall back to the checkout this binary was built in (<repo>/build/launcher/tributary).
std::string DefaultCorpus() {
  namespace fs = std::filesystem;
  const std::string local = models::DefaultCorpusDir();
  if (std::getenv("TRIBUTARY_DATA_DIR") || fs::exists(local)) return local;
  const fs::path beside_build = fs::path(launcher::SelfExecutable()).parent_path() / "../../data/moby-dick";
  std::error_code ec;
  if (fs::exists(beside_build, ec)) return fs::canonical(beside_build, ec).string();
  return local;
}

int Fail(const Status& status) {
  spdlog::error("{}", status.ToString());
  return 1;
}

int RunCoordinatorCommand(const JobFlags& flags, const std::string& host, int port,
                          const std::string& data, const std::string& port_file) {
  auto spec = flags.Build();
  if (!spec.ok()) return Fail(spec.status());
  auto corpus = runtime::CorpusDigest(data);
  if (!corpus.ok()) return Fail(corpus.status());
  spec->set_corpus_digest(DigestToBytes(*corpus));
  launcher::Coordinator::Options options;
  options.host = host;
  options.port = static_cast<uint16_t>(port);
  options.spec = *spec;
  auto coordinator = launcher::Coordinator::Start(options);
  if (!coordinator.ok()) return Fail(coordinator.status());
  std::printf("job id: %s\nlistening on %s:%u\n", (*coordinator)->job_id().c_str(), host.c_str(),
              (*coordinator)->port());
  std::fflush(stdout);
  if (!port_file.empty()) {
    Status st = WriteFileAtomically(port_file, std::to_string((*coordinator)->port()) + " " +
                                                   (*coordinator)->job_id() + "\n");
    if (!st.ok()) return Fail(st);
  }
  (*coordinator)->OnRound([](const launcher::RoundSummary& s) {
    spdlog::info("round {} complete: {} peers, train loss {:.4f}{}, θ {}", s.round, s.peers,
                 s.train_loss, s.eval_loss ? fmt::format(", eval loss {:.4f}", *s.eval_loss) : "",
                 s.theta_digest.substr(0, 12));
  });
  auto outcome = (*coordinator)->Wait();
  if (!outcome.ok()) return Fail(outcome.status());
  if (!outcome->status.ok()) return Fail(outcome->status);
  std::printf("job %s complete: %zu rounds in %.1f s\n", (*coordinator)->job_id().c_str(),
              outcome->rounds.size(), outcome->wall_seconds);
  return 0;
}

}  // namespace
}  // namespace tributary

int main(int argc, char** argv) {
  using namespace tributary;
  CLI::App app{"Tributary: decentralized data-parallel training over untrusted WAN peers"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");

  // demo
  JobFlags demo_flags;
  std::string demo_data = DefaultCorpus(), demo_run_dir;
  bool demo_no_reference = false;
  auto* demo = app.add_subcommand("demo", "run a local multi-peer training job end to end");
  demo_flags.Register(demo);
  demo->add_option("--data", demo_data, "corpus directory")->capture_default_str();
  demo->add_option("--run-dir", demo_run_dir, "where peer logs and summary.json go");
  demo->add_flag("--no-reference", demo_no_reference, "skip the single-process reference");

  // coordinator
  JobFlags coord_flags;
  std::string coord_host = "127.0.0.1", coord_data = DefaultCorpus(), coord_port_file;
  int coord_port = 0;
  auto* coord = app.add_subcommand("coordinator", "serve one job to peers");
  coord_flags.Register(coord);
  coord->add_option("--host", coord_host, "listen address")->capture_default_str();
  coord->add_option("--port", coord_port, "listen port (0 = any)")->capture_default_str();
  coord->add_option("--data", coord_data, "corpus directory (its digest goes into the job)")
      ->capture_default_str();
  coord->add_option("--port-file", coord_port_file, "write 'PORT JOB_ID' here once listening");

  // peer
  runtime::PeerOptions peer_options;
  peer_options.corpus_dir = DefaultCorpus();
  std::string peer_coordinator;
  int peer_threads = 1;
  auto* peer = app.add_subcommand("peer", "join a coordinator and train");
  peer->add_option("--coordinator", peer_coordinator, "HOST:PORT")->required();
  peer->add_option("--job", peer_options.job_id, "job id printed by the coordinator")->required();
  peer->add_option("--name", peer_options.name, "name shown in logs");
  peer->add_option("--data", peer_options.corpus_dir, "corpus directory")->capture_default_str();
  peer->add_option("--listen-host", peer_options.listen_host, "address neighbours dial")
      ->capture_default_str();
  peer->add_option("--checkpoint-dir", peer_options.checkpoint_dir, "write checkpoints here");
  peer->add_option("--threads", peer_threads, "compute threads (same on every peer)")
      ->capture_default_str();

  // train
  JobFlags train_flags;
  runtime::ReferenceOptions train_options;
  train_options.corpus_dir = DefaultCorpus();
  int train_threads = 1;
  int64_t train_equivalent = 0;
  auto* train = app.add_subcommand("train", "single-process reference training");
  train_flags.Register(train);
  train->add_option("--data", train_options.corpus_dir, "corpus directory")->capture_default_str();
  train->add_option("--equivalent-peers", train_equivalent,
                    "batch = batch_size × this (default: the job's peers)");
  train->add_option("--checkpoint", train_options.checkpoint_path, "checkpoint after each round");
  train->add_option("--resume", train_options.resume_from, "continue from this checkpoint");
  train->add_option("--stop-after", train_options.stop_after_rounds,
                    "stop once this many rounds are complete (the job keeps its length)");
  train->add_option("--threads", train_threads, "compute threads")->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  if (*demo) {
    InitLogging("demo", log_level == "info" ? "warn" : log_level);
    auto spec = demo_flags.Build();
    if (!spec.ok()) return Fail(spec.status());
    launcher::DemoOptions options;
    options.spec = *spec;
    options.corpus_dir = demo_data;
    options.run_dir = demo_run_dir;
    options.run_reference = !demo_no_reference;
    Status st = launcher::RunDemo(options);
    return st.ok() ? 0 : Fail(st);
  }
  if (*coord) {
    InitLogging("coordinator", log_level);
    return RunCoordinatorCommand(coord_flags, coord_host, coord_port, coord_data, coord_port_file);
  }
  if (*peer) {
    InitLogging(peer_options.name.empty() ? "peer" : peer_options.name, log_level);
    auto hp = ParseHostPort(peer_coordinator);
    if (!hp.ok()) return Fail(hp.status());
    peer_options.coordinator_host = hp->first;
    peer_options.coordinator_port = hp->second;
    runtime::PinComputeThreads(peer_threads);
    auto outcome = runtime::RunPeer(peer_options);
    if (!outcome.ok()) return Fail(outcome.status());
    std::printf("peer %s: %llu rounds, θ %s, %llu bytes sent\n", peer_options.name.c_str(),
                static_cast<unsigned long long>(outcome->rounds_completed),
                outcome->theta_digest.c_str(), static_cast<unsigned long long>(outcome->bytes_sent));
    return 0;
  }
  if (*train) {
    InitLogging("train", log_level);
    auto spec = train_flags.Build();
    if (!spec.ok()) return Fail(spec.status());
    train_options.equivalent_peers = static_cast<uint32_t>(std::max<int64_t>(0, train_equivalent));
    runtime::PinComputeThreads(train_threads);
    train_options.on_round = [](const runtime::RoundStats& s, double eval) {
      std::printf("round %llu: train loss %.4f, eval loss %.4f, %.1f s\n",
                  static_cast<unsigned long long>(s.round), s.train_loss, eval, s.compute_seconds);
      std::fflush(stdout);
    };
    auto outcome = runtime::RunReference(*spec, train_options);
    if (!outcome.ok()) return Fail(outcome.status());
    std::printf("trained %llu rounds, %llu tokens in %.1f s: eval loss %.4f, θ %s\n",
                static_cast<unsigned long long>(outcome->rounds),
                static_cast<unsigned long long>(outcome->tokens), outcome->wall_seconds,
                outcome->final_eval_loss, outcome->theta_digest.c_str());
    return 0;
  }
  return 0;
}
