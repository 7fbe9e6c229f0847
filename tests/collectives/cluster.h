// Test harness: `world` ranks as threads in one process, each with its own IoThread and a
// Listener on an ephemeral 127.0.0.1 port, talking real TCP. Keep a LocalCluster alive longer
// than the Rings formed on it (their connections live on its io threads).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "collectives/ring.h"
#include "net/connection.h"
#include "net/io_thread.h"

namespace tributary::collectives::testing {

using namespace std::chrono_literals;

// Runs fn(rank) on one thread per rank and returns the results by rank.
template <typename F>
auto OnEveryRank(uint32_t world, F fn) {
  using R = decltype(fn(uint32_t{0}));
  std::vector<std::optional<R>> slots(world);
  std::vector<std::thread> threads;
  for (uint32_t r = 0; r < world; ++r) {
    threads.emplace_back([&, r] { slots[r].emplace(fn(r)); });
  }
  for (auto& t : threads) t.join();
  std::vector<R> out;
  for (auto& s : slots) out.push_back(std::move(*s));
  return out;
}

class LocalCluster {
 public:
  explicit LocalCluster(uint32_t world) {
    for (uint32_t r = 0; r < world; ++r) {
      ios_.push_back(std::make_unique<net::IoThread>("rank-" + std::to_string(r)));
      auto listener = net::Listener::Bind(ios_.back()->context(), "127.0.0.1", 0);
      if (!listener.ok()) {
        ADD_FAILURE() << listener.status().ToString();
        std::abort();
      }
      listeners_.push_back(std::move(listener).value());
      members_.push_back({r, "127.0.0.1", listeners_.back()->port(), "peer-" + std::to_string(r)});
    }
  }

  uint32_t world() const { return static_cast<uint32_t>(members_.size()); }
  const std::vector<RingMember>& members() const { return members_; }
  net::IoThread& io(uint32_t r) { return *ios_[r]; }
  net::Listener& listener(uint32_t r) { return *listeners_[r]; }

  Result<std::unique_ptr<Ring>> Form(uint32_t rank, const std::string& job_id, uint64_t round,
                                     Millis timeout = Millis{10000}) {
    return Ring::Form(io(rank), listener(rank), rank, members_, job_id, round,
                      DeadlineAfter(timeout));
  }

  // Forms the ring on every rank at once; fails the test if any rank fails.
  std::vector<std::unique_ptr<Ring>> FormAll(const std::string& job_id = "job",
                                             uint64_t round = 1) {
    auto results = OnEveryRank(world(), [&](uint32_t r) { return Form(r, job_id, round); });
    std::vector<std::unique_ptr<Ring>> rings;
    for (auto& result : results) {
      EXPECT_TRUE(result.ok()) << result.status().ToString();
      rings.push_back(result.ok() ? std::move(result).value() : nullptr);
    }
    return rings;
  }

 private:
  std::vector<std::unique_ptr<net::IoThread>> ios_;
  std::vector<std::unique_ptr<net::Listener>> listeners_;
  std::vector<RingMember> members_;
};

}  // namespace tributary::collectives::testing
