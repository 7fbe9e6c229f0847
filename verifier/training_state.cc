#include "verifier/training_state.h"

#include <bit>
#include <cstring>
#include <span>

#include "verifier/detail/encoding.h"

namespace tributary::verifier {
namespace {

constexpr std::string_view kAdamLabel = "tributary.verifier.adamw.v1";
constexpr std::string_view kStateMagic = "TRIBTSTATE1";

static_assert(std::endian::native == std::endian::little, "canonical bytes are little-endian");

void HashFloats(Sha256& h, const std::vector<float>& v) {
  h.UpdateU64(v.size());
  h.Update(std::as_bytes(std::span<const float>(v)));
}

void PutFloats(detail::Writer& w, const std::vector<float>& v) {
  w.U64(v.size());
  w.Raw(std::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
}

Result<std::vector<float>> GetFloats(detail::Reader& r, uint64_t max_params) {
  TRIB_ASSIGN_OR_RETURN(uint64_t n, r.U64());
  if (n > max_params) return Corruption("training state has more values than the model");
  TRIB_ASSIGN_OR_RETURN(std::string raw, r.Bytes(n * sizeof(float)));
  std::vector<float> out(n);
  std::memcpy(out.data(), raw.data(), raw.size());
  return out;
}

}  // namespace

Digest OptimizerDigest(const TrainingState& state) {
  Sha256 h;
  h.Update(kAdamLabel);
  h.UpdateU64(static_cast<uint64_t>(state.adam_step));
  HashFloats(h, state.exp_avg);
  HashFloats(h, state.exp_avg_sq);
  return h.Finish();
}

std::string EncodeTrainingState(const TrainingState& state) {
  detail::Writer w;
  w.Raw(kStateMagic);
  PutFloats(w, state.params);
  w.U64(static_cast<uint64_t>(state.adam_step));
  PutFloats(w, state.exp_avg);
  PutFloats(w, state.exp_avg_sq);
  return std::move(w).bytes();
}

Result<TrainingState> DecodeTrainingState(std::string_view bytes, uint64_t max_params) {
  detail::Reader r(bytes, "training state");
  TRIB_RETURN_IF_ERROR(r.Magic(kStateMagic));
  TrainingState s;
  TRIB_ASSIGN_OR_RETURN(s.params, GetFloats(r, max_params));
  TRIB_ASSIGN_OR_RETURN(uint64_t step, r.U64());
  if (step > static_cast<uint64_t>(INT64_MAX)) return Corruption("training state has an absurd step");
  s.adam_step = static_cast<int64_t>(step);
  TRIB_ASSIGN_OR_RETURN(s.exp_avg, GetFloats(r, max_params));
  TRIB_ASSIGN_OR_RETURN(s.exp_avg_sq, GetFloats(r, max_params));
  TRIB_RETURN_IF_ERROR(r.Done());
  const size_t moments = s.adam_step == 0 ? 0 : s.params.size();
  if (s.exp_avg.size() != moments || s.exp_avg_sq.size() != moments) {
    return Corruption("training state: optimiser moments must be empty at step 0 and as long as θ after");
  }
  return s;
}

}  // namespace tributary::verifier
