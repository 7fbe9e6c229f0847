#include "benchmarks/wanbench/report.h"

#include <fmt/format.h>

#include "runtime/job_spec.h"

namespace tributary::wanbench {
namespace {

std::string Fixed(const std::optional<double>& v, int digits) {
  return v ? fmt::format("{:.{}f}", *v, digits) : "–";
}

bool IsBaseline(const SystemResult& r) { return r.name.rfind("tributary-", 0) != 0; }

std::string Ratio(double a, double b) {
  if (!(a > 0) || !(b > 0)) return "–";
  return fmt::format("{:.2f}×", a / b);
}

}  // namespace

std::string FasterToFinalLoss(const SystemResult& a, const SystemResult& b) {
  if (!b.final_eval_loss) return "–";
  const auto tb = TimeToLoss(b, *b.final_eval_loss);
  const auto ta = TimeToLoss(a, *b.final_eval_loss);
  if (!tb) return "–";
  if (!ta) return fmt::format("not reached ({:.4f})", a.final_eval_loss.value_or(0));
  return Ratio(*tb, *ta);
}

std::optional<double> CommonTargetLoss(const std::vector<SystemResult>& results) {
  std::optional<double> target;
  for (const auto& r : results) {
    if (!r.ok || !r.final_eval_loss) continue;
    target = target ? std::max(*target, *r.final_eval_loss) : *r.final_eval_loss;
  }
  return target;
}

std::string MarkdownReport(const BenchScenario& s, const std::vector<SystemResult>& results) {
  const auto target = CommonTargetLoss(results);
  auto normalised_rate = [](const SystemResult& r) {
    return r.normalised_train_seconds > 0 ? static_cast<double>(r.tokens) / r.normalised_train_seconds : 0.0;
  };
  std::string budget = fmt::format("{} tokens per system", s.total_tokens());
  for (const auto& system : s.systems) {
    if (system.ddp() || s.total_tokens(system) == s.total_tokens()) continue;
    budget = fmt::format("{} tokens per DDP system, {} per DiLoCo system", s.total_tokens(), s.total_tokens(system));
    break;
  }
  std::string out = fmt::format("### {}: {} peers, {}\n\n", s.name, s.peers(), budget);
  out += "| system | steps/round | rounds | tokens | train s | tokens/s | compute util | "
         "compute s/step | train s at equal compute | all-reduce s/round | all-reduce share | "
         "wire/peer | final eval loss | s to loss " + Fixed(target, 3) + " | load | status |\n";
  out += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const auto& r : results) {
    std::string status = r.ok ? "ok" : "FAILED: " + r.error;
    if (r.fault) {
      status += fmt::format("; peer {} {} at {:.1f} s: {}", r.fault->peer,
                            r.fault->kind == "cut" ? "cut off" : "killed", r.fault->at,
                            r.fault->recovered
                                ? fmt::format("next commit after {:.1f} s (stall {:.1f} s)",
                                              r.fault->recovery_s.value_or(0), r.fault->stall_s.value_or(0))
                                : "no recovery");
    }
    if (r.theta_identical && !*r.theta_identical) status += "; ranks' θ differ in the last bits";
    out += fmt::format("| {} | {} | {}/{} | {} | {:.1f} | {:.0f} | {:.0f} % | {:.3f} | {:.1f} | {:.3f} | {:.0f} % | {} | {} | {} | {:.1f}–{:.1f} | {} |\n",
                       r.name, r.steps_per_round, r.rounds.size(), r.rounds_planned, r.tokens,
                       r.train_seconds, r.tokens_per_second, 100 * r.compute_utilisation,
                       r.compute_seconds_per_step, r.normalised_train_seconds,
                       r.allreduce_seconds_per_round, 100 * r.comm_fraction,
                       HumanBytes(r.wire_bytes_per_peer), Fixed(r.final_eval_loss, 4),
                       target ? Fixed(TimeToLoss(r, *target), 1) : "–", r.load_start, r.load_end, status);
  }
  // Ratios: every Tributary system against every baseline, and DiLoCo against our own DDP.
  std::string ratios;
  for (const auto& a : results) {
    if (IsBaseline(a) || !a.ok) continue;
    for (const auto& b : results) {
      if (&a == &b || !b.ok) continue;
      const bool vs_baseline = IsBaseline(b);
      const bool diloco_vs_ddp = a.mode.rfind("diloco", 0) == 0 && b.name == "tributary-ddp";
      if (!vs_baseline && !diloco_vs_ddp) continue;
      const auto ta = target ? TimeToLoss(a, *target) : std::nullopt;
      const auto tb = target ? TimeToLoss(b, *target) : std::nullopt;
      ratios += fmt::format(
          "| {} vs {} | {} | {} | {} | {} | {} | {} |\n", a.name, b.name,
          Ratio(a.tokens_per_second, b.tokens_per_second),
          Ratio(normalised_rate(a), normalised_rate(b)),
          Ratio(b.wire_bytes_per_peer, a.wire_bytes_per_peer),
          (ta && tb) ? Ratio(*tb, *ta) : "–", FasterToFinalLoss(a, b),
          (a.final_eval_loss && b.final_eval_loss)
              ? fmt::format("{:+.4f}", *a.final_eval_loss - *b.final_eval_loss)
              : "–");
    }
  }
  if (!ratios.empty()) {
    out += "\n| comparison | tokens/s (×, higher is better) | tokens/s at equal compute (×) | "
           "fewer wire bytes (×) | faster to loss " + Fixed(target, 3) +
           " (×) | faster to the second's final loss (×) | final eval loss difference |\n";
    out += "|---|---:|---:|---:|---:|---:|---:|\n" + ratios;
  }
  return out;
}

