// The bulk of a step opening travels peer to peer (docs/VERIFIER.md, "Openings peer to peer").
//
// An opening's large fields (the pre-step or end state, the post-step state, the residual: 12 to
// 24 bytes a parameter) need not pass through the coordinator. The prover detaches them into
// canonical bytes, names their SHA-256 and size in the opening it signs and sends, and serves the
// bytes from its state server; verifiers fetch them and attach them back. The digest is over a
// canonical encoding, so the coordinator can check a prover that later sends the same opening
// whole (OpenRequest.inline_bulk) against the digest it announced.
#pragma once

#include <string>
#include <string_view>

#include "core/digest.h"
#include "core/status.h"
#include "proto/tributary.pb.h"

namespace tributary::verifier {

// Openings whose bulk is at least this large are detached when the prover can serve them
// (unless the job sets JobSpec.opening_bulk_min_bytes).
inline constexpr uint64_t kDetachedBulkMinBytes = 1u << 20;

// The canonical bytes of `o`'s state, state_after and residual (length-prefixed, in that order).
std::string EncodeOpeningBulk(const v1::Opening& o);
uint64_t OpeningBulkBytes(const v1::Opening& o);
bool HasDetachedBulk(const v1::Opening& o);
// Moves the bulk out of `o`, sets bulk_digest and bulk_bytes, and returns the bytes to serve.
std::string DetachOpeningBulk(v1::Opening& o);
// Puts fetched `bulk` back into `o` (clearing bulk_digest): Corruption unless its SHA-256 is the
// digest `o` names and it decodes; `o` is unchanged then.
Status AttachOpeningBulk(v1::Opening& o, std::string_view bulk);
// A detached opening's digest, checked for shape: Corruption if it is not 32 bytes.
Result<Digest> OpeningBulkDigest(const v1::Opening& o);

}  // namespace tributary::verifier
