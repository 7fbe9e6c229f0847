// Connection: one framed TCP stream (protocol v1) between two processes.
//
// Ownership and threads: a Connection owns its socket. Reads, closing and queued writes run on
// the Connection's strand, on the IoThread whose io_context it was made with. A send called from
// any other thread (a collective's worker) when nothing is queued is written straight from that
// thread, non-blocking, under the write mutex; whatever the socket does not take at once is
// queued for the strand. That saves the hand-off to the io thread, the one wake-up per message
// Gloo does not pay. Its completion handler then runs on the calling thread, before AsyncSend
// returns. Sends called on the io thread always go through the strand. Two styles of use:
//   * async (servers): AsyncReceive/AsyncSend; handlers run on the strand and must not block.
//   * blocking with a deadline (worker threads, e.g. collectives): Receive/ReceiveRaw/
//     ReceiveWithTail read the socket on the calling thread (non-blocking reads, poll() until
//     data or the deadline, under the read mutex), so the caller is woken by the kernel, not by
//     the io thread after a hand-off there and back; Send/Flush wait for the strand. On timeout
//     the connection is closed (a stream that timed out mid-frame cannot be resynchronised) and
//     DeadlineExceeded is returned. A blocking receive on the io thread, or while an async
//     receive is outstanding, is refused (FailedPrecondition).
// At most one receive may be outstanding at a time; sends are queued and written in order.
// An envelope larger than one frame is sent as fragments and a receive returns it reassembled
// (net/fragment.h); QueueSend's tensor headers always fit one frame.
// Raw tails passed to AsyncSend/QueueSend are NOT copied: keep them alive until the completion
// callback runs or Flush() returns.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "net/fragment.h"
#include "net/frame.h"

