#include "launcher/client.h"

#include <fmt/format.h>

#include "net/connection.h"
#include "net/frame.h"
#include "net/io_thread.h"
#include "net/secure_channel.h"

namespace tributary::launcher {
namespace {

constexpr Millis kTimeout{10000};

Result<v1::Envelope> Request(const CoordinatorAddress& to, const net::Identity& self,
                             v1::Envelope request, v1::Envelope::PayloadCase want) {
  net::IoThread io("client-io");
  const Deadline deadline = DeadlineAfter(kTimeout);
  TRIB_ASSIGN_OR_RETURN(auto conn, net::Connection::Dial(io.context(), to.host, to.port, deadline));
  TRIB_RETURN_IF_ERROR(
      net::ClientHandshake(*conn, self, "tributary-coordinator", to.key, deadline).status());
  net::SignEnvelope(self, request);
  TRIB_RETURN_IF_ERROR(conn->Send(request, deadline));
  TRIB_ASSIGN_OR_RETURN(v1::Envelope reply, conn->Receive(deadline));
  TRIB_RETURN_IF_ERROR(net::CheckEnvelope(reply, ""));
  if (reply.has_error()) {
    return Aborted("coordinator refused: " + v1::ErrorCode_Name(reply.error().code()) + ": " +
                   reply.error().message());
  }
  if (reply.payload_case() != want) return ProtocolError("unexpected reply " + net::PayloadName(reply));
  conn->Close();
  return reply;
}

}  // namespace

Result<CoordinatorAddress> ParseCoordinator(const std::string& host_port, const std::string& key_hex) {
  CoordinatorAddress out;
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return InvalidArgument("expected HOST:PORT, got '" + host_port + "'");
  }
  int port = 0;
  try {
    port = std::stoi(host_port.substr(colon + 1));
  } catch (...) {
    port = 0;
  }
  if (port <= 0 || port > 65535) return InvalidArgument("bad port in '" + host_port + "'");
  out.host = host_port.substr(0, colon);
  out.port = static_cast<uint16_t>(port);
  if (!key_hex.empty()) {
    TRIB_ASSIGN_OR_RETURN(out.key, net::KeyFromHex(key_hex));
  }
  return out;
}

Result<std::string> SubmitJob(const CoordinatorAddress& to, const net::Identity& researcher,
                              const v1::JobSpec& spec) {
  v1::Envelope request = net::MakeEnvelope("");
  *request.mutable_submit_job()->mutable_spec() = spec;
  TRIB_ASSIGN_OR_RETURN(v1::Envelope reply, Request(to, researcher, request, v1::Envelope::kSubmitJobReply));
  return reply.submit_job_reply().job_id();
}

Result<v1::StatusReply> QueryStatus(const CoordinatorAddress& to, const net::Identity& self) {
  v1::Envelope request = net::MakeEnvelope("");
  request.mutable_status_request();
  TRIB_ASSIGN_OR_RETURN(v1::Envelope reply, Request(to, self, request, v1::Envelope::kStatusReply));
  return reply.status_reply();
}

Result<v1::LedgerReply> QueryLedger(const CoordinatorAddress& to, const net::Identity& self,
                                    const std::string& job_id) {
  v1::Envelope request = net::MakeEnvelope("");
  request.mutable_ledger_request()->set_job_id(job_id);
  TRIB_ASSIGN_OR_RETURN(v1::Envelope reply, Request(to, self, request, v1::Envelope::kLedgerReply));
  return reply.ledger_reply();
}

std::string FormatStatus(const v1::StatusReply& reply, const std::string& job_id) {
  std::string out;
  for (const v1::JobStatus& job : reply.jobs()) {
    if (!job_id.empty() && job.job_id() != job_id) continue;
    out += fmt::format("job {} ({}, {}): round {}/{}, {}, train loss {:.4f}, eval loss {}\n", job.job_id(),
                       job.name(), job.mode(), job.committed_rounds(), job.total_rounds(), job.phase(),
                       job.last_train_loss(),
                       job.last_eval_loss() >= 0 ? fmt::format("{:.4f}", job.last_eval_loss()) : "-");
    if (job.group_size() > 0) {
      out += fmt::format("groups of up to {} re-mixed every round; this round: {}\n", job.group_size(),
                         job.groups_size() == 0 ? std::string("none formed") : std::to_string(job.groups_size()));
      for (const v1::GroupStatus& g : job.groups()) {
        std::string names;
        for (const auto& m : g.members()) names += (names.empty() ? "" : ", ") + m;
        out += fmt::format("  group {}: {}{}{}, {} peers: {}\n", g.index(), g.state(),
                           g.attempt() ? fmt::format(", retry {}", g.attempt()) : "",
                           g.mix() ? ", mixing states" : "", g.members_size(), names);
      }
    }
    out += "| peer | key | address | state | uptime | rounds | hardware | bandwidth |\n";
    out += "|---|---|---|---|---:|---:|---|---:|\n";
    for (const v1::PeerStatus& p : job.peers()) {
      const v1::Hardware& hw = p.hardware();
      out += fmt::format("| {} | {} | {} | {} | {:.0f} s | {} | {} × {} cores, {:.1f} GiB, {:.0f} tok/s | {:.1f} MB/s |\n",
                         p.name(), p.public_key().substr(0, 12), p.address(), p.state(), p.uptime_seconds(),
                         p.rounds_contributed(), hw.cpu_model().empty() ? "cpu" : hw.cpu_model(),
                         hw.cpu_cores(), hw.memory_bytes() / double(1ull << 30), hw.tokens_per_second(),
                         p.bandwidth_bytes_per_second() / 1e6);
    }
    out += "\n";
  }
  if (out.empty()) out = job_id.empty() ? "no jobs\n" : "no job " + job_id + "\n";
  return out;
}

}  // namespace tributary::launcher
