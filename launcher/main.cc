// `tributary`: the single executable. Subcommands:
//   demo         coordinator + N local peer processes + single-process reference, with a table
//   coordinator  serve one job to peers
//   peer         join a coordinator and train
//   train        the single-process reference (supports --checkpoint / --resume)
//   bench        `tributary-bench` (benchmarks/wanbench), exec'd from beside this binary
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <unistd.h>

#include "core/digest.h"
#include "core/files.h"
#include "core/logging.h"
#include "launcher/client.h"
#include "launcher/ledger_cli.h"
#include "launcher/coordinator.h"
#include "launcher/demo.h"
#include "launcher/process.h"
#include "models/corpus.h"
#include "net/identity.h"
#include "net/tcp_tuning.h"
#include "runtime/calibration.h"
#include "runtime/job_spec.h"
#include "runtime/peer.h"
#include "runtime/reference.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"
#include "verifier/replay.h"

namespace tributary {
namespace {

namespace v1 = ::tributary::v1;

// Job options shared by every subcommand that defines a job.
struct JobFlags {
  std::string job_file;
  std::string mode;
  std::string model;
  std::string codec, aggregator;
  int64_t rounds = -1, inner_steps = -1, peers = -1, batch_size = -1, seed = -1;
  int64_t n_layer = -1, n_head = -1, d_model = -1, context = -1, round_timeout_ms = -1, checkpoint_every = -1;
  int64_t min_peers = -1, heartbeat_ms = -1, liveness_timeout_ms = -1, gather_ms = -1;
  int64_t verify_samples = -1, verifiers_per_step = -1, group_size = -1, streams = -1;
  double async_eager_fraction = -1;
  int64_t async_apply_step = -1, eval_every = -1, opening_bulk_min_bytes = -1;
  bool eval_beside_training = false, async_apply_when_ready = false;
  double inner_lr = -1, outer_lr = -1;
  std::vector<std::string> calibrations;

  void Register(CLI::App* app) {
    app->add_option("--job-file", job_file, "TOML job file (keys as in jobs/demo.toml)");
    app->add_option("--mode", mode, "ddp, diloco or diloco-async (runtime/async_outer.h)");
    app->add_option("--model", model, "gpt or mlp");
    app->add_option("--codec", codec, "fp32 (ring) or a compression codec: fp16, bf16, int8, int4, topk:F, powersgd:R, dct-topk:F");
    app->add_option("--aggregator", aggregator, "mean, trimmed_mean:B, median, centered_clip:TAU, multi_krum:F");
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
    app->add_option("--min-peers", min_peers, "a round starts once this many peers are ready");
    app->add_option("--heartbeat-ms", heartbeat_ms, "peer heartbeat interval");
    app->add_option("--gather-ms", gather_ms, "wait this long for more than min-peers before a round");
    app->add_option("--liveness-timeout-ms", liveness_timeout_ms, "a peer silent this long is dead");
    app->add_option("--verify-samples", verify_samples, "inner steps replayed per peer per round (0 = off)");
    app->add_option("--verifiers-per-step", verifiers_per_step, "verifier peers per sampled step");
    app->add_option("--streams", streams,
                    "TCP streams per ring edge, 1..16 (fp32 ring only; for long fat links one stream cannot fill)");
    app->add_option("--async-apply-step", async_apply_step,
                    "diloco-async: inner step at which the previous round's average is applied (0 = H/2, H = round end)");
    app->add_option("--async-eager-fraction", async_eager_fraction,
                    "diloco-async: share of its own last Δ a peer starts each round ahead by (0 = 0.75)");
    app->add_flag("--async-apply-when-ready", async_apply_when_ready,
                  "diloco-async: steps go on past the apply step until the average arrives (runs then depend on timing)");
    app->add_option("--eval-every", eval_every, "rank 0 evaluates every N rounds and after the last (0/1 = every round)");
    app->add_flag("--eval-beside-training", eval_beside_training,
                  "rank 0 evaluates on its own thread while training goes on; the loss is reported a round or more later");
    app->add_option("--opening-bulk-min-bytes", opening_bulk_min_bytes,
                    "verifier: openings at least this large are fetched from the prover, not relayed (0 = 1 MiB)");
    app->add_option("--calibration", calibrations,
                    "verifier: a tolerance calibration file (tributary calibrate) for a pair of determinism classes; repeatable");
    app->add_option("--group-size", group_size,
                    "peers averaged together per round; 0 = everyone (diloco; larger pools are re-mixed every round)");
  }

