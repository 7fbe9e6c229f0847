#include "net/io_thread.h"

#include <spdlog/spdlog.h>

namespace tributary::net {

IoThread::IoThread(std::string name)
    : name_(std::move(name)), guard_(asio::make_work_guard(context_)) {
  thread_ = std::thread([this] {
    // Handlers must not throw; if one does, log it and keep the context alive for the others.
    for (;;) {
      try {
        context_.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("{}: handler threw: {}", name_, e.what());
      }
    }
  });
}

IoThread::~IoThread() {
  guard_.reset();
  context_.stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace tributary::net
