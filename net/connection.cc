#include "net/connection.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <sodium.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <chrono>
#include <limits>
#include <cstring>
#include <future>

#include "net/tcp_tuning.h"

namespace tributary::net {
namespace {
std::string EndpointString(const tcp::socket& socket) {
  boost::system::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "unknown-peer";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

// poll()'s timeout until `deadline`, rounded up to whole ms: -1 for none, 0 once it passed.
int PollTimeoutMs(Deadline deadline) {
  if (deadline == Deadline::max()) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left, std::numeric_limits<int>::max()));
}

asio::io_context* ContextOf(const asio::any_io_executor& executor) {
  const auto* on_context = executor.target<asio::io_context::executor_type>();
  return on_context ? &on_context->context() : nullptr;
}
}  // namespace

Connection::Connection(tcp::socket socket, uint32_t max_frame_bytes)
    : io_(ContextOf(socket.get_executor())),
      strand_(asio::make_strand(socket.get_executor())),
      socket_(std::move(socket)),
      max_frame_bytes_(max_frame_bytes),
      remote_(EndpointString(socket_)) {
  boost::system::error_code ignored;
  // Control frames are tiny and latency-bound; Nagle would add tens of ms per round trip.
  socket_.set_option(tcp::no_delay(true), ignored);
  const tcp::endpoint peer = socket_.remote_endpoint(ignored);
  ApplyPreferredCongestionControl(socket_.native_handle(), ignored || peer.address().is_loopback());
}

Connection::~Connection() {
  boost::system::error_code ignored;
  socket_.close(ignored);
}

Result<std::string> Connection::congestion_control() {
  std::lock_guard<std::mutex> lock(write_mu_);  // the socket closes only under it
  if (closed_.load() || !socket_.is_open()) return Unavailable("connection to " + remote_ + " is closed");
  return CongestionControlOf(socket_.native_handle());
}

Status Connection::RestartCongestionControl() {
  std::lock_guard<std::mutex> lock(write_mu_);  // the socket closes only under it
  if (closed_.load() || !socket_.is_open()) return Unavailable("connection to " + remote_ + " is closed");
  return net::RestartCongestionControl(socket_.native_handle());
}

std::shared_ptr<Connection> Connection::Adopt(tcp::socket socket, uint32_t max_frame_bytes) {
  return std::shared_ptr<Connection>(new Connection(std::move(socket), max_frame_bytes));
}

Result<std::shared_ptr<Connection>> Connection::Dial(asio::io_context& context,
                                                     const std::string& host, uint16_t port,
                                                     Deadline deadline, uint32_t max_frame_bytes) {
  const std::string target = host + ":" + std::to_string(port);
  boost::system::error_code ec;
  tcp::resolver resolver(context);
  auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) return Unavailable("cannot resolve " + target + ": " + ec.message());

  auto socket = std::make_shared<tcp::socket>(context);
  auto done = std::make_shared<std::promise<boost::system::error_code>>();
  auto future = done->get_future();
  asio::async_connect(*socket, endpoints,
                      [done](const boost::system::error_code& e, const tcp::endpoint&) {
                        done->set_value(e);
                      });
  if (future.wait_until(deadline) == std::future_status::timeout) {
    asio::post(context, [socket] {
      boost::system::error_code ignored;
      socket->close(ignored);
    });
    future.wait();
    return DeadlineExceeded("connecting to " + target + " timed out");
  }
  ec = future.get();
  if (ec) return Unavailable("cannot connect to " + target + ": " + ec.message());
  return Adopt(std::move(*socket), max_frame_bytes);
}

