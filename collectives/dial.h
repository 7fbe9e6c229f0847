// Dialing a group member that may not be listening yet: it forms its ring or mesh at about the
// same time as we do. Ring and mesh formation share this one retry policy.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/clock.h"
#include "core/status.h"
#include "net/connection.h"
#include "net/io_thread.h"

namespace tributary::collectives {

// Retries a refused or timed-out dial with a growing backoff (10 ms up to 200 ms) until it
// connects or `deadline` passes. Each try lasts at most 1 s, so an unreachable host does not
// hide a cancellation for long: once `cancelled` (optional) returns true it gives up with
// Aborted(`why_cancelled`). Other errors are returned at once.
Result<std::shared_ptr<net::Connection>> DialWithRetry(net::IoThread& io, const std::string& host,
                                                       uint16_t port, Deadline deadline,
                                                       const std::function<bool()>& cancelled,
                                                       const std::string& why_cancelled);

}  // namespace tributary::collectives
