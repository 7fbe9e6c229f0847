#include "net/frame.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <cstring>

#include "net/identity.h"

namespace tributary::net {

Result<uint32_t> DecodeFrameLength(std::span<const std::byte, kFrameHeaderBytes> header,
                                   uint32_t max_frame_bytes) {
  uint32_t length = 0;
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) {
    length |= static_cast<uint32_t>(std::to_integer<uint8_t>(header[i])) << (8 * i);
  }
  if (length == 0) return ProtocolError("malformed frame: zero length");
  if (length > max_frame_bytes) {
    return ProtocolError("malformed frame: length " + std::to_string(length) +
                         " exceeds the maximum of " + std::to_string(max_frame_bytes) + " bytes");
  }
  return length;
}

Result<std::string> EncodeFrame(const v1::Envelope& envelope, uint32_t max_frame_bytes) {
  const size_t body = envelope.ByteSizeLong();
  if (body == 0 || body > max_frame_bytes) {
    return InvalidArgument("envelope of " + std::to_string(body) +
                           " bytes does not fit a frame (max " + std::to_string(max_frame_bytes) +
                           ")");
  }
  std::string out(kFrameHeaderBytes + body, '\0');
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) {
    out[i] = static_cast<char>((body >> (8 * i)) & 0xff);
  }
  if (!envelope.SerializeToArray(out.data() + kFrameHeaderBytes, static_cast<int>(body))) {
    return Internal("protobuf serialisation failed");
  }
  return out;
}

Result<v1::Envelope> ParseEnvelope(std::span<const std::byte> body) {
  v1::Envelope envelope;
  if (body.size() > static_cast<size_t>(INT32_MAX) ||
      !envelope.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return ProtocolError("malformed frame: body of " + std::to_string(body.size()) +
                         " bytes is not a valid Envelope");
  }
  return envelope;
}

Status CheckEnvelope(const v1::Envelope& envelope, const std::string& expected_job_id) {
  if (envelope.protocol_version() != kProtocolVersion) {
    return ProtocolError("wrong protocol version " + std::to_string(envelope.protocol_version()) +
                         " (this build speaks " + std::to_string(kProtocolVersion) + ")");
  }
  if (envelope.payload_case() == v1::Envelope::PAYLOAD_NOT_SET) {
    return ProtocolError("unknown message type (no payload this build understands)");
  }
  if (!expected_job_id.empty() && envelope.job_id() != expected_job_id) {
    return ProtocolError("wrong job id '" + envelope.job_id() + "' (expected '" +
                         expected_job_id + "')");
  }
  return Status::Ok();
}

Status CheckTensorKind(const v1::Envelope& env, const std::string& tag, uint64_t numel) {
  if (!env.has_tensor()) {
    return ProtocolError("expected a tensor header, got " + PayloadName(env));
  }
  const v1::TensorHeader& h = env.tensor();
  if (h.tag() != tag) return ProtocolError("wrong tag '" + h.tag() + "' (expected '" + tag + "')");
  if (h.dtype() != v1::DTYPE_F32) {
    return InvalidArgument("wrong dtype " + std::to_string(h.dtype()) + " (expected DTYPE_F32)");
  }
  if (h.numel() != numel) {
    return InvalidArgument("wrong shape: tensor of " + std::to_string(h.numel()) +
                           " elements, ours has " + std::to_string(numel));
  }
  return Status::Ok();
}

v1::ErrorCode ErrorCodeFor(const Status& status) {
  // Messages may carry context ("from 1.2.3.4:5: malformed frame ..."), so search, not prefix.
  const std::string& m = status.message();
  auto has = [&m](const char* words) { return m.find(words) != std::string::npos; };
  if (has("wrong protocol version")) return v1::WRONG_PROTOCOL_VERSION;
  if (has("unknown message type")) return v1::UNKNOWN_MESSAGE_TYPE;
  if (has("wrong job id")) return v1::WRONG_JOB;
  if (has("malformed frame") || has("truncated frame")) return v1::MALFORMED_FRAME;
  if (status.code() == StatusCode::kProtocolError) return v1::UNEXPECTED_MESSAGE;
  return v1::INTERNAL_ERROR;
}

v1::Envelope MakeEnvelope(const std::string& job_id) {
  v1::Envelope e;
  e.set_protocol_version(kProtocolVersion);
  e.set_job_id(job_id);
  return e;
}

v1::Envelope MakeError(const std::string& job_id, v1::ErrorCode code, const std::string& message) {
  v1::Envelope e = MakeEnvelope(job_id);
  e.mutable_error()->set_code(code);
  e.mutable_error()->set_message(message);
  return e;
}

namespace {
std::string SigningBytes(const v1::Envelope& envelope) {
  v1::Envelope copy = envelope;
  copy.clear_signature();
  std::string bytes;
  {
    // The streams must be destroyed before `bytes` is read: they trim it to the written size.
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    copy.SerializeToCodedStream(&coded);
  }
  return "tributary/v1/envelope" + bytes;
}
}  // namespace

void SignEnvelope(const Identity& identity, v1::Envelope& envelope) {
  envelope.clear_signature();
  envelope.set_signature(SignatureToBytes(identity.Sign(SigningBytes(envelope))));
}

bool VerifyEnvelope(const std::array<uint8_t, 32>& key, const v1::Envelope& envelope) {
  auto sig = SignatureFromBytes(envelope.signature());
  return sig.ok() && VerifySignature(key, SigningBytes(envelope), *sig);
}

std::string PayloadName(const v1::Envelope& envelope) {
  const auto* field =
      v1::Envelope::descriptor()->FindFieldByNumber(static_cast<int>(envelope.payload_case()));
  return field ? field->name() : std::string("none");
}

}  // namespace tributary::net
