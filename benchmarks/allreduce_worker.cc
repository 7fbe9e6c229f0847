// Worker side of the all-reduce benchmark: one rank, in its own process.
#include <gloo/allgather_ring.h>
#include <gloo/allreduce_ring.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/barrier_all_to_all.h>
#include <sys/resource.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "benchmarks/allreduce_bench.h"
#include "collectives/allreduce.h"
#include "collectives/gloo/gloo_rendezvous.h"
#include "collectives/mesh_communicator.h"
#include "collectives/ring.h"
#include "core/files.h"
#include "core/logging.h"
#include "core/seed.h"
#include "net/connection.h"
#include "net/io_thread.h"

namespace tributary::bench {
namespace {

using namespace std::chrono_literals;

constexpr char kJobId[] = "bench-allreduce";
constexpr double kMiB = 1 << 20;

// Rank r's input element i: uniform in [-1, 1) and computable anywhere, so any rank can build a
// float64 reference for any element.
uint64_t InputSeed(uint32_t rank, uint64_t bytes) { return DeriveSeed({rank, bytes}); }
float InputValue(uint64_t seed, uint64_t i) {
  return static_cast<float>(Mix64(seed ^ i) >> 40) * 0x1p-23f - 1.0f;
}

uint64_t HashFloats(std::span<const float> v) {
  uint64_t h = 0x5472696275746172ULL;
  size_t i = 0;
  for (; i + 2 <= v.size(); i += 2) {
    uint64_t word;
    std::memcpy(&word, v.data() + i, sizeof(word));
    h = Mix64(h ^ word);
  }
  if (i < v.size()) h = Mix64(h ^ std::bit_cast<uint32_t>(v[i]));
  return h;
}

using collectives::GlooCall;

class GlooGroup {
 public:
  static Result<std::unique_ptr<GlooGroup>> Connect(const BenchConfig& config) {
    auto group = std::unique_ptr<GlooGroup>(new GlooGroup());
    TRIB_ASSIGN_OR_RETURN(auto context,
                          collectives::ConnectGloo({.rank = static_cast<uint32_t>(config.rank),
                                                    .world = static_cast<uint32_t>(config.world),
                                                    .store_dir = config.dir + "/gloo",
                                                    .timeout = std::chrono::seconds(config.timeout_s)}));
    group->context_ = context;
    TRIB_RETURN_IF_ERROR(GlooCall("barrier setup", [&] {
      group->barrier_ = std::make_unique<gloo::BarrierAllToAll>(context);
    }));
    return group;
  }

  Status Barrier() {
    return GlooCall("barrier", [&] { barrier_->run(); });
  }

  template <typename T>
  Result<std::vector<T>> Allgather(const std::vector<T>& local) {
    std::vector<T> all(local.size() * context_->size);
    TRIB_RETURN_IF_ERROR(GlooCall("allgather", [&] {
      gloo::AllgatherRing<T> algo(context_, {local.data()}, all.data(),
                                  static_cast<int>(local.size()));
      algo.run();
    }));
    return all;
  }

  const std::shared_ptr<gloo::Context>& context() const { return context_; }

