#include "verifier/opening_bulk.h"

#include "verifier/detail/encoding.h"

namespace tributary::verifier {

std::string EncodeOpeningBulk(const v1::Opening& o) {
  detail::Writer w;
  w.Raw("TRIB-OPENING-BULK-1");
  w.Str(o.state());
  w.Str(o.state_after());
  w.Str(o.residual());
  return std::move(w).bytes();
}

uint64_t OpeningBulkBytes(const v1::Opening& o) {
  return o.state().size() + o.state_after().size() + o.residual().size();
}

bool HasDetachedBulk(const v1::Opening& o) { return !o.bulk_digest().empty(); }

std::string DetachOpeningBulk(v1::Opening& o) {
  std::string bulk = EncodeOpeningBulk(o);
  o.clear_state();
  o.clear_state_after();
  o.clear_residual();
  o.set_bulk_digest(DigestToBytes(Sha256Of(bulk)));
  o.set_bulk_bytes(bulk.size());
  return bulk;
}

Result<Digest> OpeningBulkDigest(const v1::Opening& o) {
  auto d = DigestFromBytes(o.bulk_digest());
  if (!d.ok()) return Corruption("the opening names a malformed bulk digest");
  return *d;
}

Status AttachOpeningBulk(v1::Opening& o, std::string_view bulk) {
  TRIB_ASSIGN_OR_RETURN(Digest want, OpeningBulkDigest(o));
  if (bulk.size() != o.bulk_bytes() || Sha256Of(bulk) != want) {
    return Corruption("the fetched bulk is not the one the opening names (" + std::to_string(bulk.size()) +
                      " bytes, digest " + ShortHex(Sha256Of(bulk)) + "; named " + ShortHex(want) + ")");
  }
  detail::Reader r(bulk, "opening bulk");
  TRIB_RETURN_IF_ERROR(r.Magic("TRIB-OPENING-BULK-1"));
  TRIB_ASSIGN_OR_RETURN(std::string state, r.Str(bulk.size()));
  TRIB_ASSIGN_OR_RETURN(std::string state_after, r.Str(bulk.size()));
  TRIB_ASSIGN_OR_RETURN(std::string residual, r.Str(bulk.size()));
  TRIB_RETURN_IF_ERROR(r.Done());
  o.set_state(std::move(state));
  o.set_state_after(std::move(state_after));
  o.set_residual(std::move(residual));
  o.clear_bulk_digest();
  o.clear_bulk_bytes();
  return Status::Ok();
}

}  // namespace tributary::verifier
