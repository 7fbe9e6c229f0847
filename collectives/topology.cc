#include "collectives/topology.h"

#include <algorithm>
#include <cmath>
#include <future>
#include <limits>
#include <set>
#include <thread>

#include "net/frame.h"
#include "proto/tributary.pb.h"

namespace tributary::collectives {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

double PredictRingSeconds(const LinkMatrix& links, const std::vector<uint32_t>& order, double bytes) {
  const size_t n = order.size();
  if (n < 2) return 0;
  double min_bw = kInf, rtt_sum = 0;
  for (size_t k = 0; k < n; ++k) {
    const LinkEstimate& e = links.at(order[k], order[(k + 1) % n]);
    if (!(e.bytes_per_second > 0)) return kInf;
    min_bw = std::min(min_bw, e.bytes_per_second);
    rtt_sum += e.rtt_seconds;
  }
  const double share = static_cast<double>(n - 1) / static_cast<double>(n);
  return 2 * share * bytes / min_bw + share * rtt_sum;
}

Result<RingOrder> OrderRing(const LinkMatrix& links, double bytes, size_t exact_limit) {
  const size_t n = links.size();
  std::vector<double> bandwidths;
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (i == j) continue;
      const LinkEstimate& e = links.at(i, j);
      if (!(e.bytes_per_second > 0) || !std::isfinite(e.bytes_per_second) ||
          !(e.rtt_seconds >= 0) || !std::isfinite(e.rtt_seconds)) {
        return InvalidArgument("link " + std::to_string(i) + " -> " + std::to_string(j) +
                               " has no valid estimate (rtt " + std::to_string(e.rtt_seconds) +
                               " s, " + std::to_string(e.bytes_per_second) + " B/s)");
      }
      bandwidths.push_back(e.bytes_per_second);
    }
  }
  RingOrder best;
  for (uint32_t i = 0; i < n; ++i) best.order.push_back(i);
  best.predicted_seconds = PredictRingSeconds(links, best.order, bytes);
  best.exact = n <= 2;
  if (n <= 2) return best;
  // Candidate bottlenecks, fastest first: the bandwidth term only grows as b falls, so once it
  // alone exceeds the best prediction no slower bottleneck can win.
  std::sort(bandwidths.begin(), bandwidths.end(), std::greater<>());
  bandwidths.erase(std::unique(bandwidths.begin(), bandwidths.end()), bandwidths.end());
  const bool exact = n <= std::min(exact_limit, kMaxExactNodes);
  if (!exact && bandwidths.size() > 32) {
    // Heuristic sizes: 32 quantiles of the bandwidths (always including the slowest).
    std::vector<double> q;
    for (size_t k = 0; k < 32; ++k) q.push_back(bandwidths[k * (bandwidths.size() - 1) / 31]);
    bandwidths = std::move(q);
  }
  const double share = static_cast<double>(n - 1) / static_cast<double>(n);
  bool all_exact = exact;
  for (double b : bandwidths) {
    const double bandwidth_term = 2 * share * bytes / b;
    if (bandwidth_term >= best.predicted_seconds) break;
    CostMatrix cost(n, kInf);
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < n; ++j) {
        if (i != j && links.at(i, j).bytes_per_second >= b) cost.at(i, j) = links.at(i, j).rtt_seconds;
      }
    }
    Tour tour = Solve(cost, exact_limit);
    all_exact = all_exact && tour.exact;
    if (!std::isfinite(tour.cost)) continue;  // no ring uses only links this fast
    const double predicted = PredictRingSeconds(links, tour.order, bytes);
    if (predicted < best.predicted_seconds) {
      best.order = tour.order;
      best.predicted_seconds = predicted;
    }
  }
  best.exact = all_exact;
  return best;
}

// --- probes ---------------------------------------------------------------------------------

