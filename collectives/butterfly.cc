#include "collectives/butterfly.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "net/frame.h"

namespace tributary::collectives {
namespace {

enum class Phase { kReduceScatter, kAllGather };

const char* PhaseName(Phase phase) {
  return phase == Phase::kReduceScatter ? "reduce-scatter" : "all-gather";
}

struct ShardLayout {
  uint64_t numel;
  uint32_t world;
  uint64_t Begin(uint32_t s) const { return ButterflyShardBegin(numel, world, s); }
  uint64_t Size(uint32_t s) const { return Begin(s + 1) - Begin(s); }
};

using codec::NonFinite;
using codec::ValueName;

// One message (or failure) from a peer, posted by the receive and send handlers.
struct Arrival {
  uint32_t peer = 0;
  Phase phase = Phase::kReduceScatter;
  bool sending = false;                // a send to `peer` failed
  Status status;                       // transport or header failure
  std::optional<std::string> relayed;  // the peer sent an Error instead
  std::string payload;
};

class Inbox {
 public:
  void Push(Arrival a) {
    {
      std::lock_guard lock(mu_);
      arrivals_.push_back(std::move(a));
    }
    cv_.notify_all();
  }
  // Everything that arrived, waiting until something did or `until` passed.
  std::deque<Arrival> Take(Deadline until) {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, until, [&] { return !arrivals_.empty(); });
    return std::exchange(arrivals_, {});
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Arrival> arrivals_;
};

// What one peer sends us in one call, in order.
struct PeerPlan {
  struct Message {
    Phase phase;
    std::string tag;
    uint64_t offset;
    uint64_t max_bytes;  // the codec's bound for the shard: larger is refused before allocating
  };
  uint32_t peer;
  std::shared_ptr<net::Connection> conn;
  std::string job_id;
  uint64_t numel;
  std::vector<Message> messages;
};

Status CheckHeader(const v1::Envelope& env, const PeerPlan& plan, const PeerPlan::Message& m) {
  TRIB_RETURN_IF_ERROR(net::CheckEnvelope(env, plan.job_id));
  TRIB_RETURN_IF_ERROR(net::CheckTensorKind(env, m.tag, plan.numel));
  const v1::TensorHeader& h = env.tensor();
  if (h.offset() != m.offset) {
    return ProtocolError("wrong shard: offset " + std::to_string(h.offset()) + ", expected " +
                         std::to_string(m.offset));
  }
  if (h.nbytes() == 0 || h.nbytes() > m.max_bytes) {
    return ProtocolError("payload of " + std::to_string(h.nbytes()) +
                         " bytes is outside (0, " + std::to_string(m.max_bytes) +
                         "], the codec's bound for this shard");
  }
  return Status::Ok();
}

// Receives plan->messages[index..] one after the other on the connection's strand; each one
// (or the first failure) becomes an Arrival. Holds only shared state, so it may outlive the call.
void ReceiveFrom(std::shared_ptr<Inbox> inbox, std::shared_ptr<const PeerPlan> plan,
                 size_t index) {
  if (index == plan->messages.size()) return;
  plan->conn->AsyncReceive([inbox, plan, index](Result<v1::Envelope> env) {
    const PeerPlan::Message& m = plan->messages[index];
    Arrival a{.peer = plan->peer, .phase = m.phase};
    if (!env.ok()) {
      a.status = env.status();
      return inbox->Push(std::move(a));
    }
    if (env->has_error() && net::CheckEnvelope(*env, plan->job_id).ok()) {
      a.relayed = env->error().message();
      return inbox->Push(std::move(a));
    }
    if (Status valid = CheckHeader(*env, *plan, m); !valid.ok()) {
      a.status = valid;
      return inbox->Push(std::move(a));
    }
    auto payload = std::make_shared<std::string>(env->tensor().nbytes(), '\0');
    const auto into = std::as_writable_bytes(std::span(payload->data(), payload->size()));
    plan->conn->AsyncReceiveRaw(into, [inbox, plan, index, payload, a](Status st) mutable {
      if (!st.ok()) {
        a.status = st;
        return inbox->Push(std::move(a));
      }
      a.payload = std::move(*payload);
      inbox->Push(std::move(a));
      ReceiveFrom(inbox, plan, index + 1);
    });
  });
}

// One call on one rank.
class ButterflyOp {
 public:
  ButterflyOp(Mesh& mesh, std::span<const float> input, const ButterflyOptions& options,
              CodecState& codecs)
      : mesh_(mesh),
        input_(input),
        options_(options),
        codecs_(codecs),
        layout_{input.size(), mesh.world()},
        contributions_(mesh.world()),
        have_contribution_(mesh.world(), false),
        have_aggregate_(mesh.world(), false),
        binds_aggregates_(options.binding != nullptr && options.binding->attest_aggregate != nullptr),
        contribution_digests_(binds_aggregates_ ? mesh.world() : 0),
        contribution_payloads_(binds_aggregates_ || options.record ? mesh.world() : 0),
        output_(input.size()) {
    for (Phase phase : {Phase::kReduceScatter, Phase::kAllGather}) {
      tags_[static_cast<int>(phase)] = ButterflyWireTag(options.tag, PhaseName(phase),
                                                        codecs.codec(), options.aggregator,
                                                        options.average);
    }
    if (options.binding) tags_[static_cast<int>(Phase::kReduceScatter)] += "/bound";
    if (binds_aggregates_) tags_[static_cast<int>(Phase::kAllGather)] += "/bound";
    record_.shard = me();
    record_.begin = layout_.Begin(me());
    record_.size = layout_.Size(me());
  }