namespace tributary::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using ReceiveHandler = std::function<void(Result<v1::Envelope>)>;
  using DoneHandler = std::function<void(Status)>;

  // Wraps an already-connected socket (from a Listener).
  static std::shared_ptr<Connection> Adopt(tcp::socket socket,
                                           uint32_t max_frame_bytes = kDefaultMaxFrameBytes);
  // Connects to host:port, giving up at `deadline`. Blocking; never call on an IoThread.
  static Result<std::shared_ptr<Connection>> Dial(asio::io_context& context,
                                                  const std::string& host, uint16_t port,
                                                  Deadline deadline,
                                                  uint32_t max_frame_bytes = kDefaultMaxFrameBytes);
  ~Connection();

  // --- async API ---
  void AsyncReceive(ReceiveHandler handler);
  void AsyncReceiveRaw(std::span<std::byte> into, DoneHandler handler);
  // Queues `frame` (already encoded) followed by the raw `tail` bytes.
  void AsyncSend(std::shared_ptr<const std::string> frame, std::span<const std::byte> tail = {},
                 DoneHandler done = {});
  void AsyncSend(const v1::Envelope& envelope, DoneHandler done = {});

  // --- blocking API (not on an IoThread) ---
  Result<v1::Envelope> Receive(Deadline deadline);
  Status ReceiveRaw(std::span<std::byte> into, Deadline deadline);
  // Receive, then ReceiveRaw of the tail that follows, under one hold of the read mutex. The
  // tail is read only when `check` accepts the frame; otherwise its error is returned and the
  // tail stays unread.
  Status ReceiveWithTail(std::function<Status(const v1::Envelope&)> check, std::span<std::byte> into,
                         Deadline deadline);
  Status Send(const v1::Envelope& envelope, Deadline deadline);
  // Queues envelope + tail without waiting; the first failure is reported by Flush().
  Status QueueSend(const v1::Envelope& envelope, std::span<const std::byte> tail = {});
  // Waits until every queued send is written (or failed).
  Status Flush(Deadline deadline);

  // From now on every frame and raw tail travels as an AEAD record (ChaCha20-Poly1305, implicit
  // per-direction counters as nonces, the length prefix as associated data), so a forged,
  // replayed, reordered or truncated record fails authentication and closes the connection.
  // Call with no receive outstanding; sends queued earlier still go out in the clear.
  struct SessionKeys {
    std::array<uint8_t, 32> tx{};
    std::array<uint8_t, 32> rx{};
  };
  void EnableEncryption(const SessionKeys& keys);
  bool encrypted() const { return encrypted_.load(); }

  // Waits until one of `conns` has bytes to read, its stream ended or it was closed, or
  // `wake_fd` (when not -1) is readable, at most until `deadline`. Returns the indices of the
  // connections ready to read; empty after the deadline or a wake-up. For callers that read
  // several connections themselves with the blocking API; not on an io thread.
  static std::vector<size_t> WaitReadable(std::span<Connection* const> conns, int wake_fd,
                                          Deadline deadline);

  // Closes the socket; pending operations complete with Unavailable. Idempotent, thread-safe.
  void Close();
  bool closed() const { return closed_.load(); }
  // "127.0.0.1:40312"; stable after close.
  const std::string& remote() const { return remote_; }
  uint64_t bytes_sent() const { return bytes_sent_.load(); }
  uint64_t bytes_received() const { return bytes_received_.load(); }
  // The TCP congestion control the kernel runs for this connection (net/tcp_tuning.h).
  Result<std::string> congestion_control();
  // net::RestartCongestionControl on this socket; Unavailable once closed.
  Status RestartCongestionControl();

 private:
  struct PendingWrite {
    std::shared_ptr<const std::string> frame;
    std::span<const std::byte> tail;
    DoneHandler done;
    size_t written = 0;  // bytes already on the wire (written inline before it was queued)
  };

  Connection(tcp::socket socket, uint32_t max_frame_bytes);
  // Writes what the socket takes now from the calling thread, without blocking; write_mu_ held.
  // Returns the bytes written: 0 when the socket is full or fails (the strand's write then meets
  // the same error and fails the connection in order with its reads).
  size_t WriteNow(const PendingWrite& w);
  void StartNextWrite();  // strand only
  void FailAllWrites(const Status& status);  // strand only
  Status MapError(const boost::system::error_code& ec, size_t got, size_t wanted,
                  const char* what) const;
  template <typename T, typename Start>
  T Await(Start start, Deadline deadline, const char* what);

  // The read side's steps, shared by the strand's async reads and the caller's own reads (which
  // hold read_mu_): a frame's body (in body_) to its envelope, and an encrypted tensor record's
  // length (from header_) checked against the `want` plaintext bytes expected.
  Result<v1::Envelope> ParseBody(size_t got);
  // A parsed frame: delivered as is, or (a Fragment) added to the reassembler; nullopt while
  // the fragmented message is incomplete.
  Result<std::optional<v1::Envelope>> Deliver(Result<v1::Envelope> frame);
  // Reads frames on the strand until one envelope is whole (fragments reassembled).
  void ReadEnvelope(ReceiveHandler handler);
  // The frames of `envelope`: one, or its fragments when it does not fit one (net/fragment.h).
  Result<std::vector<std::shared_ptr<const std::string>>> EncodeFrames(const v1::Envelope& envelope);
  Status CheckTailRecord(size_t want);
  // A blocking receive on the calling thread: `read` runs with read_mu_ held and reports a
  // timeout through *timed_out (the connection is then closed).
  template <typename T, typename Read>
  T OnCaller(Read read, Deadline deadline, const char* what);
  // Fills `into` from the socket (read_mu_ held), waiting in poll() until `deadline`; *got says
  // how much arrived before an error (eof, timed_out, or the socket's).
  boost::system::error_code ReadOnCaller(std::span<std::byte> into, Deadline deadline, size_t* got);
  Status CallerReadError(const boost::system::error_code& ec, size_t got, size_t wanted,
                         const char* what) const;
  Result<v1::Envelope> ReceiveOnCaller(Deadline deadline, bool* timed_out);  // fragments reassembled
  Result<v1::Envelope> ReceiveFrameOnCaller(Deadline deadline, bool* timed_out);
  Status ReceiveRawOnCaller(std::span<std::byte> into, Deadline deadline, bool* timed_out);
  // Shuts the socket down (waking a caller's poll()), waits for the caller's read to let go of
  // the descriptor, then closes it. write_mu_ held.
  void CloseSocket();

  asio::io_context* io_;  // the context running strand_, to tell its thread from a caller's
  asio::strand<asio::any_io_executor> strand_;
  tcp::socket socket_;
  const uint32_t max_frame_bytes_;
  std::string remote_;
  std::atomic<bool> closed_{false};
  std::atomic<bool> encrypted_{false};
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> bytes_received_{0};

  // AEAD state, one per direction: implicit counters as nonces.
  struct Cipher {
    std::array<uint8_t, 32> key{};
    uint64_t counter = 0;
  };
  std::string Seal(std::string_view plaintext);  // write_mu_ held -> length-prefixed record
  Status Open(std::span<const std::byte> record_body, std::span<std::byte> into);  // the read side's owner

  // The read side: the strand's while an async receive is outstanding (async_reads_ > 0), else
  // the blocking caller's under read_mu_. The descriptor is closed only with read_mu_ held too,
  // so a caller's read never sees it reused.
  std::mutex read_mu_;
  std::atomic<int> async_reads_{0};
  std::optional<Cipher> rx_cipher_;
  std::array<std::byte, kFrameHeaderBytes> header_{};
  std::vector<std::byte> body_;
  Reassembler reassembler_;  // on the read path (the strand, or the caller's read)
  std::atomic<uint64_t> next_message_id_{0};

  // The write side, under write_mu_ (taken by any sending thread and by the strand). The socket
  // is closed only with write_mu_ held, so an inline write never sees its descriptor reused.
  std::mutex write_mu_;
  std::optional<Cipher> tx_cipher_;
  std::deque<PendingWrite> writes_;
  bool writing_ = false;  // the strand owns the stream: an async write is in flight or posted
  Status write_failure_;
  std::vector<std::function<void()>> flush_waiters_;
};

// Listener: accepts TCP connections on host:port (port 0 = ephemeral) on an io_context.
class Listener {
 public:
  using AcceptHandler = std::function<void(std::shared_ptr<Connection>)>;
  static Result<std::unique_ptr<Listener>> Bind(asio::io_context& context, const std::string& host,
                                                uint16_t port);
  ~Listener();
  uint16_t port() const { return port_; }
  // Accepts forever, calling `handler` for each connection (on the io thread), until Close().
  void AcceptLoop(AcceptHandler handler, uint32_t max_frame_bytes = kDefaultMaxFrameBytes);
  // Blocking accept of one connection (not on an IoThread).
  Result<std::shared_ptr<Connection>> Accept(Deadline deadline,
                                             uint32_t max_frame_bytes = kDefaultMaxFrameBytes);
  void Close();

 private:
  explicit Listener(tcp::acceptor acceptor);
  static void DoAccept(std::shared_ptr<tcp::acceptor> acceptor,
                       std::shared_ptr<AcceptHandler> handler, uint32_t max_frame_bytes);
  std::shared_ptr<tcp::acceptor> acceptor_;
  uint16_t port_ = 0;
};

}  // namespace tributary::net