  Result<v1::JobSpec> Build() const {
    v1::JobSpec spec = runtime::DefaultJobSpec();
    if (!job_file.empty()) TRIB_RETURN_IF_ERROR(runtime::ApplyTomlFile(job_file, spec));
    if (!mode.empty()) {
      TRIB_ASSIGN_OR_RETURN(v1::Mode m, runtime::ParseMode(mode));
      spec.set_mode(m);
    }
    if (!model.empty()) spec.set_model(model);
    if (!codec.empty()) spec.set_codec(codec);
    if (!aggregator.empty()) spec.set_aggregator(aggregator);
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
    if (min_peers >= 0) spec.set_min_peers(static_cast<uint32_t>(min_peers));
    if (heartbeat_ms >= 0) spec.set_heartbeat_ms(static_cast<uint32_t>(heartbeat_ms));
    if (gather_ms >= 0) spec.set_gather_ms(static_cast<uint32_t>(gather_ms));
    if (liveness_timeout_ms >= 0) spec.set_liveness_timeout_ms(static_cast<uint32_t>(liveness_timeout_ms));
    if (verify_samples >= 0) spec.set_verify_samples(static_cast<uint32_t>(verify_samples));
    if (verifiers_per_step >= 0) spec.set_verifiers_per_step(static_cast<uint32_t>(verifiers_per_step));
    if (group_size >= 0) spec.set_group_size(static_cast<uint32_t>(group_size));
    if (streams >= 0) spec.set_streams(static_cast<uint32_t>(streams));
    if (async_apply_step >= 0) spec.set_async_apply_step(static_cast<uint32_t>(async_apply_step));
    if (async_eager_fraction >= 0) spec.set_async_eager_fraction(async_eager_fraction);
    if (eval_every >= 0) spec.set_eval_every(static_cast<uint32_t>(eval_every));
    if (eval_beside_training) spec.set_eval_beside_training(true);
    if (async_apply_when_ready) spec.set_async_apply_when_ready(true);
    if (opening_bulk_min_bytes >= 0) spec.set_opening_bulk_min_bytes(static_cast<uint64_t>(opening_bulk_min_bytes));
    for (const std::string& file : calibrations) TRIB_RETURN_IF_ERROR(runtime::AddCalibrationFile(file, spec));
    TRIB_RETURN_IF_ERROR(runtime::ValidateJobSpec(spec));
    return spec;
  }
};

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

struct CoordinatorFlags {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string data;
  std::string port_file;
  std::string db = ":memory:";
  std::string identity;
  bool no_job = false;
  bool verify_before_commit = false;
  std::optional<uint64_t> crash_after_recording_round;
};

int RunCoordinatorCommand(const JobFlags& flags, const CoordinatorFlags& cf) {
  launcher::Coordinator::Options options;
  options.host = cf.host;
  options.port = static_cast<uint16_t>(cf.port);
  options.db_path = cf.db;
  options.verify_before_commit = cf.verify_before_commit;
  options.crash_after_recording_round = cf.crash_after_recording_round;
  if (!cf.identity.empty()) {
    auto id = net::Identity::LoadFile(cf.identity);
    if (!id.ok()) return Fail(id.status());
    options.identity = *id;
  }
  // A coordinator restarted on its database resumes the jobs stored there; a job given by
  // flags is added (if new).
  if (!cf.no_job) {
    auto spec = flags.Build();
    if (!spec.ok()) return Fail(spec.status());
    spec->clear_corpus_digest();  // always the corpus in --data
    Status published = runtime::PublishJobDigests(*spec, cf.data);
    if (!published.ok()) return Fail(published);
    options.spec = *spec;
  }
  auto coordinator = launcher::Coordinator::Start(options);
  if (!coordinator.ok()) return Fail(coordinator.status());
  const std::string key = net::KeyToHex((*coordinator)->public_key());
  std::printf("job id: %s\ncoordinator key: %s\nlistening on %s:%u\n", (*coordinator)->job_id().c_str(),
              key.c_str(), cf.host.c_str(), (*coordinator)->port());
  std::fflush(stdout);
  if (!cf.port_file.empty()) {
    Status st = WriteFileAtomically(cf.port_file, std::to_string((*coordinator)->port()) + " " +
                                                      (*coordinator)->job_id() + " " + key + "\n");
    if (!st.ok()) return Fail(st);
  }
  (*coordinator)->OnRound([](const launcher::RoundSummary& s) {
    spdlog::info("round {} complete: {} peers, train loss {:.4f}{}, θ {}, {:.2f} s, {} attempt(s)",
                 s.round, s.peers, s.train_loss,
                 s.eval_loss ? fmt::format(", eval loss {:.4f}", *s.eval_loss) : "",
                 s.theta_digest.substr(0, 12), s.wall_seconds, s.attempts);
  });
  auto outcome = (*coordinator)->Wait();
  if (!outcome.ok()) return Fail(outcome.status());
  if (!outcome->status.ok()) return Fail(outcome->status);
  std::printf("job %s complete: %zu rounds in %.1f s\n", (*coordinator)->job_id().c_str(),
              outcome->rounds.size(), outcome->wall_seconds);
  return 0;
}

std::atomic<bool> g_stop{false};

void OnSignal(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // second Ctrl-C: leave at once
}

// Shared by `peer` and `join` (the provider's name for it).
struct PeerFlags {
  runtime::PeerOptions options;
  std::string coordinator;
  std::string coordinator_key;
  int threads = 1;
  std::string tcp_congestion = net::kDefaultCongestionControl;