  Status Run() {
    TRIB_RETURN_IF_ERROR(StartReceives());
    TRIB_RETURN_IF_ERROR(SendContributions());
    while (!Done()) {
      std::deque<Arrival> arrivals = inbox_->Take(options_.deadline);
      if (arrivals.empty() && Clock::now() >= options_.deadline) return TimedOut();
      TRIB_RETURN_IF_ERROR(Process(arrivals));
    }
    return FlushAll();
  }

  std::span<const float> result() const { return output_; }
  ShardRecord& record() { return record_; }
  const std::optional<PeerFailure>& failure() const { return failure_; }

 private:
  uint32_t me() const { return mesh_.rank(); }
  uint32_t world() const { return mesh_.world(); }
  const std::string& tag(Phase phase) const { return tags_[static_cast<int>(phase)]; }

  Status StartReceives() {
    const uint64_t own = layout_.Size(me());
    uint64_t own_bound = 0;
    if (own > 0) {
      TRIB_ASSIGN_OR_RETURN(own_bound, codecs_.decoder().MaxPayloadBytes(own));
      if (options_.binding) own_bound += 4 + options_.binding->max_attestation_bytes;
    }
    for (uint32_t p = 0; p < world(); ++p) {
      if (p == me()) continue;
      auto plan = std::make_shared<PeerPlan>();
      plan->peer = p;
      plan->conn = mesh_.peer(p);
      plan->job_id = mesh_.job_id();
      plan->numel = layout_.numel;
      // On each connection the sender's contribution to our shard comes before its aggregate.
      if (own > 0) {
        plan->messages.push_back({Phase::kReduceScatter, tag(Phase::kReduceScatter),
                                  layout_.Begin(me()), own_bound});
      }
      if (const uint64_t theirs = layout_.Size(p); theirs > 0) {
        TRIB_ASSIGN_OR_RETURN(size_t bound, codecs_.decoder().MaxPayloadBytes(theirs));
        if (binds_aggregates_) bound += 4 + options_.binding->max_attestation_bytes;
        plan->messages.push_back(
            {Phase::kAllGather, tag(Phase::kAllGather), layout_.Begin(p), bound});
        ++aggregates_expected_;
      }
      ReceiveFrom(inbox_, std::move(plan), 0);
    }
    return Status::Ok();
  }

  // Encodes and sends our slice of every other shard, starting with shard me + 1 so that the
  // owners are not all hit at once, then adds our own contribution. Whatever arrives meanwhile
  // is handled between encodes.
  Status SendContributions() {
    if (options_.binding) return SendBoundContributions();
    for (uint32_t k = 1; k <= world(); ++k) {
      const uint32_t shard = (me() + k) % world();
      const uint64_t size = layout_.Size(shard);
      if (size == 0) continue;
      const uint64_t begin = layout_.Begin(shard);
      TRIB_ASSIGN_OR_RETURN(CodecState::Encoded encoded,
                            codecs_.EncodeContribution(shard, begin, input_.subspan(begin, size)));
      if (shard == me()) {
        TRIB_RETURN_IF_ERROR(AddContribution(me(), std::move(encoded.decoded), encoded.payload));
      } else {
        TRIB_RETURN_IF_ERROR(Send(shard, Phase::kReduceScatter, begin,
                                  std::make_shared<const std::string>(std::move(encoded.payload))));
      }
      TRIB_RETURN_IF_ERROR(Process(inbox_->Take(Clock::now())));
    }
    return Status::Ok();
  }