Status Connection::MapError(const boost::system::error_code& ec, size_t got, size_t wanted,
                            const char* what) const {
  if (ec == asio::error::eof) {
    if (got == 0 && std::string_view(what) == "frame header") {
      return Unavailable("peer " + remote_ + " closed the connection");
    }
    return ProtocolError("truncated frame from " + remote_ + ": got " + std::to_string(got) +
                         " of " + std::to_string(wanted) + " bytes of " + what);
  }
  if (ec == asio::error::operation_aborted || closed_.load()) {
    return Unavailable("connection to " + remote_ + " was closed");
  }
  return Unavailable(std::string(what) + " with " + remote_ + " failed: " + ec.message());
}

void Connection::AsyncReceive(ReceiveHandler handler) {
  auto self = shared_from_this();
  ++async_reads_;
  // The count drops before the handler runs: a handler may start the next receive.
  auto finish = [self, handler = std::move(handler)](Result<v1::Envelope> r) mutable {
    --self->async_reads_;
    handler(std::move(r));
  };
  asio::dispatch(strand_, [self, handler = std::move(finish)]() mutable { self->ReadEnvelope(std::move(handler)); });
}

void Connection::ReadEnvelope(ReceiveHandler handler) {
  auto self = shared_from_this();
  if (closed_) {
    handler(Unavailable("connection to " + remote_ + " is closed"));
    return;
  }
  asio::async_read(
      socket_, asio::buffer(header_),
      asio::bind_executor(strand_, [self, handler = std::move(handler)](const boost::system::error_code& ec,
                                                                        size_t n) mutable {
        if (ec) return handler(self->MapError(ec, n, kFrameHeaderBytes, "frame header"));
        const uint32_t overhead = self->rx_cipher_ ? kRecordOverhead : 0;
        auto length = DecodeFrameLength(self->header_, self->max_frame_bytes_ + overhead);
        if (!length.ok()) {
          return handler(length.status().WithContext("from " + self->remote_));
        }
        const uint32_t wanted = *length;
        self->body_.resize(wanted);
        asio::async_read(
            self->socket_, asio::buffer(self->body_),
            asio::bind_executor(self->strand_, [self, wanted, handler = std::move(handler)](
                                                   const boost::system::error_code& ec2, size_t got) mutable {
              if (ec2) return handler(self->MapError(ec2, got, wanted, "frame body"));
              auto delivered = self->Deliver(self->ParseBody(got));
              if (!delivered.ok()) return handler(delivered.status());
              if (!*delivered) return self->ReadEnvelope(std::move(handler));  // the next fragment
              handler(std::move(**delivered));
            }));
      }));
}

Result<std::optional<v1::Envelope>> Connection::Deliver(Result<v1::Envelope> frame) {
  if (!frame.ok()) return frame.status();
  if (!frame->has_fragment()) return std::optional<v1::Envelope>(std::move(frame).value());
  auto whole = reassembler_.Add(frame->fragment());
  if (!whole.ok()) return whole.status().WithContext("from " + remote_);
  return whole;
}

Result<std::vector<std::shared_ptr<const std::string>>> Connection::EncodeFrames(const v1::Envelope& envelope) {
  std::vector<std::shared_ptr<const std::string>> frames;
  // The common case sizes the envelope once, inside EncodeFrame; only a refusal is measured again.
  auto whole = EncodeFrame(envelope, max_frame_bytes_);
  if (whole.ok() || envelope.ByteSizeLong() <= max_frame_bytes_) {
    TRIB_RETURN_IF_ERROR(whole.status());
    frames.push_back(std::make_shared<const std::string>(std::move(whole).value()));
    return frames;
  }
  // Room for the Fragment's own fields (ids, counts, job id) within a frame.
  const size_t piece = max_frame_bytes_ - std::min<size_t>(max_frame_bytes_ / 2, 4096 + envelope.job_id().size());
  for (const v1::Envelope& f : FragmentEnvelope(envelope, ++next_message_id_, piece)) {
    TRIB_ASSIGN_OR_RETURN(std::string frame, EncodeFrame(f, max_frame_bytes_));
    frames.push_back(std::make_shared<const std::string>(std::move(frame)));
  }
  return frames;
}