nlohmann::json ReportJson(const BenchScenario& s, const std::vector<SystemResult>& results,
                          const RunInfo& info) {
  nlohmann::json systems = nlohmann::json::array();
  for (const auto& r : results) systems.push_back(ToJson(r));
  nlohmann::json links = nlohmann::json::array();
  for (int i = 0; i < s.peers(); ++i) {
    for (int j = 0; j < s.peers(); ++j) {
      if (i == j) continue;
      const auto& l = s.network.link(i, j);
      links.push_back({{"from", i}, {"to", j}, {"delay_ms", l.delay_ms}, {"jitter_ms", l.jitter_ms},
                       {"rate_mbit", l.rate_mbit}, {"loss", l.loss}, {"queue_bytes", l.queue_bytes}});
    }
  }
  const v1::JobSpec& j = s.base_spec;
  const auto target = CommonTargetLoss(results);
  return {{"scenario", s.name},
          {"scenario_file", s.source},
          {"description", DescribeScenario(s)},
          {"command", info.command},
          {"started_at", info.started_at},
          {"machine", {{"cpus", info.cpus}, {"load_before", info.load_before}, {"load_after", info.load_after}}},
          {"run_dir", info.run_dir},
          {"plots", info.plots},
          {"network", {{"peers", s.peers()}, {"mtu", s.network.mtu},
                       {"tcp_buffer_bytes", s.network.tcp_buffer_bytes}, {"links", links}}},
          {"job", {{"model", j.model()}, {"n_layer", j.n_layer()}, {"n_head", j.n_head()},
                   {"d_model", j.d_model()}, {"context", j.context()}, {"batch_size", j.batch_size()},
                   {"inner_lr", j.inner_lr()}, {"outer_lr", j.outer_lr()}, {"seed", j.seed()},
                   {"eval_batches", j.eval_batches()}}},
          {"budget", {{"steps_per_peer", s.steps_per_peer}, {"tokens", s.total_tokens()},
                      {"diloco_steps_per_peer", s.diloco_steps ? nlohmann::json(*s.diloco_steps) : nlohmann::json(nullptr)},
                      {"h", s.h}, {"ddp_steps_per_round", s.ddp_steps_per_round}}},
          {"target_loss", target ? nlohmann::json(*target) : nlohmann::json(nullptr)},
          {"reference_compute_s_per_step", info.reference_compute_s_per_step},
          {"systems", systems}};
}

}  // namespace tributary::wanbench