  // With a binding the sender must state every payload's digest before sending any, so all
  // shards are encoded first; then each goes out behind its attestation (same stagger).
  Status SendBoundContributions() {
    if (options_.binding->tamper_residual && !codecs_.contribution_residual().empty()) {
      std::vector<float> forged(codecs_.contribution_residual().begin(), codecs_.contribution_residual().end());
      options_.binding->tamper_residual(forged);
      TRIB_RETURN_IF_ERROR(codecs_.SetContributionResidual(std::move(forged)));
    }
    // What this rank owed before encoding: stated with the payloads, so an audit can re-encode.
    const std::vector<float> residual_in(codecs_.contribution_residual().begin(),
                                         codecs_.contribution_residual().end());
    std::vector<CodecState::Encoded> encoded(world());
    std::vector<Digest> digests(world());
    for (uint32_t shard = 0; shard < world(); ++shard) {
      const uint64_t size = layout_.Size(shard);
      if (size == 0) continue;
      const uint64_t begin = layout_.Begin(shard);
      TRIB_ASSIGN_OR_RETURN(encoded[shard],
                            codecs_.EncodeContribution(shard, begin, input_.subspan(begin, size)));
      if (options_.binding->tamper_payload && shard != me()) {
        options_.binding->tamper_payload(shard, encoded[shard].payload);
      }
      digests[shard] = Sha256Of(encoded[shard].payload);
    }
    if (binds_aggregates_) contribution_digests_[me()] = digests[me()];
    TRIB_ASSIGN_OR_RETURN(std::vector<std::string> attestations,
                          options_.binding->attest(digests, residual_in, codecs_.contribution_residual()));
    if (attestations.size() != world()) {
      return Internal("the binding returned " + std::to_string(attestations.size()) +
                      " attestations for " + std::to_string(world()) + " shards");
    }
    for (uint32_t k = 1; k <= world(); ++k) {
      const uint32_t shard = (me() + k) % world();
      if (layout_.Size(shard) == 0) continue;
      if (shard == me()) {
        TRIB_RETURN_IF_ERROR(AddContribution(me(), std::move(encoded[shard].decoded), encoded[shard].payload));
        continue;
      }
      TRIB_ASSIGN_OR_RETURN(std::string framed, Framed(attestations[shard], encoded[shard].payload));
      encoded[shard] = {};
      TRIB_RETURN_IF_ERROR(Send(shard, Phase::kReduceScatter, layout_.Begin(shard),
                                std::make_shared<const std::string>(std::move(framed))));
      TRIB_RETURN_IF_ERROR(Process(inbox_->Take(Clock::now())));
    }
    return Status::Ok();
  }

  // u32 length ‖ attestation ‖ payload: a bound message.
  Result<std::string> Framed(const std::string& attestation, const std::string& payload) const {
    if (attestation.size() > options_.binding->max_attestation_bytes) {
      return InvalidArgument("attestation of " + std::to_string(attestation.size()) + " bytes is over the bound");
    }
    std::string framed;
    framed.reserve(4 + attestation.size() + payload.size());
    for (int i = 0; i < 4; ++i) framed.push_back(static_cast<char>((attestation.size() >> (8 * i)) & 0xff));
    framed += attestation;
    framed += payload;
    return framed;
  }

  // Splits a bound message into `attestation` and `payload` (SHA-256 in `digest`), for the
  // binding to check before any decoding.
  Status Unframe(uint32_t from, const std::string& where, std::string& payload, std::string& attestation,
                 Digest& digest) {
    if (payload.size() < 4) return Blame(from, ProtocolError(where + ": no attestation"));
    uint64_t n = 0;
    for (int i = 0; i < 4; ++i) n |= uint64_t{static_cast<uint8_t>(payload[i])} << (8 * i);
    if (n > options_.binding->max_attestation_bytes || n > payload.size() - 4) {
      return Blame(from, ProtocolError(where + ": attestation length " + std::to_string(n) + " out of bounds"));
    }
    attestation = payload.substr(4, n);
    payload.erase(0, 4 + n);
    digest = Sha256Of(payload);
    return Status::Ok();
  }

