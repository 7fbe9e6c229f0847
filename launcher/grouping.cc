#include "launcher/grouping.h"

#include <algorithm>
#include <numeric>
#include <mutex>
#include <set>

#include "core/digest.h"

namespace tributary::launcher {
namespace {

// Redraws of an epoch's order allowed while it would repeat the previous round's partition.
// Each redraw repeats it with probability well below 1/2 once N > k, so this is never reached
// in practice; if it were, the repeat is harmless (just one round without fresh partners).
constexpr uint32_t kMaxRedraws = 64;

using Partition = std::vector<std::vector<size_t>>;

// Members (indices into keys) in the epoch's keyed-hash order.
std::vector<size_t> EpochOrder(std::string_view job_id, uint64_t epoch, uint32_t redraw,
                               const std::vector<std::string>& keys) {
  std::vector<std::pair<Digest, size_t>> ranked;
  ranked.reserve(keys.size());
  const std::string prefix = "tributary/groups/" + std::string(job_id) + "/" + std::to_string(epoch) + "/" +
                             std::to_string(redraw) + "/";
  for (size_t i = 0; i < keys.size(); ++i) ranked.emplace_back(Sha256Of(prefix + keys[i]), i);
  // Ties (a SHA-256 collision) fall back to the key itself, never to the caller's order.
  std::sort(ranked.begin(), ranked.end(), [&keys](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : keys[a.second] < keys[b.second];
  });
  std::vector<size_t> order;
  for (const auto& [digest, i] : ranked) order.push_back(i);
  return order;
}

Partition Blocks(const std::vector<size_t>& order, size_t k) {
  Partition groups(k);
  const size_t n = order.size(), base = n / k, extra = n % k;
  size_t pos = 0;
  for (size_t g = 0; g < k; ++g) {
    const size_t size = base + (g < extra ? 1 : 0);
    for (size_t j = 0; j < size; ++j) groups[g].push_back(order[pos++]);
  }
  return groups;
}

Partition Dealt(const std::vector<size_t>& order, size_t k) {
  Partition groups(k);
  for (size_t pos = 0; pos < order.size(); ++pos) groups[pos % k].push_back(order[pos]);
  return groups;
}

Partition Normalised(Partition groups) {
  for (auto& g : groups) std::sort(g.begin(), g.end());
  return groups;
}

std::set<std::vector<size_t>> AsSet(const Partition& p) { return {p.begin(), p.end()}; }

// The epoch's order: redrawn while its first partition would repeat the last partition of the
// previous epoch (computed on the same members, so still a pure function of the inputs). The
// chain of epochs is memoised for the last member list: a transparent cache, since the coordinator
// asks for consecutive rounds of one mostly stable membership.
std::vector<size_t> ChosenOrder(std::string_view job_id, uint64_t epoch, size_t k,
                                const std::vector<std::string>& sorted_keys) {
  struct Memo {
    std::string job_id;
    size_t k = 0;
    std::vector<std::string> keys;
    std::vector<std::vector<size_t>> orders;  // by epoch
  };
  static std::mutex mu;
  static Memo memo;
  std::lock_guard<std::mutex> lock(mu);
  if (memo.job_id != job_id || memo.k != k || memo.keys != sorted_keys) {
    memo = Memo{std::string(job_id), k, sorted_keys, {}};
  }
  while (memo.orders.size() <= epoch) {
    const uint64_t e = memo.orders.size();
    std::vector<size_t> order = EpochOrder(job_id, e, 0, sorted_keys);
    if (e > 0) {
      const auto previous = AsSet(Normalised(Dealt(memo.orders.back(), k)));
      for (uint32_t redraw = 1; redraw < kMaxRedraws && AsSet(Normalised(Blocks(order, k))) == previous; ++redraw) {
        order = EpochOrder(job_id, e, redraw, sorted_keys);
      }
    }
    memo.orders.push_back(std::move(order));
  }
  return memo.orders[epoch];
}

}  // namespace

uint32_t GroupSizeOfRound(uint32_t group_size, uint64_t round, uint32_t total_rounds) {
  return round + 1 >= total_rounds ? 0 : group_size;
}

std::vector<std::vector<size_t>> FormGroups(std::string_view job_id, uint64_t round, uint32_t group_size,
                                            const std::vector<std::string>& keys) {
  const size_t n = keys.size();
  if (group_size == 0 || n <= group_size) {
    std::vector<size_t> all(n);
    std::iota(all.begin(), all.end(), size_t{0});
    return {all};
  }
  const size_t k = (n + group_size - 1) / group_size;
  const uint64_t epoch = round / 2;
  // Work on the keys in sorted order, so the caller's order cannot change the outcome.
  std::vector<size_t> by_key(n);
  std::iota(by_key.begin(), by_key.end(), size_t{0});
  std::sort(by_key.begin(), by_key.end(), [&keys](size_t a, size_t b) { return keys[a] < keys[b]; });
  std::vector<std::string> sorted_keys;
  for (size_t i : by_key) sorted_keys.push_back(keys[i]);
  const std::vector<size_t> order = ChosenOrder(job_id, epoch, k, sorted_keys);
  Partition groups = round % 2 == 0 ? Blocks(order, k) : Dealt(order, k);
  for (auto& g : groups) {
    for (size_t& i : g) i = by_key[i];
  }
  return Normalised(std::move(groups));
}

}  // namespace tributary::launcher