 private:
  GlooGroup() = default;
  std::shared_ptr<gloo::Context> context_;
  std::unique_ptr<gloo::BarrierAllToAll> barrier_;
};

std::string PortFile(const std::string& dir, uint32_t rank) {
  return dir + "/ring_port." + std::to_string(rank);
}

Result<std::vector<collectives::RingMember>> AwaitMembers(const BenchConfig& config,
                                                          Deadline deadline) {
  std::vector<collectives::RingMember> members;
  for (uint32_t r = 0; r < config.world; ++r) {
    while (!FileExists(PortFile(config.dir, r))) {
      if (Clock::now() >= deadline)
        return DeadlineExceeded("rank " + std::to_string(r) + " never wrote its port");
      std::this_thread::sleep_for(5ms);
    }
    TRIB_ASSIGN_OR_RETURN(std::string port, ReadWholeFile(PortFile(config.dir, r)));
    members.push_back(
        {r, "127.0.0.1", static_cast<uint16_t>(std::stoul(port)), "bench-" + std::to_string(r)});
  }
  return members;
}

// Element-wise max of a per-rank vector over all ranks.
Result<std::vector<double>> MaxOverRanks(GlooGroup& gloo, const std::vector<double>& local) {
  TRIB_ASSIGN_OR_RETURN(std::vector<double> all, gloo.Allgather(local));
  std::vector<double> out(local.size(), 0.0);
  for (size_t i = 0; i < all.size(); ++i)
    out[i % local.size()] = std::max(out[i % local.size()], all[i]);
  return out;
}

Result<double> SumOverRanks(GlooGroup& gloo, double local) {
  TRIB_ASSIGN_OR_RETURN(std::vector<double> all, gloo.Allgather(std::vector<double>{local}));
  double sum = 0;
  for (double v : all) sum += v;
  return sum;
}

// This process's CPU time so far (all threads, user + system).
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec * 1e-6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

Result<bool> SameOnAllRanks(GlooGroup& gloo, uint64_t hash) {
  TRIB_ASSIGN_OR_RETURN(std::vector<uint64_t> all, gloo.Allgather(std::vector<uint64_t>{hash}));
  return std::all_of(all.begin(), all.end(), [&](uint64_t h) { return h == all[0]; });
}

// Times one tensor size: ours (the MeshCommunicator, which picks the path), our plain ring over
// the same mesh, Gloo's ring and (optionally) Gloo's chunked ring, each on its own buffer
// refilled from the same input before every repetition.
class SizeRun {
 public:
  SizeRun(const BenchConfig& config, collectives::MeshCommunicator& comm, collectives::Ring& ring,
          GlooGroup& gloo, uint64_t bytes)
      : config_(config),
        comm_(comm),
        ring_(ring),
        gloo_(gloo),
        count_(bytes / sizeof(float)),
        input_(count_),
        ours_(count_),
        ring_out_(count_),
        gloo_out_(count_),
        chunked_out_(config.gloo_chunked ? count_ : 0) {
    result_.bytes = bytes;
    const uint64_t seed = InputSeed(config.rank, bytes);
    for (uint64_t i = 0; i < count_; ++i) input_[i] = InputValue(seed, i);
  }

  Result<SizeResult> Run() {
    // Gloo algorithms are built once per buffer (that is how Gloo is meant to be used) and
    // only run() is timed.
    std::unique_ptr<gloo::Algorithm> ring, chunked;
    TRIB_RETURN_IF_ERROR(GlooCall("algorithm setup", [&] {
      const int count = static_cast<int>(count_);
      ring = std::make_unique<gloo::AllreduceRing<float>>(
          gloo_.context(), std::vector<float*>{gloo_out_.data()}, count);
      if (config_.gloo_chunked) {
        chunked = std::make_unique<gloo::AllreduceRingChunked<float>>(
            gloo_.context(), std::vector<float*>{chunked_out_.data()}, count);
      }
    }));
    const uint32_t reps = result_.bytes >= config_.big_mib * kMiB     ? config_.big_reps
                          : result_.bytes <= config_.small_mib * kMiB ? config_.small_reps
                                                                       : config_.reps;
    std::vector<double> ours_s, ring_s, gloo_s, chunked_s;
    double cpu_ours = 0, cpu_ring = 0, cpu_gloo = 0, cpu_chunked = 0;
    for (uint32_t it = 0; it < config_.warmup + reps; ++it) {
      // Interleaved, so that drift (other load on the machine) hits all of them alike.
      const bool timed = it >= config_.warmup;
      TRIB_ASSIGN_OR_RETURN(double ours, TimeOurs(it, timed ? &cpu_ours : nullptr));
      TRIB_ASSIGN_OR_RETURN(double ring_time, TimeRing(it, timed ? &cpu_ring : nullptr));
      TRIB_ASSIGN_OR_RETURN(double theirs, TimeGloo(*ring, gloo_out_, timed ? &cpu_gloo : nullptr));
      double theirs_chunked = 0;
      if (chunked) {
        TRIB_ASSIGN_OR_RETURN(theirs_chunked,
                              TimeGloo(*chunked, chunked_out_, timed ? &cpu_chunked : nullptr));
      }
      if (!timed) continue;
      ours_s.push_back(ours);
      ring_s.push_back(ring_time);
      gloo_s.push_back(theirs);
      if (chunked) chunked_s.push_back(theirs_chunked);
    }
    TRIB_ASSIGN_OR_RETURN(result_.ours_s, MaxOverRanks(gloo_, ours_s));
    TRIB_ASSIGN_OR_RETURN(result_.ring_s, MaxOverRanks(gloo_, ring_s));
    result_.ours_path = std::string(collectives::PathName(comm_.last_path()));
    TRIB_ASSIGN_OR_RETURN(result_.gloo_s, MaxOverRanks(gloo_, gloo_s));
    if (chunked) {
      TRIB_ASSIGN_OR_RETURN(result_.gloo_chunked_s, MaxOverRanks(gloo_, chunked_s));
    }
    TRIB_ASSIGN_OR_RETURN(result_.ours_cpu_s, SumOverRanks(gloo_, cpu_ours / reps));
    TRIB_ASSIGN_OR_RETURN(result_.ring_cpu_s, SumOverRanks(gloo_, cpu_ring / reps));
    TRIB_ASSIGN_OR_RETURN(result_.gloo_cpu_s, SumOverRanks(gloo_, cpu_gloo / reps));
    TRIB_ASSIGN_OR_RETURN(result_.gloo_chunked_cpu_s, SumOverRanks(gloo_, cpu_chunked / reps));
    TRIB_RETURN_IF_ERROR(Check());
    return result_;
  }