  Status CheckBound(uint32_t from, std::string& payload, std::string& attestation) {
    const std::string where = "contribution to shard " + std::to_string(me()) + " from " + mesh_.Describe(from);
    Digest digest{};
    TRIB_RETURN_IF_ERROR(Unframe(from, where, payload, attestation, digest));
    Status st = options_.binding->check(from, attestation, digest);
    if (!st.ok()) return Blame(from, st.WithContext(where));
    if (binds_aggregates_) contribution_digests_[from] = digest;
    return Status::Ok();
  }

  Status Send(uint32_t to, Phase phase, uint64_t offset,
              std::shared_ptr<const std::string> payload) {
    v1::Envelope env = net::MakeEnvelope(mesh_.job_id());
    v1::TensorHeader* h = env.mutable_tensor();
    h->set_tag(tag(phase));
    h->set_dtype(v1::DTYPE_F32);
    h->set_numel(layout_.numel);
    h->set_offset(offset);
    h->set_nbytes(payload->size());
    TRIB_ASSIGN_OR_RETURN(std::string frame, net::EncodeFrame(env));
    // The payload is written straight from *payload, which the callback keeps alive until then.
    const auto tail = std::as_bytes(std::span(payload->data(), payload->size()));
    mesh_.peer(to)->AsyncSend(std::make_shared<const std::string>(std::move(frame)), tail,
                              [inbox = inbox_, to, phase, payload](Status st) {
                                if (st.ok()) return;
                                inbox->Push({.peer = to, .phase = phase, .sending = true,
                                             .status = std::move(st)});
                              });
    return Status::Ok();
  }

  Status Process(std::deque<Arrival> arrivals) {
    return HandleArrivals(arrivals, options_.deadline, [&](Deadline until) { return inbox_->Take(until); },
                          [&](Arrival& a) { return OnArrival(a); });
  }

  Status OnArrival(Arrival& a) {
    if (a.relayed) {
      failure_ = mesh_.FailureOfRelayedAbort(a.peer, *a.relayed);
      return Aborted(mesh_.Describe(a.peer) + " aborted the collective: " + *a.relayed);
    }
    if (!a.status.ok()) {
      const std::string where = a.sending ? std::string("sending to ")
                                          : std::string(PhaseName(a.phase)) + " from ";
      return Blame(a.peer, a.status.WithContext(where + mesh_.Describe(a.peer)));
    }
    if (a.phase == Phase::kReduceScatter) return OnContribution(a.peer, std::move(a.payload));
    return OnAggregate(a.peer, std::move(a.payload));
  }

  Status OnContribution(uint32_t from, std::string payload) {
    std::string attestation;
    if (options_.binding) TRIB_RETURN_IF_ERROR(CheckBound(from, payload, attestation));
    auto decoded = codec::DecodeChecked(codecs_.decoder(), payload, layout_.Size(me()));
    if (!decoded.ok()) {
      // The sender signed these very bytes: with a binding, that is provable.
      if (options_.binding && options_.binding->bad_payload) options_.binding->bad_payload(from, attestation, payload);
      return Blame(from, decoded.status().WithContext("contribution to shard " +
                                                      std::to_string(me()) + " from " +
                                                      mesh_.Describe(from)));
    }
    return AddContribution(from, std::move(decoded).value(), payload);
  }

  Status AddContribution(uint32_t from, std::vector<float> decoded, const std::string& payload) {
    contributions_[from] = std::move(decoded);
    have_contribution_[from] = true;
    if (!contribution_payloads_.empty()) contribution_payloads_[from] = payload;
    if (++contributions_in_ == world()) return ReduceOwnShard();
    return Status::Ok();
  }