namespace {

// Probe frames are TensorHeaders tagged "probe/<step>/<kind>"; `offset` carries a number
// (ping index, segment index, or the measured rate in B/s), `numel` 1 on the last data segment.
v1::Envelope ProbeFrame(const Mesh& mesh, uint32_t step, const char* kind, uint64_t value,
                        uint64_t nbytes = 0, bool last = false) {
  v1::Envelope env = net::MakeEnvelope(mesh.job_id());
  v1::TensorHeader* h = env.mutable_tensor();
  h->set_tag("probe/" + std::to_string(step) + "/" + kind);
  h->set_dtype(v1::DTYPE_F32);
  h->set_offset(value);
  h->set_nbytes(nbytes);
  h->set_numel(last ? 1 : 0);
  return env;
}

// The header of a probe frame of `kind` in `step`, or a ProtocolError saying what was wrong.
Result<v1::TensorHeader> CheckProbe(const Result<v1::Envelope>& got, const Mesh& mesh,
                                    uint32_t step, const char* kind, uint64_t max_nbytes) {
  if (!got.ok()) return got.status();
  if (!got->has_tensor()) return ProtocolError(std::string("expected a probe ") + kind + " frame");
  const v1::TensorHeader& h = got->tensor();
  const std::string want = "probe/" + std::to_string(step) + "/" + kind;
  if (got->job_id() != mesh.job_id()) return ProtocolError("probe frame for job '" + got->job_id() + "'");
  if (h.tag() != want) return ProtocolError("expected probe frame '" + want + "', got '" + h.tag() + "'");
  if (h.nbytes() > max_nbytes) {
    return ProtocolError("probe frame of " + std::to_string(h.nbytes()) + " bytes (at most " +
                         std::to_string(max_nbytes) + ")");
  }
  return h;
}

struct Arrival {
  double t;        // seconds since the first header arrived
  uint64_t bytes;  // cumulative
};

// Receiver-side rate: over the second half of the arrival span (past slow start), or over all
// of it when that half holds too few segments to time.
double RateOf(const std::vector<Arrival>& a) {
  if (a.empty()) return 0;
  const double span = a.back().t;
  size_t m = 0;
  while (m < a.size() && a[m].t < span / 2) ++m;
  if (m > 0 && a.size() - m >= 2 && a.back().t > a[m - 1].t) {
    return static_cast<double>(a.back().bytes - a[m - 1].bytes) / (a.back().t - a[m - 1].t);
  }
  return span > 0 ? static_cast<double>(a.back().bytes) / span : 0;
}

class Prober {
 public:
  Prober(Mesh& mesh, const ProbeOptions& o) : mesh_(mesh), o_(o) {}

  Result<std::vector<LinkEstimate>> Run() {
    const uint32_t n = mesh_.world(), r = mesh_.rank();
    std::vector<LinkEstimate> row(n);
    if (o_.segment_bytes == 0 || o_.pings < 1) return InvalidArgument("probe needs segments and pings");
    for (uint32_t s = 1; s < n; ++s) {
      const uint32_t to = (r + s) % n, from = (r + n - s) % n;
      auto rtt = Pings(s, to, from);
      if (!rtt.ok()) return rtt.status();
      auto rate = Bandwidth(s, to, from);
      if (!rate.ok()) return rate.status();
      row[to] = LinkEstimate{*rtt, *rate};
    }
    return row;
  }

 private:
  // Fails naming `peer`; aborts the mesh so the others stop too.
  Status Blame(uint32_t peer, const Status& why) {
    Status st = why.WithContext("link probe with " + mesh_.Describe(peer));
    mesh_.Abort(st, mesh_.FailureOf(peer));
    return st;
  }