 private:
  Result<double> TimeOurs(uint32_t it, double* cpu) {
    std::memcpy(ours_.data(), input_.data(), count_ * sizeof(float));
    TRIB_RETURN_IF_ERROR(gloo_.Barrier());
    const double cpu_start = CpuSeconds();
    const auto start = Clock::now();
    auto stats = comm_.Allreduce(
        ours_, {.tag = "bench/" + std::to_string(result_.bytes) + "/" + std::to_string(it),
                .deadline = DeadlineAfter(std::chrono::seconds(config_.timeout_s))});
    if (!stats.ok()) return stats.status();
    const double seconds = SecondsSince(start);
    if (cpu) *cpu += CpuSeconds() - cpu_start;
    return seconds;
  }

  // The ring path alone over the same mesh connections, whatever the size.
  Result<double> TimeRing(uint32_t it, double* cpu) {
    std::memcpy(ring_out_.data(), input_.data(), count_ * sizeof(float));
    TRIB_RETURN_IF_ERROR(gloo_.Barrier());
    const double cpu_start = CpuSeconds();
    const auto start = Clock::now();
    auto stats = collectives::RingAllreduce(
        ring_, ring_out_,
        {.tag = "ring/" + std::to_string(result_.bytes) + "/" + std::to_string(it),
         .deadline = DeadlineAfter(std::chrono::seconds(config_.timeout_s)),
         .segment_bytes = config_.segment_bytes});
    if (!stats.ok()) return stats.status();
    const double seconds = SecondsSince(start);
    if (cpu) *cpu += CpuSeconds() - cpu_start;
    return seconds;
  }

  Result<double> TimeGloo(gloo::Algorithm& algo, std::vector<float>& buffer, double* cpu) {
    std::memcpy(buffer.data(), input_.data(), count_ * sizeof(float));
    TRIB_RETURN_IF_ERROR(gloo_.Barrier());
    const double cpu_start = CpuSeconds();
    const auto start = Clock::now();
    TRIB_RETURN_IF_ERROR(GlooCall("all-reduce", [&] { algo.run(); }));
    const double seconds = SecondsSince(start);
    if (cpu) *cpu += CpuSeconds() - cpu_start;
    return seconds;
  }

  static double MaxAbsDiff(std::span<const float> a, std::span<const float> b) {
    float diff = 0;
    for (size_t i = 0; i < b.size(); ++i) diff = std::max(diff, std::fabs(a[i] - b[i]));
    return diff;
  }

