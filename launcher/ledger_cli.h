// `tributary ledger` and `tributary verify-receipt`: the coordinator's verifier ledger as signed
// receipts, printed, exported to files, and checked offline with only the coordinator's public key.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "net/identity.h"
#include "proto/tributary.pb.h"
#include "verifier/ledger.h"

namespace tributary::launcher {

// Decodes every receipt of `reply` and verifies it against the key the reply names, which must
// equal `pinned` when given (the key the handshake proved). Corruption on the first bad one.
Result<std::vector<verifier::SignedReceipt>> CheckedReceipts(const v1::LedgerReply& reply,
                                                             const std::optional<net::PublicKey>& pinned);
// A table: one row per (peer, round) with work committed, challenged, verified, failed, false
// accusations and the verdict; then the bans.
std::string FormatLedger(const std::vector<verifier::SignedReceipt>& receipts, const v1::LedgerReply& reply);
// Writes DIR/<job>-<peer key 16 hex>-r<round>.receipt (verifier::EncodeReceipt bytes) for each
// receipt and DIR/coordinator.pub (hex key); returns how many receipts were written.
Result<size_t> ExportReceipts(const std::vector<verifier::SignedReceipt>& receipts,
                              const net::PublicKey& coordinator, const std::string& dir);
// Reads a receipt file and verifies it with `coordinator` alone: the receipt, or Corruption.
Result<verifier::SignedReceipt> VerifyReceiptFile(const std::string& path, const net::PublicKey& coordinator);
std::string FormatReceipt(const verifier::Receipt& receipt);

}  // namespace tributary::launcher