Result<v1::Envelope> Connection::ParseBody(size_t got) {
  bytes_received_ += kFrameHeaderBytes + got;
  if (rx_cipher_) {
    if (got < kRecordOverhead) {
      return ProtocolError("malformed frame from " + remote_ + ": record shorter than its tag");
    }
    std::vector<std::byte> plain(got - kRecordOverhead);
    TRIB_RETURN_IF_ERROR(Open(body_, plain));
    body_ = std::move(plain);
  }
  auto envelope = ParseEnvelope(body_);
  if (!envelope.ok()) return envelope.status().WithContext("from " + remote_);
  return envelope;
}

Status Connection::CheckTailRecord(size_t want) {
  const size_t expected = want + kRecordOverhead;
  auto length = DecodeFrameLength(header_, std::numeric_limits<uint32_t>::max());
  if (!length.ok() || *length != expected) {
    return ProtocolError("malformed frame from " + remote_ + ": tensor record of " +
                         (length.ok() ? std::to_string(*length) : "zero") + " bytes, expected " +
                         std::to_string(expected));
  }
  body_.resize(expected);
  return Status::Ok();
}

void Connection::AsyncReceiveRaw(std::span<std::byte> into, DoneHandler handler) {
  auto self = shared_from_this();
  ++async_reads_;
  auto finish = [self, handler = std::move(handler)](Status st) mutable {
    --self->async_reads_;
    handler(std::move(st));
  };
  asio::dispatch(strand_, [self, into, handler = std::move(finish)]() mutable {
    if (self->closed_) return handler(Unavailable("connection to " + self->remote_ + " is closed"));
    if (!self->rx_cipher_) {
      asio::async_read(self->socket_, asio::buffer(into.data(), into.size()),
                       asio::bind_executor(self->strand_, [self, into, handler = std::move(handler)](
                                                              const boost::system::error_code& ec,
                                                              size_t got) mutable {
                         self->bytes_received_ += got;
                         if (ec) return handler(self->MapError(ec, got, into.size(), "tensor data"));
                         handler(Status::Ok());
                       }));
      return;
    }
    // Encrypted: the raw bytes arrive as one record of exactly into.size() + tag.
    asio::async_read(
        self->socket_, asio::buffer(self->header_),
        asio::bind_executor(self->strand_, [self, into, handler = std::move(handler)](
                                               const boost::system::error_code& ec,
                                               size_t n) mutable {
          if (ec) return handler(self->MapError(ec, n, kFrameHeaderBytes, "record header"));
          Status sized = self->CheckTailRecord(into.size());
          if (!sized.ok()) return handler(std::move(sized));
          asio::async_read(
              self->socket_, asio::buffer(self->body_),
              asio::bind_executor(self->strand_, [self, into, handler = std::move(handler)](
                                                     const boost::system::error_code& ec2,
                                                     size_t got) mutable {
                self->bytes_received_ += kFrameHeaderBytes + got;
                if (ec2) return handler(self->MapError(ec2, got, self->body_.size(), "tensor data"));
                handler(self->Open(self->body_, into));
              }));
        }));
  });
}