  // Min RTT to `to` over o_.pings; meanwhile answers `from`'s pings.
  Result<double> Pings(uint32_t s, uint32_t to, uint32_t from) {
    net::Connection& out = *mesh_.peer(to);
    net::Connection& in = *mesh_.peer(from);
    double best = kInf;
    for (int k = 0; k < o_.pings; ++k) {
      const auto sent_at = Clock::now();
      if (Status st = out.QueueSend(ProbeFrame(mesh_, s, "ping", k)); !st.ok()) return Blame(to, st);
      // The pong is timed on arrival (io thread), so a slow `from` cannot inflate it.
      struct Got {
        std::promise<std::pair<Result<v1::Envelope>, Clock::time_point>> p;
      };
      std::future<std::pair<Result<v1::Envelope>, Clock::time_point>> pong_future;
      const bool same = to == from;
      if (!same) {
        auto got = std::make_shared<Got>();
        pong_future = got->p.get_future();
        out.AsyncReceive([got](Result<v1::Envelope> e) { got->p.set_value({std::move(e), Clock::now()}); });
      }
      auto ping = CheckProbe(in.Receive(o_.deadline), mesh_, s, "ping", 0);
      if (!ping.ok()) return Blame(from, ping.status());
      if (ping->offset() != static_cast<uint64_t>(k)) {
        return Blame(from, ProtocolError("ping " + std::to_string(ping->offset()) + " out of order"));
      }
      if (Status st = in.QueueSend(ProbeFrame(mesh_, s, "pong", k)); !st.ok()) return Blame(from, st);
      Result<v1::Envelope> pong = Unavailable("no pong");
      Clock::time_point at;
      if (same) {
        pong = in.Receive(o_.deadline);
        at = Clock::now();
      } else {
        if (pong_future.wait_until(o_.deadline) != std::future_status::ready) {
          return Blame(to, DeadlineExceeded("no pong before the deadline"));
        }
        auto [e, t] = pong_future.get();
        pong = std::move(e);
        at = t;
      }
      auto checked = CheckProbe(pong, mesh_, s, "pong", 0);
      if (!checked.ok()) return Blame(to, checked.status());
      best = std::min(best, Seconds(at - sent_at));
    }
    if (Status st = out.Flush(o_.deadline); !st.ok()) return Blame(to, st);
    if (Status st = in.Flush(o_.deadline); !st.ok()) return Blame(from, st);
    return best;
  }

  // Streams to `to` while timing what `from` streams here; returns the rate `to` measured.
  Result<double> Bandwidth(uint32_t s, uint32_t to, uint32_t from) {
    net::Connection& out = *mesh_.peer(to);
    net::Connection& in = *mesh_.peer(from);
    // Receive on a thread of its own: sending and receiving must overlap (both may block).
    std::vector<Arrival> arrivals;
    Status received;
    std::thread receiver([&] {
      received = ReceiveStream(in, s, arrivals);
      // Unblock the sender (it may wait on a peer that is gone); the mesh is done for anyway.
      if (!received.ok()) mesh_.Interrupt();
    });
    std::vector<std::byte> payload(o_.segment_bytes, std::byte{0x5a});
    const auto start = Clock::now();
    uint64_t sent = 0;
    Status send_status;
    for (uint64_t seg = 0; send_status.ok(); ++seg) {
      const bool last = sent + 2 * o_.segment_bytes > o_.max_bytes ||
                        Seconds(Clock::now() - start) >= o_.seconds;
      send_status = out.QueueSend(ProbeFrame(mesh_, s, "data", seg, o_.segment_bytes, last),
                                  std::span<const std::byte>(payload));
      sent += o_.segment_bytes;
      // Keep a few segments queued: enough to keep the socket busy, few enough that the time
      // check above means something.
      if (send_status.ok() && (seg % 4 == 3 || last)) send_status = out.Flush(o_.deadline);
      if (last) break;
    }
    if (!send_status.ok()) mesh_.Interrupt();
    receiver.join();
    if (!received.ok()) return Blame(from, received);
    if (!send_status.ok()) return Blame(to, send_status);
    const double rate = RateOf(arrivals);
    if (Status st = in.Send(ProbeFrame(mesh_, s, "rate", static_cast<uint64_t>(rate)), o_.deadline);
        !st.ok()) {
      return Blame(from, st);
    }
    auto theirs = CheckProbe(out.Receive(o_.deadline), mesh_, s, "rate", 0);
    if (!theirs.ok()) return Blame(to, theirs.status());
    if (theirs->offset() == 0) return Blame(to, ProtocolError("reported a zero rate"));
    return static_cast<double>(theirs->offset());
  }