  // Every contribution to our shard is in: aggregate, encode once, send to everyone.
  Status ReduceOwnShard() {
    auto values = AggregateShard(options_.aggregator, contributions_, options_.average,
                                 options_.aggregate_threads);
    if (!values.ok()) {
      return values.status().WithContext("aggregating shard " + std::to_string(me()));
    }
    const uint64_t begin = layout_.Begin(me());
    const uint64_t size = values->size();
    if (binds_aggregates_ && options_.binding->tamper_aggregate) options_.binding->tamper_aggregate(*values);
    // This shard's part of what the owner owed before encoding: stated with the aggregate, for
    // its audit (the rest of the owner's residual is zero and plays no part).
    auto shard_part = [&](std::span<const float> residual) {
      return residual.empty() ? residual : residual.subspan(begin, size);
    };
    std::vector<float> residual_in;
    if (binds_aggregates_) {
      const auto owed = shard_part(codecs_.aggregate_residual());
      residual_in.assign(owed.begin(), owed.end());
    }
    TRIB_ASSIGN_OR_RETURN(CodecState::Encoded encoded, codecs_.EncodeAggregate(begin, *values));
    std::copy(encoded.decoded.begin(), encoded.decoded.end(), output_.begin() + begin);
    auto payload = std::make_shared<const std::string>(std::move(encoded.payload));
    if (options_.record) {
      record_.contributions = contribution_payloads_;
      record_.aggregate = *values;
      record_.aggregate_payload = *payload;
    }
    auto sent = payload;
    if (binds_aggregates_) {
      TRIB_ASSIGN_OR_RETURN(std::string statement,
                            options_.binding->attest_aggregate(contribution_digests_, std::move(contribution_payloads_),
                                                               Sha256Of(*payload), residual_in,
                                                               shard_part(codecs_.aggregate_residual())));
      TRIB_ASSIGN_OR_RETURN(std::string framed, Framed(statement, *payload));
      sent = std::make_shared<const std::string>(std::move(framed));
    }
    for (uint32_t p = 0; p < world(); ++p) {
      if (p != me()) TRIB_RETURN_IF_ERROR(Send(p, Phase::kAllGather, begin, sent));
    }
    contributions_ = {};
    contribution_payloads_ = {};
    reduced_ = true;
    return Status::Ok();
  }

  Status OnAggregate(uint32_t from, std::string payload) {
    if (binds_aggregates_) {
      const std::string where = "aggregate of shard " + std::to_string(from) + " from " + mesh_.Describe(from);
      std::string statement;
      Digest digest{};
      TRIB_RETURN_IF_ERROR(Unframe(from, where, payload, statement, digest));
      Status st = options_.binding->check_aggregate(from, statement, digest);
      if (!st.ok()) return Blame(from, st.WithContext(where));
    }
    auto decoded = codec::DecodeChecked(codecs_.decoder(), payload, layout_.Size(from));
    if (!decoded.ok()) {
      return Blame(from, decoded.status().WithContext("aggregate of shard " +
                                                      std::to_string(from) + " from " +
                                                      mesh_.Describe(from)));
    }
    std::copy(decoded->begin(), decoded->end(), output_.begin() + layout_.Begin(from));
    have_aggregate_[from] = true;
    ++aggregates_in_;
    return Status::Ok();
  }

  bool Done() const {
    const bool own_done = reduced_ || layout_.Size(me()) == 0;
    return own_done && aggregates_in_ == aggregates_expected_;
  }

  // Names everyone we still wait for. Blames the first peer whose contribution to our shard is
  // missing, else the first whose aggregate is (that owner may itself be waiting for someone
  // else; its own report will say so).
  Status TimedOut() {
    std::string missing;
    std::optional<uint32_t> contribution, aggregate;
    for (uint32_t p = 0; p < world(); ++p) {
      if (p == me()) continue;
      std::vector<std::string> what;
      if (layout_.Size(me()) > 0 && !have_contribution_[p]) {
        what.push_back("its contribution to shard " + std::to_string(me()));
        if (!contribution) contribution = p;
      }
      if (layout_.Size(p) > 0 && !have_aggregate_[p]) {
        what.push_back("the aggregate of its shard");
        if (!aggregate) aggregate = p;
      }
      if (what.empty()) continue;
      missing += (missing.empty() ? "" : "; ") + mesh_.Describe(p) + ": " + what[0] +
                 (what.size() > 1 ? " and " + what[1] : "");
    }
    const uint32_t blamed = contribution.value_or(aggregate.value_or(me()));
    return Blame(blamed, DeadlineExceeded("still waiting at the deadline for " + missing));
  }

  Status FlushAll() {
    for (uint32_t p = 0; p < world(); ++p) {
      if (p == me()) continue;
      Status st = mesh_.peer(p)->Flush(options_.deadline);
      if (!st.ok()) return Blame(p, st.WithContext("sending to " + mesh_.Describe(p)));
    }
    return Status::Ok();
  }