void Connection::AsyncSend(std::shared_ptr<const std::string> frame,
                           std::span<const std::byte> tail, DoneHandler done) {
  std::unique_lock<std::mutex> lock(write_mu_);
  if (!write_failure_.ok() || closed_) {
    Status failed = write_failure_.ok() ? Unavailable("connection to " + remote_ + " is closed")
                                        : write_failure_;
    lock.unlock();
    if (done) done(std::move(failed));
    return;
  }
  if (tx_cipher_) {
    // Sealed under write_mu_, so record counters follow the order records hit the wire.
    std::string sealed;
    if (frame) sealed = Seal(std::string_view(*frame).substr(kFrameHeaderBytes));
    if (!tail.empty()) {
      sealed += Seal(std::string_view(reinterpret_cast<const char*>(tail.data()), tail.size()));
    }
    frame = std::make_shared<const std::string>(std::move(sealed));
    tail = {};
  }
  PendingWrite write{std::move(frame), tail, std::move(done)};
  // `writing_` false means the queue is empty and no write is in flight: the stream is free.
  if (!writing_ && io_ != nullptr && !io_->get_executor().running_in_this_thread()) {
    // On an error nothing was written: the write goes to the strand like any queued one, which
    // meets the same error there and fails in order with the reads queued before it. So a
    // peer's last words (an Error frame before its close) are read as before, not cut off.
    write.written = WriteNow(write);
    const size_t wanted = (write.frame ? write.frame->size() : 0) + write.tail.size();
    if (write.written == wanted) {
      lock.unlock();
      if (write.done) write.done(Status::Ok());
      return;
    }
  }
  writes_.push_back(std::move(write));
  if (writing_) return;
  writing_ = true;
  lock.unlock();
  asio::dispatch(strand_, [self = shared_from_this()] { self->StartNextWrite(); });
}