  void Register(CLI::App* app) {
    options.corpus_dir = DefaultCorpus();
    app->add_option("--coordinator", coordinator, "HOST:PORT")->required();
    app->add_option("--job", options.job_id, "job id printed by the coordinator / launch")->required();
    app->add_option("--coordinator-key", coordinator_key, "coordinator's public key (hex) to verify");
    app->add_option("--identity", options.identity_path, "Ed25519 key file (tributary keygen)");
    app->add_option("--invite", options.invite_token, "invite token, for invitation-only jobs");
    app->add_option("--name", options.name, "name shown in logs and status");
    app->add_option("--data", options.corpus_dir, "corpus directory")->capture_default_str();
    app->add_option("--listen-host", options.listen_host, "address other peers dial")->capture_default_str();
    app->add_option("--checkpoint-dir", options.checkpoint_dir, "write checkpoints here");
    app->add_option("--reconnect-timeout-ms", options.reconnect_timeout_ms,
                    "keep trying a lost coordinator this long")->capture_default_str();
    app->add_option("--threads", threads, "compute threads (same on every peer)")->capture_default_str();
    app->add_option("--device", options.device, "train and replay on: cpu, cuda, cuda:N")->capture_default_str();
    app->add_flag("--relay-only", options.relay_only,
                  "behind NAT: accept no connections; neighbours reach this peer via the coordinator's relay");
    app->add_option("--tcp-congestion", tcp_congestion,
                    "TCP congestion control for links to other hosts (\"\" = the kernel's default)")
        ->capture_default_str();
  }

