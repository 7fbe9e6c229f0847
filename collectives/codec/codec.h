// Gradient / pseudo-gradient compression codecs for the wire.
//
// One Codec instance per (peer, tensor stream). Encode is stateful: lossy codecs carry an
// error-feedback residual (residual += input; payload = C(residual); residual -= decode(payload)),
// so what one round drops is sent in later rounds and the long-run average of decoded outputs is
// unbiased. PowerSGD also keeps its warm-start Q. Decode is stateless and const: it may be called
// from any thread on payloads from untrusted peers, validates every header field, size, index,
// scale and value before trusting it, allocates only `expected_numel` floats (after the payload
// size is known to be consistent), and answers Corruption naming what was wrong.
//
// Specs (also what name() returns, canonicalised):
//   fp32                 identity, 4 bytes/element (lossless, no residual)
//   fp16 | bf16          2 bytes/element; saturates at the format's largest finite value
//   int8[:BLOCK]         blockwise absmax, fp32 scale per BLOCK elements (default 64)
//   int4[:BLOCK]         same, codes in [-7, 7] packed two per byte
//   topk:FRACTION        k = ceil(FRACTION·n) largest-magnitude entries; delta-varint indices
//   powersgd:RANK[:COLS] the flat tensor viewed as a ceil(n/COLS)×COLS matrix (zero-padded;
//                        default COLS = ceil(sqrt(n))), pass the tensor's last dimension for a
//                        true 2-D view; sends P and Q in fp32; one warm-started power iteration
//   dct-topk:FRACTION[:CHUNK]  orthonormal DCT-II per CHUNK elements (default 64, at most 256),
//                        keeps round(FRACTION·CHUNK) (at least 1) coefficients per chunk
//
// Every payload starts with the same 12-byte header (see wire_format.h): magic "TC", codec id,
// format version, numel; then the codec's parameters, then its data, all little-endian.
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tributary::collectives::codec {

// Stable on the wire: never renumber.
enum class CodecId : uint8_t {
  kFp32 = 1,
  kFp16 = 2,
  kBf16 = 3,
  kInt8 = 4,
  kInt4 = 5,
  kTopK = 6,
  kPowerSgd = 7,
  kDctTopK = 8,
};

// Largest tensor one stream may carry (indices and matrix dimensions are 32-bit on the wire).
inline constexpr uint64_t kMaxNumel = (uint64_t{1} << 32) - 1;

struct CodecOptions {
  // Local choice, not part of the wire format. Off only to show what error feedback buys.
  bool error_feedback = true;
  // Seeds PowerSGD's first Q. Affects quality only; the decoder never needs it.
  uint64_t seed = 0x506f77657253474bULL;
};

class Codec {
 public:
  virtual ~Codec() = default;

  virtual CodecId id() const = 0;
  // Canonical spec ("int8:64"); MakeCodec(name()) builds a codec with the same wire format.
  virtual std::string name() const = 0;
  virtual bool lossy() const = 0;

  // Encodes `values` plus the carried residual. The first call fixes the stream's numel; a later
  // call with another size is FailedPrecondition (Reset() first). Non-finite input, or input
  // whose sum with the residual overflows, is InvalidArgument naming the index and leaves the
  // state untouched; any later failure resets the stream (as Reset()). Not thread-safe.
  virtual Result<std::string> Encode(std::span<const float> values) = 0;

  // Decodes a payload made by a codec with the same name() for a tensor of `expected_numel`
  // elements. Never trusts the payload; see the file comment. Thread-safe.
  virtual Result<std::vector<float>> Decode(std::string_view payload,
                                            size_t expected_numel) const = 0;

  // Upper bound on Encode's payload size for `numel` elements (exact for every codec but topk,
  // whose varint indices make it smaller), so a receiver can bound a frame before reading it.
  virtual Result<size_t> MaxPayloadBytes(size_t numel) const = 0;

  // Forgets the residual and any warm-start state; the next Encode starts a new stream.
  virtual void Reset() = 0;

  // The error-feedback residual (what has been owed to the wire so far); empty when the codec
  // is lossless or error feedback is off.
  virtual std::span<const float> residual() const = 0;
};

// Builds a codec from its spec (see the file comment). InvalidArgument names the bad part.
Result<std::unique_ptr<Codec>> MakeCodec(std::string_view spec, const CodecOptions& options = {});

// NaN or ±Inf, from the exponent bits alone: branch-free, so loops over it vectorise.
inline bool NonFinite(float f) { return (std::bit_cast<uint32_t>(f) & 0x7f800000u) == 0x7f800000u; }
// The index of the first NaN or ±Inf in `v`, or v.size(): finds the culprit once a vectorised
// check has failed.
inline size_t FirstNonFinite(std::span<const float> v) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (NonFinite(v[i])) return i;
  }
  return v.size();
}
// "NaN", "+Inf" or "-Inf", for errors that name a bad value.
inline std::string ValueName(float f) { return std::isnan(f) ? "NaN" : (f > 0 ? "+Inf" : "-Inf"); }

// Decode plus a finiteness check (InvalidArgument naming the element): what a receiver accepts.
// Every codec's Decode already refuses non-finite values; checking again keeps "no non-finite
// value reaches an aggregator" independent of each codec's care. A shard owner (butterfly,
// direct all-reduce) and the checker of a bad-payload proof (verifier/contribution.h) both call
// this, so they agree on what a bad payload is.
Result<std::vector<float>> DecodeChecked(const Codec& codec, std::string_view payload, size_t numel);

// fp32 bytes over payload bytes: 4·numel / payload_bytes (0 when the payload is empty).
double CompressionRatio(size_t numel, size_t payload_bytes);

}  // namespace tributary::collectives::codec