size_t Connection::WriteNow(const PendingWrite& w) {
  iovec parts[2];
  int count = 0;
  if (w.frame && !w.frame->empty()) {
    parts[count++] = {const_cast<char*>(w.frame->data()), w.frame->size()};
  }
  if (!w.tail.empty()) {
    parts[count++] = {const_cast<std::byte*>(w.tail.data()), w.tail.size()};
  }
  if (count == 0) return 0;
  msghdr message{};
  message.msg_iov = parts;
  message.msg_iovlen = count;
  ssize_t n;
  do {
    n = ::sendmsg(socket_.native_handle(), &message, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return 0;  // full (EAGAIN) or failed: the strand's write takes it from here
  bytes_sent_ += static_cast<uint64_t>(n);
  return static_cast<size_t>(n);
}

void Connection::AsyncSend(const v1::Envelope& envelope, DoneHandler done) {
  auto frames = EncodeFrames(envelope);
  if (!frames.ok()) {
    if (done) done(frames.status());
    return;
  }
  for (size_t i = 0; i + 1 < frames->size(); ++i) AsyncSend((*frames)[i], {}, {});
  AsyncSend(frames->back(), {}, std::move(done));  // written in order: the last one ends it
}

void Connection::StartNextWrite() {
  std::unique_lock<std::mutex> lock(write_mu_);
  if (writes_.empty()) {
    writing_ = false;
    auto waiters = std::move(flush_waiters_);
    flush_waiters_.clear();
    lock.unlock();
    for (auto& w : waiters) w();
    return;
  }
  // Only this strand pops the queue, and deque::push_back keeps references valid, so `w` stays
  // put while other threads queue behind it.
  const PendingWrite& w = writes_.front();
  const size_t frame_bytes = w.frame ? w.frame->size() : 0;
  std::array<asio::const_buffer, 2> buffers{
      w.frame ? asio::buffer(*w.frame) + std::min(w.written, frame_bytes) : asio::const_buffer(),
      asio::buffer(w.tail.data(), w.tail.size()) + (w.written > frame_bytes ? w.written - frame_bytes : 0)};
  const size_t wanted = asio::buffer_size(buffers);
  lock.unlock();
  auto self = shared_from_this();
  asio::async_write(socket_, buffers,
                    asio::bind_executor(strand_, [self, wanted](const boost::system::error_code& ec,
                                                                size_t n) {
                      self->bytes_sent_ += n;
                      std::unique_lock<std::mutex> lock(self->write_mu_);
                      PendingWrite done = std::move(self->writes_.front());
                      self->writes_.pop_front();
                      lock.unlock();
                      if (ec) {
                        Status st = self->MapError(ec, n, wanted, "send");
                        if (done.done) done.done(st);
                        self->FailAllWrites(st);
                        return;
                      }
                      if (done.done) done.done(Status::Ok());
                      self->StartNextWrite();
                    }));
}

void Connection::FailAllWrites(const Status& status) {
  std::unique_lock<std::mutex> lock(write_mu_);
  if (write_failure_.ok()) write_failure_ = status;
  auto pending = std::move(writes_);
  writes_.clear();
  writing_ = false;
  auto waiters = std::move(flush_waiters_);
  flush_waiters_.clear();
  closed_ = true;
  CloseSocket();
  lock.unlock();
  for (auto& w : pending) {
    if (w.done) w.done(status);
  }
  for (auto& w : waiters) w();
}

template <typename T, typename Start>
T Connection::Await(Start start, Deadline deadline, const char* what) {
  auto promise = std::make_shared<std::promise<T>>();
  auto future = promise->get_future();
  start(promise);
  if (future.wait_until(deadline) == std::future_status::timeout) {
    Close();  // cancels the operation; its handler still runs and fulfils the promise
    future.wait();
    return DeadlineExceeded(std::string(what) + " with " + remote_ + " timed out");
  }
  return future.get();
}

template <typename T, typename Read>
T Connection::OnCaller(Read read, Deadline deadline, const char* what) {
  if (io_ != nullptr && io_->get_executor().running_in_this_thread()) {
    return T(FailedPrecondition(std::string("blocking ") + what + " on the io thread of " + remote_));
  }
  std::unique_lock<std::mutex> lock(read_mu_);
  if (async_reads_.load() > 0) {
    return T(FailedPrecondition(std::string(what) + " with " + remote_ +
                                " while an async receive is outstanding"));
  }
  if (closed_) return T(Unavailable("connection to " + remote_ + " is closed"));
  bool timed_out = false;
  T outcome = read(deadline, &timed_out);
  lock.unlock();
  if (!timed_out) return outcome;
  Close();  // a stream that timed out mid-frame cannot be resynchronised
  return T(DeadlineExceeded(std::string(what) + " with " + remote_ + " timed out"));
}

boost::system::error_code Connection::ReadOnCaller(std::span<std::byte> into, Deadline deadline,
                                                   size_t* got) {
  *got = 0;
  const int fd = socket_.native_handle();
  while (*got < into.size()) {
    const ssize_t n = ::recv(fd, into.data() + *got, into.size() - *got, MSG_DONTWAIT);
    if (n > 0) {
      *got += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return asio::error::eof;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return {errno, boost::system::system_category()};
    }
    const int timeout_ms = PollTimeoutMs(deadline);
    if (timeout_ms == 0) return asio::error::timed_out;
    pollfd waiting{fd, POLLIN, 0};
    if (::poll(&waiting, 1, timeout_ms) < 0 && errno != EINTR) {
      return {errno, boost::system::system_category()};
    }
  }
  return {};
}

std::vector<size_t> Connection::WaitReadable(std::span<Connection* const> conns, int wake_fd,
                                             Deadline deadline) {
  // Each read_mu_ is held across poll(): a closing connection is shut down first, which wakes
  // the poll, and closes its descriptor only once we let go.
  std::vector<std::unique_lock<std::mutex>> held;
  held.reserve(conns.size());
  std::vector<pollfd> fds;
  std::vector<size_t> ready;
  for (size_t i = 0; i < conns.size(); ++i) {
    held.emplace_back(conns[i]->read_mu_);
    if (conns[i]->closed_.load()) {
      ready.push_back(i);  // its receive fails at once, naming why
    } else {
      fds.push_back({conns[i]->socket_.native_handle(), POLLIN, 0});
    }
  }
  if (!ready.empty()) return ready;
  if (wake_fd >= 0) fds.push_back({wake_fd, POLLIN, 0});
  if (::poll(fds.data(), fds.size(), PollTimeoutMs(deadline)) <= 0) return ready;
  for (size_t i = 0; i < conns.size(); ++i) {
    if (fds[i].revents != 0) ready.push_back(i);
  }
  return ready;
}

Status Connection::CallerReadError(const boost::system::error_code& ec, size_t got, size_t wanted,
                                   const char* what) const {
  // Our own Close() shows up here as the end of the stream: it is not the peer's doing.
  if (closed_.load()) return Unavailable("connection to " + remote_ + " was closed");
  return MapError(ec, got, wanted, what);
}

Result<v1::Envelope> Connection::ReceiveOnCaller(Deadline deadline, bool* timed_out) {
  for (;;) {
    TRIB_ASSIGN_OR_RETURN(std::optional<v1::Envelope> whole, Deliver(ReceiveFrameOnCaller(deadline, timed_out)));
    if (whole) return std::move(*whole);
  }
}

Result<v1::Envelope> Connection::ReceiveFrameOnCaller(Deadline deadline, bool* timed_out) {
  size_t got = 0;
  auto ec = ReadOnCaller(header_, deadline, &got);
  if (ec) {
    *timed_out = ec == asio::error::timed_out;
    return CallerReadError(ec, got, kFrameHeaderBytes, "frame header");
  }
  const uint32_t overhead = rx_cipher_ ? kRecordOverhead : 0;
  auto length = DecodeFrameLength(header_, max_frame_bytes_ + overhead);
  if (!length.ok()) return length.status().WithContext("from " + remote_);
  body_.resize(*length);
  ec = ReadOnCaller(body_, deadline, &got);
  if (ec) {  // counted only once whole, as on the strand (ParseBody)
    *timed_out = ec == asio::error::timed_out;
    return CallerReadError(ec, got, *length, "frame body");
  }
  return ParseBody(got);
}

Status Connection::ReceiveRawOnCaller(std::span<std::byte> into, Deadline deadline,
                                      bool* timed_out) {
  size_t got = 0;
  if (!rx_cipher_) {
    auto ec = ReadOnCaller(into, deadline, &got);
    bytes_received_ += got;
    *timed_out = ec == asio::error::timed_out;
    return ec ? CallerReadError(ec, got, into.size(), "tensor data") : Status::Ok();
  }
  auto ec = ReadOnCaller(header_, deadline, &got);
  if (ec) {
    *timed_out = ec == asio::error::timed_out;
    return CallerReadError(ec, got, kFrameHeaderBytes, "record header");
  }
  TRIB_RETURN_IF_ERROR(CheckTailRecord(into.size()));
  ec = ReadOnCaller(body_, deadline, &got);
  bytes_received_ += kFrameHeaderBytes + got;
  if (ec) {
    *timed_out = ec == asio::error::timed_out;
    return CallerReadError(ec, got, body_.size(), "tensor data");
  }
  return Open(body_, into);
}

Result<v1::Envelope> Connection::Receive(Deadline deadline) {
  auto read = [this](Deadline until, bool* timed_out) { return ReceiveOnCaller(until, timed_out); };
  return OnCaller<Result<v1::Envelope>>(read, deadline, "receive");
}

Status Connection::ReceiveRaw(std::span<std::byte> into, Deadline deadline) {
  auto read = [this, into](Deadline until, bool* timed_out) {
    return ReceiveRawOnCaller(into, until, timed_out);
  };
  return OnCaller<Status>(read, deadline, "receive tensor data");
}

Status Connection::ReceiveWithTail(std::function<Status(const v1::Envelope&)> check,
                                   std::span<std::byte> into, Deadline deadline) {
  auto read = [this, into, &check](Deadline until, bool* timed_out) {
    Result<v1::Envelope> frame = ReceiveOnCaller(until, timed_out);
    if (!frame.ok()) return frame.status();
    TRIB_RETURN_IF_ERROR(check(*frame));
    return ReceiveRawOnCaller(into, until, timed_out);
  };
  return OnCaller<Status>(read, deadline, "receive tensor data");
}

Status Connection::Send(const v1::Envelope& envelope, Deadline deadline) {
  TRIB_ASSIGN_OR_RETURN(auto frames, EncodeFrames(envelope));
  return Await<Status>(
      [this, frames](auto promise) {
        for (size_t i = 0; i + 1 < frames.size(); ++i) AsyncSend(frames[i], {}, {});
        AsyncSend(frames.back(), {}, [promise](Status st) { promise->set_value(std::move(st)); });
      },
      deadline, "send");
}

Status Connection::QueueSend(const v1::Envelope& envelope, std::span<const std::byte> tail) {
  auto frame = EncodeFrame(envelope, max_frame_bytes_);
  if (!frame.ok()) return frame.status();
  AsyncSend(std::make_shared<const std::string>(std::move(frame).value()), tail);
  return Status::Ok();
}

Status Connection::Flush(Deadline deadline) {
  auto self = shared_from_this();
  return Await<Status>(
      [self](auto promise) {
        std::unique_lock<std::mutex> lock(self->write_mu_);
        if (self->write_failure_.ok() && self->writing_) {
          self->flush_waiters_.push_back([self, promise] {
            std::unique_lock<std::mutex> relock(self->write_mu_);
            Status outcome = self->write_failure_;
            relock.unlock();
            promise->set_value(std::move(outcome));
          });
          return;
        }
        Status outcome = self->write_failure_;
        lock.unlock();
        promise->set_value(std::move(outcome));
      },
      deadline, "flush");
}

void Connection::EnableEncryption(const SessionKeys& keys) {
  encrypted_ = true;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    tx_cipher_ = Cipher{keys.tx, 0};
  }
  // Set here, not posted to the strand: a blocking receive right after this call may read on
  // the caller's thread. No receive is outstanding (the contract), so nothing reads it now.
  std::lock_guard<std::mutex> lock(read_mu_);
  rx_cipher_ = Cipher{keys.rx, 0};
}

namespace {
void CounterNonce(uint64_t counter, unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES]) {
  std::memset(nonce, 0, crypto_aead_chacha20poly1305_IETF_NPUBBYTES);
  for (int i = 0; i < 8; ++i) nonce[i] = static_cast<unsigned char>(counter >> (8 * i));
}
}  // namespace

