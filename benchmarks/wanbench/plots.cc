#include "benchmarks/wanbench/plots.h"

#include <fmt/format.h>

#include "benchmarks/wanbench/subprocess.h"
#include "core/files.h"

namespace tributary::wanbench {
namespace {

std::string DataFile(const PlotRequest& req, size_t i) {
  return req.data_dir + "/plot_system" + std::to_string(i) + ".dat";
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::vector<std::string> Outputs(const PlotRequest& req) {
  return {req.out_prefix + "_loss_wall.png", req.out_prefix + "_loss_tokens.png",
          req.out_prefix + "_bytes_per_round.png", req.out_prefix + "_bytes_cumulative.png",
          req.out_prefix + "_utilisation.png"};
}

// Columns: t_end_s, cum_tokens (M), eval loss, wire MB per peer in the round, app MB, wire MB
// per peer so far.
std::string RoundsData(const SystemResult& r) {
  std::string out = "# t_end_s cum_Mtokens eval_loss wire_MB_per_peer app_MB_per_peer cum_wire_MB_per_peer\n";
  double cum = 0;
  for (const auto& p : r.rounds) {
    cum += p.wire_bytes_per_peer;
    out += fmt::format("{:.3f} {:.6f} {} {:.6f} {:.6f} {:.6f}\n", p.t_end, p.cum_tokens / 1e6,
                       p.eval_loss ? fmt::format("{:.5f}", *p.eval_loss) : "NaN",
                       p.wire_bytes_per_peer / 1e6, p.app_bytes_per_peer / 1e6, cum / 1e6);
  }
  return out;
}

std::string UtilisationData(const std::vector<SystemResult>& results) {
  std::string out = "# system compute_pct allreduce_pct other_pct\n";
  for (const auto& r : results) {
    const double compute = 100 * r.compute_utilisation, comm = 100 * r.comm_fraction;
    const double other = r.train_seconds > 0 ? std::max(0.0, 100 - compute - comm) : 0;  // no rounds: no bar
    out += fmt::format("\"{}\" {:.2f} {:.2f} {:.2f}\n", r.name, compute, comm, other);
  }
  return out;
}

}  // namespace

std::string GnuplotScript(const PlotRequest& req, const std::vector<SystemResult>& results) {
  const auto out = Outputs(req);
  std::string s =
      "set terminal pngcairo size 960,600 enhanced font 'DejaVu Sans,10'\n"
      "set grid\nset key top right\nset datafile missing 'NaN'\n";
  auto lines = [&](const std::string& using_cols, const std::string& style) {
    std::string plot;
    for (size_t i = 0; i < results.size(); ++i) {
      if (results[i].rounds.empty()) continue;
      plot += (plot.empty() ? "plot " : ", \\\n     ") + Quote(DataFile(req, i)) + " using " +
              using_cols + " with " + style + " lw 2 title " + Quote(results[i].name);
    }
    return plot.empty() ? "set label 1 'no rounds completed' at graph 0.5,0.5 center\nplot NaN notitle\n"
                        : plot + "\n";
  };
  s += "set output " + Quote(out[0]) + "\n";
  s += "set title " + Quote(req.title + ": eval loss vs wall-clock") + " noenhanced\n";
  s += "set xlabel 'wall-clock since training start (s)'\nset ylabel 'eval loss'\n";
  s += lines("1:3", "linespoints");
  s += "set output " + Quote(out[1]) + "\n";
  s += "set title " + Quote(req.title + ": eval loss vs tokens") + " noenhanced\n";
  s += "set xlabel 'tokens trained, all peers (millions)'\nset ylabel 'eval loss'\n";
  s += lines("2:3", "linespoints");
  s += "set output " + Quote(out[2]) + "\n";
  s += "set title " + Quote(req.title + ": bytes on the wire per peer in each round") + " noenhanced\n";
  s += "set xlabel 'tokens trained at the end of the round (millions)'\n"
       "set ylabel 'MB sent per peer in the round (IP bytes, log scale)'\nset logscale y\n"
       "set key outside top center horizontal\n";
  s += lines("2:4", "linespoints");
  s += "set output " + Quote(out[3]) + "\n";
  s += "set title " + Quote(req.title + ": bytes on the wire per peer, cumulative") + " noenhanced\n";
  s += "set xlabel 'tokens trained, all peers (millions)'\n"
       "set ylabel 'MB sent per peer so far (IP bytes, log scale)'\n";
  s += lines("2:6", "linespoints");
  s += "unset logscale y\n";
  s += "set output " + Quote(out[4]) + "\n";
  s += "set title " + Quote(req.title + ": where each peer's wall-clock goes") + " noenhanced\n";
  s += "set xlabel ''\nset ylabel '% of training wall-clock (mean over peers)'\nset yrange [0:100]\n"
       "set style data histograms\nset style histogram rowstacked\nset style fill solid 0.8 border -1\n"
       "set boxwidth 0.6\nset key outside right top\nset xtics noenhanced\n";
  s += "plot " + Quote(req.data_dir + "/plot_utilisation.dat") +
       " using 2:xtic(1) title 'compute', '' using 3 title 'all-reduce', '' using 4 title "
       "'other (eval, coordination, waiting)'\n";
  return s;
}

Result<std::vector<std::string>> DrawPlots(const PlotRequest& req,
                                           const std::vector<SystemResult>& results) {
  TRIB_RETURN_IF_ERROR(MakeDirectories(req.data_dir));
  for (size_t i = 0; i < results.size(); ++i) {
    TRIB_RETURN_IF_ERROR(WriteFileAtomically(DataFile(req, i), RoundsData(results[i])));
  }
  TRIB_RETURN_IF_ERROR(WriteFileAtomically(req.data_dir + "/plot_utilisation.dat", UtilisationData(results)));
  const std::string script = req.data_dir + "/plots.gp";
  TRIB_RETURN_IF_ERROR(WriteFileAtomically(script, GnuplotScript(req, results)));
  const std::string log = req.data_dir + "/gnuplot.log";
  auto gnuplot = Subprocess::Start({"gnuplot", script}, log);
  if (!gnuplot.ok()) {
    if (gnuplot.status().code() == StatusCode::kNotFound) {
      return FailedPrecondition("gnuplot is not installed (apt-get install gnuplot); the data and " +
                                script + " are ready for it");
    }
    return gnuplot.status();
  }
  auto code = gnuplot->Wait(DeadlineAfter(Millis(60000)));
  if (!code.ok() || *code != 0) {
    auto text = ReadWholeFile(log);
    return IoError("gnuplot failed on " + script + ": " + (text.ok() ? *text : std::string("?")));
  }
  std::vector<std::string> made;
  for (const auto& png : Outputs(req)) {
    if (FileExists(png)) made.push_back(png);
  }
  return made;
}

}  // namespace tributary::wanbench
