#include "verifier/aggregate_statement.h"

#include <utility>

#include "verifier/contribution.h"
#include "verifier/detail/encoding.h"

namespace tributary::verifier {
namespace {

constexpr std::string_view kAggregateMagic = "TRIBAGGR1";
constexpr std::string_view kAggregateLabel = "tributary.verifier.aggregate.v1";
constexpr size_t kMaxJobId = 1024;

std::string SignedBytes(const AggregateStatement& body) { return std::string(kAggregateLabel) + body.Canonical(); }

Status CheckBody(const AggregateStatement& body) {
  if (body.job_id.empty() || body.job_id.size() > kMaxJobId) return InvalidArgument("bad job id");
  if (body.world == 0 || body.world > kMaxManifestShards) {
    return InvalidArgument("an aggregate statement names 1 to " + std::to_string(kMaxManifestShards) +
                           " members, not " + std::to_string(body.world));
  }
  if (body.shard >= body.world) {
    return InvalidArgument("shard " + std::to_string(body.shard) + " of " + std::to_string(body.world));
  }
  if (body.contributions.size() != body.world) {
    return InvalidArgument("an aggregate statement names " + std::to_string(body.contributions.size()) +
                           " contributions for " + std::to_string(body.world) + " members");
  }
  if (body.numel == 0 || body.numel > kMaxManifestNumel) {
    return InvalidArgument("an aggregate statement states a tensor of " + std::to_string(body.numel) +
                           " elements");
  }
  return Status::Ok();
}

}  // namespace

std::string AggregateStatement::Canonical() const {
  detail::Writer w;
  w.Raw(kAggregateMagic);
  w.Str(job_id);
  w.Fixed(owner);
  w.U64(round);
  w.U64(attempt);
  w.U64(world);
  w.U64(shard);
  w.U64(numel);
  w.U64(contributions.size());
  for (const Digest& d : contributions) w.Fixed(d);
  w.Fixed(aggregate);
  w.Fixed(residual_in);
  w.Fixed(residual_out);
  return std::move(w).bytes();
}

Result<SignedAggregate> SignAggregate(const AggregateStatement& body, const net::Identity& identity) {
  TRIB_RETURN_IF_ERROR(CheckBody(body));
  if (identity.public_key() != body.owner) {
    return InvalidArgument("aggregate statement names owner " + net::ShortKey(body.owner) +
                           " but would be signed by " + net::ShortKey(identity.public_key()));
  }
  return SignedAggregate{body, identity.Sign(SignedBytes(body))};
}

Status VerifyAggregate(const SignedAggregate& s) {
  Status body = CheckBody(s.body);
  if (!body.ok()) return Corruption("malformed aggregate statement: " + body.message());
  if (!net::VerifySignature(s.body.owner, SignedBytes(s.body), s.signature)) {
    return Corruption("aggregate statement signature of " + net::ShortKey(s.body.owner) + " does not verify");
  }
  return Status::Ok();
}

std::string EncodeAggregateStatement(const SignedAggregate& s) {
  return s.body.Canonical() + net::SignatureToBytes(s.signature);
}

Result<SignedAggregate> DecodeAggregateStatement(std::string_view bytes) {
  detail::Reader r(bytes, "aggregate statement");
  TRIB_RETURN_IF_ERROR(r.Magic(kAggregateMagic));
  SignedAggregate s;
  TRIB_ASSIGN_OR_RETURN(s.body.job_id, r.Str(kMaxJobId));
  TRIB_ASSIGN_OR_RETURN(s.body.owner, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(s.body.round, r.U64());
  TRIB_ASSIGN_OR_RETURN(s.body.attempt, r.U64());
  TRIB_ASSIGN_OR_RETURN(s.body.world, r.U64());
  TRIB_ASSIGN_OR_RETURN(s.body.shard, r.U64());
  TRIB_ASSIGN_OR_RETURN(s.body.numel, r.U64());
  TRIB_ASSIGN_OR_RETURN(const uint64_t n, r.U64());
  if (n == 0 || n > kMaxManifestShards) return Corruption("aggregate statement names " + std::to_string(n) + " contributions");
  s.body.contributions.resize(n);
  for (Digest& d : s.body.contributions) {
    TRIB_ASSIGN_OR_RETURN(d, r.Fixed<32>());
  }
  TRIB_ASSIGN_OR_RETURN(s.body.aggregate, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(s.body.residual_in, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(s.body.residual_out, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(s.signature, r.Fixed<64>());
  TRIB_RETURN_IF_ERROR(r.Done());
  return s;
}

Result<SignedAggregate> CheckAggregateAttestation(const ExpectedAggregate& e, std::string_view bytes) {
  TRIB_ASSIGN_OR_RETURN(SignedAggregate s, DecodeAggregateStatement(bytes));
  TRIB_RETURN_IF_ERROR(VerifyAggregate(s));
  const AggregateStatement& b = s.body;
  if (b.owner != e.owner) return ProtocolError("the aggregate statement is " + net::ShortKey(b.owner) + "'s, not the owner's");
  if (b.job_id != e.job_id || b.round != e.round || b.attempt != e.attempt || b.world != e.world ||
      b.shard != e.shard || b.numel != e.numel) {
    return ProtocolError("the aggregate statement is for job " + b.job_id + " round " + std::to_string(b.round) +
                         " attempt " + std::to_string(b.attempt) + ", shard " + std::to_string(b.shard) + " of " +
                         std::to_string(b.world) + " over " + std::to_string(b.numel) + " elements, not this call's");
  }
  if (b.aggregate != e.payload) return ProtocolError("the aggregate payload is not the one its statement names");
  if (e.receiver >= b.contributions.size() || b.contributions[e.receiver] != e.receiver_contribution) {
    return ProtocolError("the aggregate statement does not name the contribution rank " +
                         std::to_string(e.receiver) + " sent");
  }
  return s;
}

Status CheckAggregateEquivocation(const SignedAggregate& a, const SignedAggregate& b) {
  TRIB_RETURN_IF_ERROR(VerifyAggregate(a));
  TRIB_RETURN_IF_ERROR(VerifyAggregate(b));
  if (a.body.owner != b.body.owner || a.body.job_id != b.body.job_id || a.body.round != b.body.round ||
      a.body.attempt != b.body.attempt || a.body.shard != b.body.shard) {
    return Corruption("the two aggregate statements are about different shards: not equivocation");
  }
  if (a.body == b.body) return Corruption("the two aggregate statements are the same: not equivocation");
  return Status::Ok();
}

}  // namespace tributary::verifier