  Status ReceiveStream(net::Connection& in, uint32_t s, std::vector<Arrival>& arrivals) {
      std::vector<std::byte> buf(o_.segment_bytes);
      Clock::time_point first{};
      uint64_t total = 0;
      for (uint64_t seg = 0;; ++seg) {
        auto h = CheckProbe(in.Receive(o_.deadline), mesh_, s, "data", o_.segment_bytes);
        if (!h.ok()) return h.status();
        if (seg == 0) first = Clock::now();
        if (h->offset() != seg) return ProtocolError("probe segment out of order");
        TRIB_RETURN_IF_ERROR(in.ReceiveRaw(std::span(buf.data(), h->nbytes()), o_.deadline));
        total += h->nbytes();
        arrivals.push_back({Seconds(Clock::now() - first), total});
        if (h->numel() == 1) return Status::Ok();
        if (seg > o_.max_bytes / o_.segment_bytes + 1) {
          return ProtocolError("probe longer than " + std::to_string(o_.max_bytes) + " bytes");
        }
      }
  }

  Mesh& mesh_;
  ProbeOptions o_;
};

}  // namespace

Result<std::vector<LinkEstimate>> ProbeLinks(Mesh& mesh, const ProbeOptions& options) {
  if (mesh.broken()) return FailedPrecondition("link probe on a broken mesh");
  return Prober(mesh, options).Run();
}

Result<std::vector<LinkEstimate>> MeasureLinks(net::IoThread& io, net::Listener& listener,
                                               uint32_t my_rank,
                                               const std::vector<MeshMember>& members,
                                               const std::string& job_id, uint64_t round,
                                               uint32_t attempt, const net::Identity* identity,
                                               const ProbeOptions& options) {
  FormControl control;
  control.cancelled = options.cancelled;
  TRIB_ASSIGN_OR_RETURN(auto mesh, Mesh::Form(io, listener, my_rank, members, job_id, round,
                                              kProbeAttemptBit | attempt, identity, options.deadline,
                                              &control));
  auto row = ProbeLinks(*mesh, options);
  mesh.reset();  // a probe only reads what it waited for, so closing now loses nothing
  return row;
}

// --- LinkTable ------------------------------------------------------------------------------

void LinkTable::Record(const std::string& from, const std::string& to, const LinkEstimate& link,
                       Clock::time_point now) {
  if (from == to || !(link.bytes_per_second > 0) || !std::isfinite(link.bytes_per_second) ||
      !(link.rtt_seconds >= 0) || !std::isfinite(link.rtt_seconds)) {
    return;  // advisory numbers: ignore nonsense rather than let it steer the ring
  }
  links_[{from, to}] = Entry{link, now};
}

std::optional<LinkMatrix> LinkTable::Matrix(const std::vector<std::string>& ids,
                                            Clock::duration max_age, Clock::time_point now) const {
  LinkMatrix m(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    for (size_t j = 0; j < ids.size(); ++j) {
      if (i == j) continue;
      auto it = links_.find({ids[i], ids[j]});
      if (it == links_.end() || now - it->second.measured > max_age) return std::nullopt;
      m.at(i, j) = it->second.link;
    }
  }
  return m;
}

void LinkTable::Expire(Clock::duration max_age, Clock::time_point now) {
  std::erase_if(links_, [&](const auto& kv) { return now - kv.second.measured > max_age; });
}

void LinkTable::Invalidate(const std::string& from) {
  std::erase_if(links_, [&](const auto& kv) { return kv.first.first == from; });
}

std::optional<std::vector<uint32_t>> OrderFromTable(const LinkTable& table,
                                                    const std::vector<std::string>& ids,
                                                    double bytes, Clock::duration max_age,
                                                    Clock::time_point now) {
  if (ids.size() < 3) return std::nullopt;
  auto matrix = table.Matrix(ids, max_age, now);
  if (!matrix) return std::nullopt;
  auto order = OrderRing(*matrix, bytes);
  if (!order.ok()) return std::nullopt;
  return order->order;
}

}  // namespace tributary::collectives