std::string Connection::Seal(std::string_view plaintext) {
  const uint32_t length = static_cast<uint32_t>(plaintext.size() + kRecordOverhead);
  std::string record(kFrameHeaderBytes + length, '\0');
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) record[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
  CounterNonce(tx_cipher_->counter++, nonce);
  unsigned long long written = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(
      reinterpret_cast<unsigned char*>(record.data() + kFrameHeaderBytes), &written,
      reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
      reinterpret_cast<const unsigned char*>(record.data()), kFrameHeaderBytes, nullptr, nonce,
      tx_cipher_->key.data());
  return record;
}

Status Connection::Open(std::span<const std::byte> record_body, std::span<std::byte> into) {
  if (record_body.size() != into.size() + kRecordOverhead) {
    return ProtocolError("malformed frame from " + remote_ + ": record size mismatch");
  }
  unsigned char header[kFrameHeaderBytes];
  const uint32_t length = static_cast<uint32_t>(record_body.size());
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) header[i] = static_cast<unsigned char>(length >> (8 * i));
  unsigned char nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
  CounterNonce(rx_cipher_->counter, nonce);
  unsigned long long plain_len = 0;
  if (crypto_aead_chacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(into.data()), &plain_len, nullptr,
          reinterpret_cast<const unsigned char*>(record_body.data()), record_body.size(), header,
          sizeof(header), nonce, rx_cipher_->key.data()) != 0) {
    return ProtocolError("frame from " + remote_ +
                         " failed authentication (forged, tampered, replayed or reordered)");
  }
  ++rx_cipher_->counter;
  return Status::Ok();
}

