#include "launcher/relay.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <array>
#include <future>
#include <map>

#include "net/frame.h"

namespace tributary::launcher {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

constexpr uint32_t kMaxJoinFrame = 1024;

struct Endpoint {
  tcp::socket socket;
  std::array<char, 64 * 1024> buffer{};
  explicit Endpoint(tcp::socket s) : socket(std::move(s)) {}
};

struct Pair {
  std::shared_ptr<Endpoint> a, b;
  void Close() {
    boost::system::error_code ignored;
    a->socket.close(ignored);
    b->socket.close(ignored);
  }
};

}  // namespace

struct RelayServer::Impl : std::enable_shared_from_this<RelayServer::Impl> {
  Impl(net::IoThread& io, Millis timeout)
      : io(io), strand(asio::make_strand(io.context())), acceptor(io.context()), pairing_timeout(timeout) {}

  net::IoThread& io;
  asio::strand<asio::io_context::executor_type> strand;
  tcp::acceptor acceptor;
  Millis pairing_timeout;
  std::atomic<uint64_t> pairs{0};
  std::atomic<uint64_t> bytes{0};
  // Strand-only: endpoints waiting for their partner, by token.
  struct Waiting {
    std::shared_ptr<Endpoint> endpoint;
    std::shared_ptr<asio::steady_timer> timer;
  };
  std::map<std::string, Waiting> waiting;

  void Accept() {
    auto self = shared_from_this();
    acceptor.async_accept(strand, [self](const boost::system::error_code& ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
      if (!ec) self->ReadJoin(std::make_shared<Endpoint>(std::move(socket)));
      self->Accept();
    });
  }

  // The first frame must be a RelayJoin: a u32 length (small) and the envelope.
  void ReadJoin(std::shared_ptr<Endpoint> ep) {
    auto self = shared_from_this();
    auto header = std::make_shared<std::array<std::byte, 4>>();
    auto timer = std::make_shared<asio::steady_timer>(io.context(), Millis(10000));
    timer->async_wait([ep](const boost::system::error_code& ec) {
      if (!ec) {
        boost::system::error_code ignored;
        ep->socket.close(ignored);  // silent connection
      }
    });
    asio::async_read(ep->socket, asio::buffer(*header), asio::bind_executor(strand, [self, ep, header, timer](
                                                                                 const boost::system::error_code& ec, size_t) {
      if (ec) return;
      auto length = net::DecodeFrameLength(*header, kMaxJoinFrame);
      if (!length.ok()) {
        spdlog::warn("relay: rejecting {}: {}", Remote(*ep), length.status().message());
        return Close(ep);
      }
      auto body = std::make_shared<std::vector<std::byte>>(*length);
      asio::async_read(ep->socket, asio::buffer(*body), asio::bind_executor(self->strand, [self, ep, body, timer](
                                                                                   const boost::system::error_code& ec2, size_t) {
        timer->cancel();
        if (ec2) return;
        auto envelope = net::ParseEnvelope(*body);
        if (!envelope.ok() || !net::CheckEnvelope(*envelope, "").ok() || !envelope->has_relay_join() ||
            envelope->relay_join().token().size() < 16) {
          spdlog::warn("relay: rejecting {}: first frame is not a RelayJoin", Remote(*ep));
          return Close(ep);
        }
        self->Join(ep, envelope->relay_join().token());
      }));
    }));
  }

  void Join(std::shared_ptr<Endpoint> ep, const std::string& token) {
    auto it = waiting.find(token);
    if (it == waiting.end()) {
      auto timer = std::make_shared<asio::steady_timer>(io.context(), pairing_timeout);
      waiting[token] = {ep, timer};
      auto self = shared_from_this();
      timer->async_wait(asio::bind_executor(strand, [self, token, ep](const boost::system::error_code& ec) {
        if (ec) return;
        auto w = self->waiting.find(token);
        if (w != self->waiting.end() && w->second.endpoint == ep) {
          self->waiting.erase(w);
          Close(ep);  // its partner never came
        }
      }));
      return;
    }
    Pair pair{it->second.endpoint, ep};
    it->second.timer->cancel();
    waiting.erase(it);  // single use: a third endpoint with this token waits alone and expires
    ++pairs;
    spdlog::info("relay: paired an edge ({}…) between {} and {}", token.substr(0, 8), Remote(*pair.a),
                 Remote(*pair.b));
    Pump(pair, pair.a, pair.b);
    Pump(pair, pair.b, pair.a);
  }

  void Pump(Pair pair, std::shared_ptr<Endpoint> from, std::shared_ptr<Endpoint> to) {
    auto self = shared_from_this();
    from->socket.async_read_some(asio::buffer(from->buffer), asio::bind_executor(strand, [self, pair, from, to](
                                                                                       const boost::system::error_code& ec, size_t n) mutable {
      if (ec) return pair.Close();
      asio::async_write(to->socket, asio::buffer(from->buffer.data(), n), asio::bind_executor(self->strand, [self, pair, from, to, n](
                                                                                                  const boost::system::error_code& ec2, size_t) mutable {
        if (ec2) return pair.Close();
        self->bytes += n;
        self->Pump(pair, from, to);
      }));
    }));
  }

  static std::string Remote(const Endpoint& ep) {
    boost::system::error_code ec;
    auto r = ep.socket.remote_endpoint(ec);
    return ec ? "unknown" : r.address().to_string() + ":" + std::to_string(r.port());
  }
  static void Close(const std::shared_ptr<Endpoint>& ep) {
    boost::system::error_code ignored;
    ep->socket.close(ignored);
  }
};

RelayServer::RelayServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

RelayServer::~RelayServer() {
  auto impl = impl_;
  std::promise<void> done;
  asio::post(impl->strand, [impl, &done] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
    for (auto& [token, w] : impl->waiting) {
      w.timer->cancel();
      Impl::Close(w.endpoint);
    }
    impl->waiting.clear();
    done.set_value();
  });
  done.get_future().wait();
}

Result<std::unique_ptr<RelayServer>> RelayServer::Start(net::IoThread& io, const std::string& host,
                                                        uint16_t port, Millis pairing_timeout) {
  auto impl = std::make_shared<Impl>(io, pairing_timeout);
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return InvalidArgument("bad relay address '" + host + "'");
  tcp::endpoint endpoint(address, port);
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Unavailable("relay cannot listen on " + host + ": " + ec.message());
  asio::post(impl->strand, [impl] { impl->Accept(); });
  return std::unique_ptr<RelayServer>(new RelayServer(impl));
}

uint16_t RelayServer::port() const {
  boost::system::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}
uint64_t RelayServer::pairs() const { return impl_->pairs.load(); }
uint64_t RelayServer::bytes_forwarded() const { return impl_->bytes.load(); }

}  // namespace tributary::launcher
