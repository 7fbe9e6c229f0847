#include "launcher/ledger_cli.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/files.h"

namespace tributary::launcher {

Result<std::vector<verifier::SignedReceipt>> CheckedReceipts(const v1::LedgerReply& reply,
                                                             const std::optional<net::PublicKey>& pinned) {
  TRIB_ASSIGN_OR_RETURN(net::PublicKey key, net::KeyFromBytes(reply.coordinator_key()));
  if (pinned && *pinned != key) return Corruption("the ledger names a coordinator key other than the one we dialled");
  std::vector<verifier::SignedReceipt> out;
  for (const std::string& bytes : reply.receipts()) {
    TRIB_ASSIGN_OR_RETURN(verifier::SignedReceipt r, verifier::DecodeReceipt(bytes));
    TRIB_RETURN_IF_ERROR(verifier::VerifyReceipt(r, key).WithContext("receipt"));
    out.push_back(std::move(r));
  }
  return out;
}

std::string FormatReceipt(const verifier::Receipt& r) {
  return fmt::format("job {} peer {} round {}: {} steps committed, {} challenged, {} verified, {} failed, "
                     "{} false accusations — {} (root {}, coordinator {}, issued at {} ms)",
                     r.job_id, net::ShortKey(r.peer), r.round, r.steps_committed, r.steps_challenged,
                     r.steps_verified, r.steps_failed, r.false_accusations, verifier::RoundVerdictName(r.verdict),
                     ToHex(r.root).substr(0, 16), net::ShortKey(r.coordinator), r.issued_at_ms);
}

std::string FormatLedger(const std::vector<verifier::SignedReceipt>& receipts, const v1::LedgerReply& reply) {
  std::string out = "| job | peer | round | committed | challenged | verified | failed | false accusations | verdict |\n"
                    "|---|---|---:|---:|---:|---:|---:|---:|---|\n";
  for (const auto& sr : receipts) {
    const verifier::Receipt& r = sr.body;
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", r.job_id, net::ShortKey(r.peer), r.round,
                       r.steps_committed, r.steps_challenged, r.steps_verified, r.steps_failed, r.false_accusations,
                       verifier::RoundVerdictName(r.verdict));
  }
  for (const std::string& b : reply.banned()) out += "banned: " + b + "\n";
  return out;
}

Result<size_t> ExportReceipts(const std::vector<verifier::SignedReceipt>& receipts,
                              const net::PublicKey& coordinator, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return IoError("cannot create " + dir + ": " + ec.message());
  TRIB_RETURN_IF_ERROR(WriteFileAtomically(dir + "/coordinator.pub", net::KeyToHex(coordinator) + "\n"));
  for (const auto& r : receipts) {
    const std::string path = fmt::format("{}/{}-{}-r{}.receipt", dir, r.body.job_id,
                                         net::KeyToHex(r.body.peer).substr(0, 16), r.body.round);
    TRIB_RETURN_IF_ERROR(WriteFileAtomically(path, verifier::EncodeReceipt(r)));
  }
  return receipts.size();
}

Result<verifier::SignedReceipt> VerifyReceiptFile(const std::string& path, const net::PublicKey& coordinator) {
  TRIB_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
  TRIB_ASSIGN_OR_RETURN(verifier::SignedReceipt r, verifier::DecodeReceipt(bytes));
  TRIB_RETURN_IF_ERROR(verifier::VerifyReceipt(r, coordinator));
  return r;
}

}  // namespace tributary::launcher