void Connection::Close() {
  closed_ = true;
  auto self = shared_from_this();
  asio::dispatch(strand_, [self] {
    std::lock_guard<std::mutex> lock(self->write_mu_);  // no inline write is using the descriptor
    self->CloseSocket();
  });
}

void Connection::CloseSocket() {
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);  // wakes a caller waiting in poll()
  std::lock_guard<std::mutex> lock(read_mu_);             // which then lets go of the descriptor
  socket_.close(ignored);
}

// ---------------------------------------------------------------------------------------------

Listener::Listener(tcp::acceptor acceptor)
    : acceptor_(std::make_shared<tcp::acceptor>(std::move(acceptor))) {
  boost::system::error_code ec;
  port_ = acceptor_->local_endpoint(ec).port();
}

Listener::~Listener() { Close(); }

Result<std::unique_ptr<Listener>> Listener::Bind(asio::io_context& context,
                                                 const std::string& host, uint16_t port) {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument("bad listen address '" + host + "': " + ec.message());
  tcp::acceptor acceptor(context);
  tcp::endpoint endpoint(address, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Unavailable("cannot listen on " + host + ":" + std::to_string(port) + ": " +
                       ec.message());
  }
  return std::unique_ptr<Listener>(new Listener(std::move(acceptor)));
}