  int Run() {
    net::SetPreferredCongestionControl(tcp_congestion);
    auto address = launcher::ParseCoordinator(coordinator, coordinator_key);
    if (!address.ok()) return Fail(address.status());
    options.coordinator_host = address->host;
    options.coordinator_port = address->port;
    options.coordinator_key = address->key;
    options.stop = &g_stop;
    std::signal(SIGINT, OnSignal);
    std::signal(SIGTERM, OnSignal);
    runtime::PinComputeThreads(threads);
    auto outcome = runtime::RunPeer(options);
    if (!outcome.ok()) return Fail(outcome.status());
    std::printf("peer %s: %llu rounds, θ %s, contributed %llu rounds, %llu bytes sent%s\n",
                options.name.c_str(), static_cast<unsigned long long>(outcome->rounds_completed),
                outcome->theta_digest.c_str(), static_cast<unsigned long long>(outcome->rounds_contributed),
                static_cast<unsigned long long>(outcome->bytes_sent), outcome->left_early ? " (left early)" : "");
    return 0;
  }
};

// `tributary bench ARGS...` replaces this process with tributary-bench, so signals (Ctrl-C,
// SIGKILL) reach the benchmark itself and its namespace clean-up works as documented. Linking the
// runner here instead would pull Gloo and the emulator into every peer's binary.
int ExecBench(const std::vector<std::string>& args) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  std::vector<std::filesystem::path> candidates;
  if (!ec) {
    candidates.push_back(self.parent_path() / "tributary-bench");  // installed side by side
    candidates.push_back(self.parent_path().parent_path() / "benchmarks/wanbench/tributary-bench");  // build tree
  }
  for (const auto& path : candidates) {
    if (::access(path.c_str(), X_OK) != 0) continue;
    std::vector<std::string> owned = {path.string()};
    owned.insert(owned.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : owned) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(path.c_str(), argv.data());
    return Fail(Internal("cannot run " + path.string() + ": " + std::strerror(errno)));
  }
  std::string looked;
  for (const auto& path : candidates) looked += (looked.empty() ? "" : ", ") + path.string();
  return Fail(NotFound("tributary-bench not found (looked at " + looked +
                       "); build it: ninja -C <build> tributary-bench"));
}

Result<net::Identity> IdentityOrFresh(const std::string& path) {
  if (path.empty()) return net::Identity::Generate();
  return net::Identity::LoadFile(path);
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
  std::string demo_device = "cpu";
  auto* demo = app.add_subcommand("demo", "run a local multi-peer training job end to end");
  demo_flags.Register(demo);
  demo->add_option("--data", demo_data, "corpus directory")->capture_default_str();
  demo->add_option("--run-dir", demo_run_dir, "where peer logs and summary.json go");
  demo->add_flag("--no-reference", demo_no_reference, "skip the single-process reference");
  demo->add_option("--device", demo_device, "peers train and replay on: cpu, cuda, cuda:N, or a list dealt in turn (cuda,cpu)")->capture_default_str();

  // coordinator
  JobFlags coord_flags;
  CoordinatorFlags cf;
  cf.data = DefaultCorpus();
  auto* coord = app.add_subcommand("coordinator", "serve jobs to peers");
  coord_flags.Register(coord);
  coord->add_option("--host", cf.host, "listen address")->capture_default_str();
  coord->add_option("--port", cf.port, "listen port (0 = any)")->capture_default_str();
  coord->add_option("--data", cf.data, "corpus directory (its digest goes into the job)")->capture_default_str();
  coord->add_option("--port-file", cf.port_file, "write 'PORT JOB_ID KEY' here once listening");
  coord->add_option("--db", cf.db, "SQLite state file; restarting on it resumes its jobs")->capture_default_str();
  coord->add_option("--identity", cf.identity, "coordinator key file (default: a fresh key)");
  coord->add_flag("--no-job", cf.no_job, "host only the jobs in --db and those submitted by launch");
  coord->add_flag("--verify-before-commit", cf.verify_before_commit,
                  "verifier: commit a round only once its challenges are settled (excludes a caught cheater)");
  coord->add_option("--crash-after-recording-round", cf.crash_after_recording_round,
                    "fault injection (recovery tests): die right after recording round N, before peers hear of it")
      ->group("Fault injection");

  // peer / join
  PeerFlags peer_flags, join_flags;
  auto* peer = app.add_subcommand("peer", "join a coordinator and train (same as join)");
  peer_flags.Register(peer);
  auto* join = app.add_subcommand("join", "contribute this machine to a job until stopped (Ctrl-C leaves)");
  join_flags.Register(join);

  // keygen
  std::string keygen_out;
  auto* keygen = app.add_subcommand("keygen", "create an Ed25519 identity (mode 0600, never overwritten)");
  keygen->add_option("--out", keygen_out, "key file to create")->required();

  // launch
  JobFlags launch_flags;
  std::string launch_file, launch_coordinator, launch_key, launch_identity, launch_data = DefaultCorpus();
  auto* launch = app.add_subcommand("launch", "submit a job (TOML) to a coordinator; prints the job id");
  launch->add_option("job", launch_file, "job TOML file")->required();
  launch->add_option("--coordinator", launch_coordinator, "HOST:PORT")->required();
  launch->add_option("--coordinator-key", launch_key, "coordinator's public key (hex)");
  launch->add_option("--identity", launch_identity, "researcher key file that signs the job");
  launch->add_option("--data", launch_data, "corpus directory (its digest goes into the job)")->capture_default_str();

  // status
  std::string status_coordinator, status_key, status_job;
  auto* status = app.add_subcommand("status", "jobs, rounds, loss and peers of a coordinator");
  status->add_option("--coordinator", status_coordinator, "HOST:PORT")->required();
  status->add_option("--coordinator-key", status_key, "coordinator's public key (hex)");
  status->add_option("--job", status_job, "only this job");

  // ledger / verify-receipt (launcher/ledger_cli.h)
  std::string ledger_coordinator, ledger_key, ledger_job, ledger_export, receipt_file, receipt_key;
  auto* ledger = app.add_subcommand("ledger", "the verifier ledger: work committed, verified, verdicts, bans");
  ledger->add_option("--coordinator", ledger_coordinator, "HOST:PORT")->required();
  ledger->add_option("--coordinator-key", ledger_key, "coordinator's public key (hex)");
  ledger->add_option("--job", ledger_job, "only this job");
  ledger->add_option("--export-receipts", ledger_export, "write every signed receipt into this directory");
  auto* verify_receipt = app.add_subcommand("verify-receipt", "check a receipt offline with the coordinator's key");
  verify_receipt->add_option("receipt", receipt_file, "receipt file (from ledger --export-receipts)")->required();
  verify_receipt->add_option("--coordinator-key", receipt_key, "coordinator's public key (hex)")->required();

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

  // calibrate
  JobFlags calibrate_flags;
  std::string calibrate_data = DefaultCorpus(), calibrate_prover = "cpu:1", calibrate_verifier = "cpu:2",
              calibrate_out;
  int calibrate_steps = 64;
  double calibrate_safety = 4.0;
  auto* calibrate = app.add_subcommand(
      "calibrate", "fit the replay tolerance one determinism class needs to verify another's steps of a job");
  calibrate_flags.Register(calibrate);
  calibrate->add_option("--data", calibrate_data, "corpus directory")->capture_default_str();
  calibrate->add_option("--prover", calibrate_prover, "the side that trains: DEVICE[:THREADS]")->capture_default_str();
  calibrate->add_option("--verifier", calibrate_verifier, "the side that replays: DEVICE[:THREADS]")
      ->capture_default_str();
  calibrate->add_option("--steps", calibrate_steps, "honest steps to replay")->capture_default_str();
  calibrate->add_option("--safety-factor", calibrate_safety, "limits = largest honest difference × this")
      ->capture_default_str();
  calibrate->add_option("--out", calibrate_out, "calibration file, for the job's --calibration")->required();

  // bench: everything after the word goes to tributary-bench unchanged (its --help too).
  auto* bench = app.add_subcommand("bench", "run a WAN benchmark scenario (tributary-bench; docs/BENCHMARKS.md)");
  bench->prefix_command();
  bench->set_help_flag();

  CLI11_PARSE(app, argc, argv);

  if (*bench) return ExecBench(bench->remaining());

  if (*demo) {
    InitLogging("demo", log_level == "info" ? "warn" : log_level);
    auto spec = demo_flags.Build();
    if (!spec.ok()) return Fail(spec.status());
    launcher::DemoOptions options;
    options.spec = *spec;
    options.corpus_dir = demo_data;
    options.run_dir = demo_run_dir;
    options.run_reference = !demo_no_reference;
    options.device = demo_device;
    Status st = launcher::RunDemo(options);
    return st.ok() ? 0 : Fail(st);
  }
  if (*coord) {
    InitLogging("coordinator", log_level);
    return RunCoordinatorCommand(coord_flags, cf);
  }
  if (*peer || *join) {
    PeerFlags& flags = *peer ? peer_flags : join_flags;
    InitLogging(flags.options.name.empty() ? "peer" : flags.options.name, log_level);
    return flags.Run();
  }
  if (*keygen) {
    InitLogging("keygen", log_level);
    net::Identity id = net::Identity::Generate();
    Status st = id.WriteFile(keygen_out);
    if (!st.ok()) return Fail(st);
    std::printf("identity written to %s (public key %s, also in %s.pub)\n", keygen_out.c_str(),
                net::KeyToHex(id.public_key()).c_str(), keygen_out.c_str());
    return 0;
  }
  if (*launch) {
    InitLogging("launch", log_level);
    launch_flags.job_file = launch_file;
    auto spec = launch_flags.Build();
    if (!spec.ok()) return Fail(spec.status());
    Status published = runtime::PublishJobDigests(*spec, launch_data);
    if (!published.ok()) return Fail(published);
    auto address = launcher::ParseCoordinator(launch_coordinator, launch_key);
    if (!address.ok()) return Fail(address.status());
    auto researcher = IdentityOrFresh(launch_identity);
    if (!researcher.ok()) return Fail(researcher.status());
    auto job_id = launcher::SubmitJob(*address, *researcher, *spec);
    if (!job_id.ok()) return Fail(job_id.status());
    std::printf("%s\n", job_id->c_str());
    return 0;
  }
  if (*ledger) {
    InitLogging("ledger", log_level == "info" ? "warn" : log_level);
    auto address = launcher::ParseCoordinator(ledger_coordinator, ledger_key);
    if (!address.ok()) return Fail(address.status());
    auto reply = launcher::QueryLedger(*address, net::Identity::Generate(), ledger_job);
    if (!reply.ok()) return Fail(reply.status());
    auto receipts = launcher::CheckedReceipts(*reply, address->key);
    if (!receipts.ok()) return Fail(receipts.status());
    std::printf("%s", launcher::FormatLedger(*receipts, *reply).c_str());
    if (!ledger_export.empty()) {
      auto written = launcher::ExportReceipts(*receipts, *net::KeyFromBytes(reply->coordinator_key()), ledger_export);
      if (!written.ok()) return Fail(written.status());
      std::printf("%zu receipts written to %s\n", *written, ledger_export.c_str());
    }
    return 0;
  }
  if (*verify_receipt) {
    InitLogging("verify-receipt", log_level == "info" ? "warn" : log_level);
    auto key = net::KeyFromHex(receipt_key);
    if (!key.ok()) return Fail(key.status());
    auto receipt = launcher::VerifyReceiptFile(receipt_file, *key);
    if (!receipt.ok()) return Fail(receipt.status());
    std::printf("valid: %s\n", launcher::FormatReceipt(receipt->body).c_str());
    return 0;
  }
  if (*status) {
    InitLogging("status", log_level == "info" ? "warn" : log_level);
    auto address = launcher::ParseCoordinator(status_coordinator, status_key);
    if (!address.ok()) return Fail(address.status());
    auto reply = launcher::QueryStatus(*address, net::Identity::Generate());
    if (!reply.ok()) return Fail(reply.status());
    std::printf("%s", launcher::FormatStatus(*reply, status_job).c_str());
    return 0;
  }
  if (*calibrate) {
    InitLogging("calibrate", log_level);
    auto spec = calibrate_flags.Build();
    if (!spec.ok()) return Fail(spec.status());
    auto prover = runtime::ParseCalibrationSide(calibrate_prover);
    if (!prover.ok()) return Fail(prover.status());
    auto verifier_side = runtime::ParseCalibrationSide(calibrate_verifier);
    if (!verifier_side.ok()) return Fail(verifier_side.status());
    auto data = runtime::LoadTrainingData(calibrate_data, *spec);
    if (!data.ok()) return Fail(data.status());
    auto report = runtime::CalibrateTolerance(*spec, *data, *prover, *verifier_side, calibrate_steps, calibrate_safety);
    if (!report.ok()) return Fail(report.status());
    const verifier::ToleranceCalibration& c = report->calibration;
    if (Status st = WriteFileAtomically(calibrate_out, verifier::EncodeCalibration(c)); !st.ok()) return Fail(st);
    std::printf("prover   %s\nverifier %s\n%llu honest steps (%llu replayed bit for bit): largest difference %.3e "
                "(loss %.3e); limits ×%.1f: %.3e (loss %.3e)\nwritten to %s\n",
                c.prover_class.c_str(), c.verifier_class.c_str(), static_cast<unsigned long long>(c.samples),
                static_cast<unsigned long long>(report->bit_identical), c.max_relative_l2, c.max_loss_relative,
                c.safety_factor, c.relative_l2_limit(), c.loss_relative_limit(), calibrate_out.c_str());
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
