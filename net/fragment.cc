#include "net/fragment.h"

#include <algorithm>

namespace tributary::net {

std::vector<v1::Envelope> FragmentEnvelope(const v1::Envelope& envelope, uint64_t message_id, size_t piece_bytes) {
  std::string bytes;
  envelope.SerializeToString(&bytes);
  piece_bytes = std::max<size_t>(1, piece_bytes);
  const size_t count = std::max<size_t>(1, (bytes.size() + piece_bytes - 1) / piece_bytes);
  std::vector<v1::Envelope> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    v1::Envelope e;
    e.set_protocol_version(envelope.protocol_version());
    e.set_job_id(envelope.job_id());
    v1::Fragment* f = e.mutable_fragment();
    f->set_message_id(message_id);
    f->set_index(static_cast<uint32_t>(i));
    f->set_count(static_cast<uint32_t>(count));
    f->set_data(bytes.substr(i * piece_bytes, piece_bytes));
    out.push_back(std::move(e));
  }
  return out;
}

Result<std::optional<v1::Envelope>> Reassembler::Add(const v1::Fragment& f) {
  const std::string id = "fragmented message " + std::to_string(f.message_id());
  if (f.count() == 0 || f.index() >= f.count()) {
    return ProtocolError(id + ": fragment " + std::to_string(f.index()) + " of " + std::to_string(f.count()));
  }
  auto it = partial_.find(f.message_id());
  if (it == partial_.end()) {
    if (f.index() != 0) return ProtocolError(id + " starts at fragment " + std::to_string(f.index()));
    it = partial_.emplace(f.message_id(), Partial{f.count(), 0, {}}).first;
  }
  Partial& p = it->second;
  auto fail = [&](const std::string& why) {
    buffered_ -= p.bytes.size();
    partial_.erase(it);
    return ProtocolError(id + ": " + why);
  };
  if (f.count() != p.count) return fail("its fragment count changed");
  if (f.index() != p.next) {
    return fail("fragment " + std::to_string(f.index()) + " arrived where " + std::to_string(p.next) + " was due");
  }
  if (buffered_ + f.data().size() > max_bytes_) {
    return fail("over the " + std::to_string(max_bytes_) + "-byte bound on messages in progress");
  }
  p.bytes += f.data();
  buffered_ += f.data().size();
  if (++p.next < p.count) return std::optional<v1::Envelope>();
  v1::Envelope inner;
  const bool parsed = inner.ParseFromString(p.bytes);
  if (!parsed) return fail("the reassembled envelope does not parse");
  if (inner.has_fragment()) return fail("a fragment inside a fragment");
  buffered_ -= p.bytes.size();
  partial_.erase(it);
  return std::optional<v1::Envelope>(std::move(inner));
}

}  // namespace tributary::net
