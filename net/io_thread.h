// IoThread owns one asio::io_context and the thread that runs it. Each role (coordinator, peer)
// has one; every socket of that role lives on it. Destruction stops the context and joins.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <string>
#include <thread>

namespace tributary::net {

namespace asio = boost::asio;

class IoThread {
 public:
  explicit IoThread(std::string name);
  ~IoThread();
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  asio::io_context& context() { return context_; }
  // True when called from this IoThread's own thread: blocking calls must never run there.
  bool InThisThread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  std::string name_;
  asio::io_context context_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;
};

}  // namespace tributary::net
