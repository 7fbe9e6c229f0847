// tributary-gloo-ddp: one rank of the DDP baseline that users run today. It trains exactly the
// job a Tributary peer would (runtime::Trainer, mode ddp, same spec, same shard of the data), but
// averages gradients with Gloo's AllreduceRing<float> over Gloo's TCP transport, and there is
// no coordinator: FileStore rendezvous, then every rank runs all rounds. Rank 0 evaluates after
// each round, as a Tributary peer of rank 0 does.
//
// tributary-bench starts one per network namespace and reads the JSON lines it writes to --out:
//   {"event":"start","t":UNIX}                       after rendezvous and a barrier
//   {"event":"round","round":R,"t_end":UNIX,...}     after each round (rank 0: after its eval)
//   {"event":"done","t":UNIX,"theta_identical":B}    after the last round
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "benchmarks/wanbench/gloo_averager.h"
#include "core/logging.h"
#include "runtime/job_spec.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"

namespace tributary::wanbench {
namespace {

struct Flags {
  int rank = 0, world = 0;
  std::string host, store_dir, out, data, job_file, mode = "ddp";
  int64_t rounds = -1, inner_steps = -1, seed = -1;
  int threads = 1, timeout_s = 300;
};

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Result<v1::JobSpec> BuildSpec(const Flags& f) {
  v1::JobSpec spec = runtime::DefaultJobSpec();
  if (!f.job_file.empty()) TRIB_RETURN_IF_ERROR(runtime::ApplyTomlFile(f.job_file, spec));
  TRIB_ASSIGN_OR_RETURN(v1::Mode mode, runtime::ParseMode(f.mode));
  if (mode != v1::MODE_DDP) return InvalidArgument("tributary-gloo-ddp trains --mode ddp only");
  spec.set_mode(mode);
  spec.set_num_peers(static_cast<uint32_t>(f.world));
  if (f.rounds >= 0) spec.set_rounds(static_cast<uint32_t>(f.rounds));
  if (f.inner_steps >= 0) spec.set_inner_steps(static_cast<uint32_t>(f.inner_steps));
  if (f.seed >= 0) spec.set_seed(static_cast<uint64_t>(f.seed));
  TRIB_RETURN_IF_ERROR(runtime::ValidateJobSpec(spec));
  return spec;
}

Status Run(const Flags& f) {
  TRIB_ASSIGN_OR_RETURN(v1::JobSpec spec, BuildSpec(f));
  runtime::PinComputeThreads(f.threads);
  std::ofstream out(f.out, std::ios::app);
  if (!out) return IoError("cannot write " + f.out);
  auto emit = [&](const nlohmann::json& j) { out << j.dump() << "\n" << std::flush; };

  TRIB_ASSIGN_OR_RETURN(runtime::TrainingData data, runtime::LoadTrainingData(f.data, spec));
  TRIB_ASSIGN_OR_RETURN(auto trainer,
                        runtime::Trainer::Create(spec, data,
                                                 runtime::WorkerPlacement{static_cast<uint32_t>(f.rank),
                                                                          static_cast<uint32_t>(f.world), 0}));
  GlooGroup::Options options{f.rank, f.world, f.host, f.store_dir, std::chrono::seconds(f.timeout_s)};
  TRIB_ASSIGN_OR_RETURN(auto gloo, GlooGroup::Connect(options));
  TRIB_RETURN_IF_ERROR(gloo->Barrier());
  spdlog::info("rank {}/{} connected at {}: {} parameters, {} rounds × {} steps", f.rank, f.world,
               f.host, trainer->num_parameters(), spec.rounds(), spec.inner_steps());
  emit({{"event", "start"}, {"t", UnixNow()}, {"rank", f.rank}, {"params", trainer->num_parameters()}});

  runtime::Averager average = [&](std::span<float> values) { return gloo->Average(values); };
  for (uint32_t r = 0; r < spec.rounds(); ++r) {
    const uint64_t sent_before = gloo->bytes_sent();
    TRIB_ASSIGN_OR_RETURN(runtime::RoundStats stats, trainer->RunRound(average));
    nlohmann::json line = {{"event", "round"},
                           {"rank", f.rank},
                           {"round", stats.round},
                           {"train_loss", stats.train_loss},
                           {"tokens", stats.tokens},
                           {"compute_s", stats.compute_seconds},
                           {"comm_s", stats.comm_seconds},
                           {"bytes_sent", gloo->bytes_sent() - sent_before}};
    if (f.rank == 0) {
      TRIB_ASSIGN_OR_RETURN(double eval, trainer->EvalLoss());
      line["eval_loss"] = eval;
    }
    line["t_end"] = UnixNow();
    emit(line);
    spdlog::info("round {}: loss {:.4f}, compute {:.2f} s, all-reduce {:.2f} s", stats.round,
                 stats.train_loss, stats.compute_seconds, stats.comm_seconds);
  }
  TRIB_ASSIGN_OR_RETURN(bool same, gloo->SameOnAllRanks(trainer->ThetaDigest()));
  emit({{"event", "done"}, {"t", UnixNow()}, {"rank", f.rank},
        {"theta_digest", ToHex(trainer->ThetaDigest())}, {"theta_identical", same}});
  return Status::Ok();
}

}  // namespace
}  // namespace tributary::wanbench

int main(int argc, char** argv) {
  using namespace tributary::wanbench;
  Flags f;
  CLI::App app{"One rank of DDP over Gloo's AllreduceRing (the baseline of tributary-bench)"};
  app.add_option("--rank", f.rank)->required();
  app.add_option("--world", f.world)->required()->check(CLI::Range(1, 1024));
  app.add_option("--host", f.host, "this rank's address (Gloo's TCP device binds to it)")->required();
  app.add_option("--store", f.store_dir, "FileStore directory shared by every rank")->required();
  app.add_option("--out", f.out, "JSON lines go here")->required();
  app.add_option("--data", f.data, "corpus directory")->required();
  app.add_option("--job-file", f.job_file, "job TOML (keys as in jobs/demo.toml)");
  app.add_option("--mode", f.mode, "ddp (the only mode)");
  app.add_option("--rounds", f.rounds);
  app.add_option("--inner-steps", f.inner_steps, "steps per round");
  app.add_option("--seed", f.seed);
  app.add_option("--threads", f.threads, "compute threads")->capture_default_str();
  app.add_option("--timeout-s", f.timeout_s, "Gloo's timeout for any one operation")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (f.rank < 0 || f.rank >= f.world) {
    std::fprintf(stderr, "--rank must be in 0..%d\n", f.world - 1);
    return 2;
  }
  tributary::InitLogging("gloo rank " + std::to_string(f.rank), "info");
  tributary::Status st = Run(f);
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  return 0;
}
