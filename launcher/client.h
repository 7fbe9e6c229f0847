// Client side of the coordinator's researcher/observer requests: submit a job (`tributary
// launch`) and read status (`tributary status`). Each call opens one authenticated connection.
#pragma once

#include <optional>
#include <string>

#include "core/status.h"
#include "net/identity.h"
#include "proto/tributary.pb.h"

namespace tributary::launcher {

struct CoordinatorAddress {
  std::string host;
  uint16_t port = 0;
  std::optional<net::PublicKey> key;  // verified in the handshake when given
};

Result<CoordinatorAddress> ParseCoordinator(const std::string& host_port,
                                            const std::string& key_hex = "");

// Signs the spec with `researcher` and asks the coordinator to host it; returns the job id.
Result<std::string> SubmitJob(const CoordinatorAddress& to, const net::Identity& researcher,
                              const v1::JobSpec& spec);

Result<v1::StatusReply> QueryStatus(const CoordinatorAddress& to, const net::Identity& self);

// The verifier ledger as signed receipts (`tributary ledger`); job_id empty = every job.
Result<v1::LedgerReply> QueryLedger(const CoordinatorAddress& to, const net::Identity& self,
                                    const std::string& job_id);

// Human-readable tables (one per job; only `job_id` when non-empty).
std::string FormatStatus(const v1::StatusReply& reply, const std::string& job_id = "");

}  // namespace tributary::launcher