void Listener::AcceptLoop(AcceptHandler handler, uint32_t max_frame_bytes) {
  DoAccept(acceptor_, std::make_shared<AcceptHandler>(std::move(handler)), max_frame_bytes);
}

// Handlers hold the acceptor by shared_ptr, never `this`: the Listener may be destroyed while an
// accept is still pending on the io thread.
void Listener::DoAccept(std::shared_ptr<tcp::acceptor> acceptor,
                        std::shared_ptr<AcceptHandler> handler, uint32_t max_frame_bytes) {
  acceptor->async_accept([acceptor, handler, max_frame_bytes](const boost::system::error_code& ec,
                                                              tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
    if (!ec) (*handler)(Connection::Adopt(std::move(socket), max_frame_bytes));
    DoAccept(acceptor, handler, max_frame_bytes);
  });
}

Result<std::shared_ptr<Connection>> Listener::Accept(Deadline deadline, uint32_t max_frame_bytes) {
  using Outcome = std::pair<boost::system::error_code, tcp::socket>;
  struct Call {
    std::promise<Outcome> promise;
    bool completed = false;  // touched only on the io thread
  };
  auto call = std::make_shared<Call>();
  auto future = call->promise.get_future();
  acceptor_->async_accept([call](const boost::system::error_code& ec, tcp::socket socket) {
    call->completed = true;
    call->promise.set_value({ec, std::move(socket)});
  });
  if (future.wait_until(deadline) == std::future_status::timeout) {
    auto acceptor = acceptor_;
    // A cancel reaches every accept pending on the acceptor. When this one completed before the
    // cancel ran, the caller may already be in its next Accept: that one must not be cancelled
    // (it was, and a peer's link probe failed with "accept failed: Operation canceled").
    asio::post(acceptor->get_executor(), [acceptor, call] {
      if (call->completed) return;
      boost::system::error_code ignored;
      acceptor->cancel(ignored);
    });
    future.wait();
    auto [ec, socket] = future.get();
    // The accept can complete just before the cancel runs; its peer believes it is connected,
    // so hand the connection over instead of dropping it.
    if (!ec) return Connection::Adopt(std::move(socket), max_frame_bytes);
    return DeadlineExceeded("no connection arrived on port " + std::to_string(port_) + " in time");
  }
  auto [ec, socket] = future.get();
  if (ec) return Unavailable("accept failed: " + ec.message());
  return Connection::Adopt(std::move(socket), max_frame_bytes);
}

void Listener::Close() {
  auto acceptor = acceptor_;
  asio::post(acceptor->get_executor(), [acceptor] {
    boost::system::error_code ignored;
    acceptor->close(ignored);
  });
}

}  // namespace tributary::net