  Status Blame(uint32_t peer, const Status& why, std::optional<uint32_t> reported_by = {}) {
    failure_ = mesh_.FailureOf(peer, reported_by);
    return why;
  }

  Mesh& mesh_;
  std::span<const float> input_;
  const ButterflyOptions& options_;
  CodecState& codecs_;
  const ShardLayout layout_;
  std::string tags_[2];
  std::shared_ptr<Inbox> inbox_ = std::make_shared<Inbox>();
  std::vector<std::vector<float>> contributions_;  // decoded, by rank, to our shard
  std::vector<bool> have_contribution_;
  uint32_t contributions_in_ = 0;
  bool reduced_ = false;
  std::vector<bool> have_aggregate_;
  const bool binds_aggregates_;
  std::vector<Digest> contribution_digests_;        // by rank, when the all-gather is bound
  std::vector<std::string> contribution_payloads_;  // by rank, when bound or recorded
  uint32_t aggregates_in_ = 0;
  uint32_t aggregates_expected_ = 0;
  std::vector<float> output_;  // staged: copied into the caller's data only on success
  ShardRecord record_;
  std::optional<PeerFailure> failure_;
};

}  // namespace

Result<std::vector<float>> AggregateShard(const robust::AggregatorSpec& spec,
                                          const std::vector<std::vector<float>>& decoded,
                                          bool average, int threads) {
  const std::vector<std::span<const float>> inputs(decoded.begin(), decoded.end());
  TRIB_ASSIGN_OR_RETURN(robust::AggregateResult result,
                        robust::Aggregate(spec, inputs, {.threads = threads}));
  if (!average) {
    const float n = static_cast<float>(decoded.size());
    for (size_t i = 0; i < result.values.size(); ++i) {
      result.values[i] *= n;
      if (NonFinite(result.values[i])) {
        return InvalidArgument("the sum overflows float at shard element " + std::to_string(i));
      }
    }
  }
  return std::move(result.values);
}

// Aggregate checks the spec against n, and empty contributions make that all it does.
Status CheckAggregatorFits(const robust::AggregatorSpec& spec, uint32_t world) {
  const std::vector<std::span<const float>> empty(world);
  auto dry = robust::Aggregate(spec, empty);
  return dry.ok() ? Status::Ok() : dry.status();
}

std::string ButterflyWireTag(const std::string& tag, std::string_view phase,
                             const std::string& codec, const robust::AggregatorSpec& aggregator,
                             bool average) {
  return tag + "/" + std::string(phase) + "/" + codec + "/" + robust::ToString(aggregator) + "/" +
         (average ? "mean" : "sum");
}

Result<std::vector<float>> ReduceShard(const codec::Codec& codec,
                                       std::span<const std::string> contributions,
                                       size_t shard_numel,
                                       const robust::AggregatorSpec& aggregator, bool average,
                                       int threads) {
  std::vector<std::vector<float>> decoded;
  for (size_t i = 0; i < contributions.size(); ++i) {
    auto values = codec::DecodeChecked(codec, contributions[i], shard_numel);
    if (!values.ok()) {
      return values.status().WithContext("contribution of rank " + std::to_string(i));
    }
    decoded.push_back(std::move(values).value());
  }
  return AggregateShard(aggregator, decoded, average, threads);
}

Result<ReencodedContributions> ReencodeContributions(std::string_view codec, uint32_t world,
                                                     std::span<const float> values,
                                                     std::span<const float> owed) {
  if (world == 0) return InvalidArgument("no shard to encode for");
  TRIB_ASSIGN_OR_RETURN(auto state, CodecState::Make(codec));
  TRIB_RETURN_IF_ERROR(state->Bind(world, 0, values.size()));
  ReencodedContributions out;
  out.lossy = state->lossy();
  if (!owed.empty()) TRIB_RETURN_IF_ERROR(state->SetContributionResidual({owed.begin(), owed.end()}));
  out.shard_digests.resize(world);
  for (uint32_t s = 0; s < world; ++s) {
    const uint64_t begin = ButterflyShardBegin(values.size(), world, s);
    const uint64_t size = ButterflyShardBegin(values.size(), world, s + 1) - begin;
    if (size == 0) continue;
    TRIB_ASSIGN_OR_RETURN(CodecState::Encoded encoded, state->EncodeContribution(s, begin, values.subspan(begin, size)));
    out.shard_digests[s] = Sha256Of(encoded.payload);
  }
  out.residual_left.assign(state->contribution_residual().begin(), state->contribution_residual().end());
  return out;
}

Result<ReproducedAggregate> ReproduceAggregate(std::string_view codec, uint32_t world, uint32_t shard,
                                               uint64_t numel, std::span<const std::string> contributions,
                                               std::span<const float> owed,
                                               const robust::AggregatorSpec& aggregator, bool average) {
  if (world == 0 || shard >= world) return InvalidArgument("shard " + std::to_string(shard) + " of " + std::to_string(world));
  if (contributions.size() != world) {
    return InvalidArgument(std::to_string(contributions.size()) + " contributions for " + std::to_string(world) + " ranks");
  }
  const uint64_t begin = ButterflyShardBegin(numel, world, shard);
  const uint64_t size = ButterflyShardBegin(numel, world, shard + 1) - begin;
  if (size == 0) return InvalidArgument("shard " + std::to_string(shard) + " is empty: it has no aggregate");
  if (!owed.empty() && owed.size() != size) {
    return InvalidArgument("a residual of " + std::to_string(owed.size()) + " elements for a shard of " +
                           std::to_string(size));
  }
  TRIB_ASSIGN_OR_RETURN(auto state, CodecState::Make(codec));
  TRIB_RETURN_IF_ERROR(state->Bind(world, shard, numel));
  if (!owed.empty()) {
    std::vector<float> whole(numel, 0.0f);
    std::copy(owed.begin(), owed.end(), whole.begin() + begin);
    TRIB_RETURN_IF_ERROR(state->SetAggregateResidual(std::move(whole)));
  }
  TRIB_ASSIGN_OR_RETURN(std::vector<float> values,
                        ReduceShard(state->decoder(), contributions, size, aggregator, average));
  TRIB_ASSIGN_OR_RETURN(CodecState::Encoded encoded, state->EncodeAggregate(begin, values));
  ReproducedAggregate out;
  out.payload = Sha256Of(encoded.payload);
  const auto left = state->aggregate_residual();
  if (!left.empty()) out.residual_left.assign(left.begin() + begin, left.begin() + begin + size);
  return out;
}

Result<CollectiveStats> ButterflyAllreduce(Mesh& mesh, std::span<float> data,
                                           const ButterflyOptions& options) {
  MeshCall call(mesh, "butterfly", options.tag);
  const std::string& ctx = call.context();
  TRIB_RETURN_IF_ERROR(call.CheckUsable());
  // Argument checks: nothing has been sent yet, so the mesh stays usable.
  std::unique_ptr<CodecState> local;
  CodecState* codecs = options.codec_state;
  if (codecs == nullptr) {
    auto made = CodecState::Make(options.codec);
    if (!made.ok()) return made.status().WithContext(ctx);
    local = std::move(made).value();
    codecs = local.get();
  } else {
    auto spec = codec::MakeCodec(options.codec);
    if (!spec.ok()) return spec.status().WithContext(ctx);
    if ((*spec)->name() != codecs->codec()) {
      return InvalidArgument(ctx + ": options name codec '" + (*spec)->name() +
                             "' but the codec state is for '" + codecs->codec() + "'");
    }
  }
  if (Status fits = CheckAggregatorFits(options.aggregator, mesh.world()); !fits.ok()) {
    return fits.WithContext(ctx + ": aggregator " + robust::ToString(options.aggregator));
  }
  if (data.empty()) return CollectiveStats{};
  if (Status bound = codecs->Bind(mesh.world(), mesh.rank(), data.size()); !bound.ok()) {
    return bound.WithContext(ctx);
  }
  call.Start();
  codecs->Checkpoint();
  ButterflyOp op(mesh, data, options, *codecs);
  Status st = op.Run();
  const CollectiveStats stats = call.Stats();
  if (!st.ok()) {
    codecs->Rollback();
    // Before `op` goes away: afterwards no queued send or handler touches anything of this call
    // but the shared state they hold themselves.
    mesh.Abort(st, op.failure());
    return st.WithContext(ctx);
  }
  std::copy(op.result().begin(), op.result().end(), data.begin());
  if (options.record) *options.record = std::move(op.record());
  return stats;
}

}  // namespace tributary::collectives
