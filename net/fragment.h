// Envelopes larger than one frame (a verifier opening of a large model's states: 12–24 bytes a
// parameter) travel as fragments. The sender serialises the whole envelope (signature and all)
// and sends it as `count` Fragment envelopes in order; the receiving connection reassembles them
// and delivers the inner envelope as if it had come in one frame, so no caller sees fragments.
// Fragments add transport only: whatever the inner envelope must prove (its signature) it
// proves once whole, and the connection's AEAD already authenticates every fragment.
//
// The receiver bounds what it buffers (max_message_bytes over all messages in progress): memory
// grows only with bytes actually received, never with a declared size.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "proto/tributary.pb.h"

namespace tributary::net {

namespace v1 = ::tributary::v1;

// A verifier opening with the post-step state is 24 bytes a parameter: 256 MiB holds ~10M.
inline constexpr uint64_t kDefaultMaxMessageBytes = uint64_t{256} << 20;

// The fragments of `envelope`, each carrying at most `piece_bytes` of its serialisation.
std::vector<v1::Envelope> FragmentEnvelope(const v1::Envelope& envelope, uint64_t message_id, size_t piece_bytes);

class Reassembler {
 public:
  explicit Reassembler(uint64_t max_message_bytes = kDefaultMaxMessageBytes) : max_bytes_(max_message_bytes) {}

  // The inner envelope once its last fragment arrived; nullopt before. ProtocolError for a
  // fragment out of order, a count that changes, a message over the bound, or an inner envelope
  // that does not parse or is itself a fragment.
  Result<std::optional<v1::Envelope>> Add(const v1::Fragment& fragment);
  uint64_t buffered_bytes() const { return buffered_; }

 private:
  struct Partial {
    uint32_t count = 0;
    uint32_t next = 0;
    std::string bytes;
  };
  uint64_t max_bytes_;
  uint64_t buffered_ = 0;
  std::map<uint64_t, Partial> partial_;
};

}  // namespace tributary::net
