// Frame codec for wire protocol v1 (see proto/tributary.proto).
//
// A frame is `u32 little-endian length ‖ Envelope bytes`. The length is checked against the
// configured maximum *before* any allocation, so a hostile length costs nothing. These functions
// are pure (no I/O) so they can be unit-tested and fuzzed directly.
#pragma once

#include <cstddef>
#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "core/status.h"
#include "proto/tributary.pb.h"

namespace tributary::net {

namespace v1 = ::tributary::v1;

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 4;
inline constexpr uint32_t kDefaultMaxFrameBytes = 16u << 20;  // control messages are small
inline constexpr uint32_t kRecordOverhead = 16;  // AEAD tag added to each encrypted record

// Validates the 4-byte length prefix: non-zero and at most `max_frame_bytes`.
Result<uint32_t> DecodeFrameLength(std::span<const std::byte, kFrameHeaderBytes> header,
                                   uint32_t max_frame_bytes);

// Serialises `envelope` with its length prefix. Fails only if it exceeds `max_frame_bytes`.
Result<std::string> EncodeFrame(const v1::Envelope& envelope,
                                uint32_t max_frame_bytes = kDefaultMaxFrameBytes);

// Parses a frame body (without the length prefix).
Result<v1::Envelope> ParseEnvelope(std::span<const std::byte> body);

// Protocol-level checks every receiver applies before acting on a message: the protocol version
// matches, the job id matches (skipped when `expected_job_id` is empty), and the payload is a
// message type this build knows. Returns ProtocolError naming what was wrong.
Status CheckEnvelope(const v1::Envelope& envelope, const std::string& expected_job_id);

// After CheckEnvelope, for a message that must be a tensor: it carries a TensorHeader for
// `tag`, of fp32 values, describing a tensor of `numel` elements; each mismatch named (wrong
// tag: ProtocolError; wrong dtype or shape: InvalidArgument). Where the message's piece sits
// and its size are the receiver's to check.
Status CheckTensorKind(const v1::Envelope& envelope, const std::string& tag, uint64_t numel);

// Maps a CheckEnvelope/parse failure to the wire error code sent back before closing.
v1::ErrorCode ErrorCodeFor(const Status& status);

// Convenience constructors that stamp version and job id.
v1::Envelope MakeEnvelope(const std::string& job_id);
v1::Envelope MakeError(const std::string& job_id, v1::ErrorCode code, const std::string& message);

// Envelope signatures (see Envelope.signature): over the deterministic serialisation of the
// envelope with the signature field cleared.
class Identity;
void SignEnvelope(const Identity& identity, v1::Envelope& envelope);
bool VerifyEnvelope(const std::array<uint8_t, 32>& key, const v1::Envelope& envelope);

// Human-readable name of the payload ("round_start"), for logs and errors.
std::string PayloadName(const v1::Envelope& envelope);

}  // namespace tributary::net