  // A benchmark of a wrong result is worthless: the sums must agree with each other and with a
  // float64 reference, and ours must be the same bits on every rank.
  Status Check() {
    const double diff = std::max({MaxAbsDiff(ours_, gloo_out_), MaxAbsDiff(ours_, chunked_out_),
                                  MaxAbsDiff(ring_out_, gloo_out_)});
    double err = 0;
    const uint64_t stride = std::max<uint64_t>(1, count_ / 4096);
    for (uint64_t i = config_.rank; i < count_; i += stride) {
      double reference = 0;
      for (uint32_t r = 0; r < config_.world; ++r) {
        reference += InputValue(InputSeed(r, result_.bytes), i);
      }
      err = std::max(err, std::fabs(ours_[i] - reference));
    }
    TRIB_ASSIGN_OR_RETURN(auto maxima, MaxOverRanks(gloo_, {diff, err}));
    result_.max_abs_diff_ours_vs_gloo = maxima[0];
    result_.max_abs_err_ours_vs_fp64 = maxima[1];
    TRIB_ASSIGN_OR_RETURN(const bool ours_same, SameOnAllRanks(gloo_, HashFloats(ours_)));
    TRIB_ASSIGN_OR_RETURN(const bool ring_same, SameOnAllRanks(gloo_, HashFloats(ring_out_)));
    result_.ours_bit_identical = ours_same && ring_same;
    TRIB_ASSIGN_OR_RETURN(result_.gloo_bit_identical, SameOnAllRanks(gloo_, HashFloats(gloo_out_)));
    // Sums of `world` values in [-1, 1): world - 1 float32 roundings of partial sums below
    // `world`, each at most half an ulp of `world`; either sum may be off by that much.
    const double tolerance = 2.0 * config_.world * config_.world * 0x1p-24;
    result_.ok = result_.ours_bit_identical && maxima[0] <= tolerance && maxima[1] <= tolerance;
    return Status::Ok();
  }

  const BenchConfig& config_;
  collectives::MeshCommunicator& comm_;
  collectives::Ring& ring_;
  GlooGroup& gloo_;
  const uint64_t count_;
  std::vector<float> input_, ours_, ring_out_, gloo_out_, chunked_out_;
  SizeResult result_;
};

Status WorkerMain(const BenchConfig& config) {
  const Deadline setup = DeadlineAfter(std::chrono::seconds(config.timeout_s));
  net::IoThread io("bench-io");
  TRIB_ASSIGN_OR_RETURN(auto listener, net::Listener::Bind(io.context(), "127.0.0.1", 0));
  TRIB_RETURN_IF_ERROR(
      WriteFileAtomically(PortFile(config.dir, config.rank), std::to_string(listener->port())));
  TRIB_ASSIGN_OR_RETURN(auto members, AwaitMembers(config, setup));
  TRIB_ASSIGN_OR_RETURN(
      auto mesh, collectives::Mesh::Form(io, *listener, config.rank, members, kJobId, 0, setup));
  // Loopback has no measured link: the default estimate picks the path; the ring keeps the
  // configured segment size, as the plain ring below does.
  collectives::MeshCommunicatorOptions options{.segment_bytes = config.segment_bytes};
  if (config.direct_max_bytes >= 0) options.direct_max_bytes = static_cast<size_t>(config.direct_max_bytes);
  if (config.doubling_max_bytes >= 0) options.doubling_max_bytes = static_cast<size_t>(config.doubling_max_bytes);
  collectives::MeshCommunicator comm(std::move(mesh), options);
  const collectives::Mesh& m = comm.mesh();
  const uint32_t n = m.world();
  auto ring = collectives::Ring::Over(m.rank(), m.members(), m.job_id(), m.round(), m.attempt(),
                                      nullptr, n > 1 ? m.peer((m.rank() + 1) % n) : nullptr,
                                      n > 1 ? m.peer((m.rank() + n - 1) % n) : nullptr);
  TRIB_ASSIGN_OR_RETURN(auto gloo, GlooGroup::Connect(config));

  nlohmann::json sizes = nlohmann::json::array();
  for (double mib : config.sizes_mib) {
    const uint64_t bytes = static_cast<uint64_t>(mib * kMiB) / sizeof(float) * sizeof(float);
    SizeRun run(config, comm, *ring, *gloo, bytes);
    TRIB_ASSIGN_OR_RETURN(SizeResult result, run.Run());
    if (config.rank == 0) {
      spdlog::info("world {} size {} MiB: ours ({}) {:.3f} ms, ring {:.3f} ms, gloo {:.3f} ms{}",
                   config.world, bytes / kMiB, result.ours_path, Median(result.ours_s) * 1e3,
                   Median(result.ring_s) * 1e3, Median(result.gloo_s) * 1e3,
                   result.ok ? "" : " (CHECK FAILED)");
    }
    sizes.push_back(ToJson(result));
  }
  if (config.rank != 0) return Status::Ok();
  nlohmann::json out = {{"world", config.world}, {"sizes", sizes}};
  return WriteFileAtomically(config.dir + "/results.json", out.dump(2));
}

}  // namespace

int RunWorker(const BenchConfig& config) {
  InitLogging("rank " + std::to_string(config.rank), "info");
  Status st = WorkerMain(config);
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  return 0;
}

}  // namespace tributary::bench
