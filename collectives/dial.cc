#include "collectives/dial.h"

#include <algorithm>
#include <thread>

namespace tributary::collectives {

Result<std::shared_ptr<net::Connection>> DialWithRetry(net::IoThread& io, const std::string& host,
                                                       uint16_t port, Deadline deadline,
                                                       const std::function<bool()>& cancelled,
                                                       const std::string& why_cancelled) {
  constexpr Millis kDialAttempt{1000};
  Millis backoff{10};
  for (;;) {
    if (cancelled && cancelled()) return Aborted(why_cancelled);
    auto conn = net::Connection::Dial(io.context(), host, port,
                                      std::min(deadline, Clock::now() + kDialAttempt));
    if (conn.ok()) return conn;
    const StatusCode code = conn.status().code();
    if (code != StatusCode::kUnavailable && code != StatusCode::kDeadlineExceeded) return conn;
    if (Clock::now() + backoff >= deadline) return conn;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, Millis{200});
  }
}

}  // namespace tributary::collectives
