#include "benchmarks/wan/wan_config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "benchmarks/wan/toml_table_reader.h"
#include "core/files.h"

namespace tributary::wan {
namespace {

constexpr int64_t kMinAutoQueueBytes = 64 * 1024;
constexpr double kMaxDelayMs = 60'000;
constexpr double kMaxRateMbit = 1'000'000;
constexpr int kMaxPeers = 250;

double Unlimited(double mbit) { return mbit > 0 ? mbit : std::numeric_limits<double>::infinity(); }

}  // namespace

int64_t AutoQueueBytes(double rate_mbit, double one_way_ms) {
  if (rate_mbit <= 0) return 0;
  const double bdp = rate_mbit * 1e6 / 8.0 * (2.0 * one_way_ms / 1e3);
  return std::max<int64_t>(kMinAutoQueueBytes, static_cast<int64_t>(std::llround(bdp)));
}

std::vector<std::string> PresetNames() { return {"lan", "continent", "transatlantic", "home"}; }

Result<PeerProfile> PresetProfile(std::string_view name) {
  PeerProfile p;
  if (name == "lan") {
    // Unshaped: no emulated 10 Gbit/s link is faster than the forwarding thread anyway, and a
    // BDP-sized queue at that rate (125 KB) would only add tail drops.
    p.rtt_ms = 0.1;
  } else if (name == "continent") {
    p.up_mbit = p.down_mbit = 1'000;
    p.rtt_ms = 30;
  } else if (name == "transatlantic") {
    p.up_mbit = p.down_mbit = 100;
    p.rtt_ms = 100;
  } else if (name == "home") {
    p.up_mbit = 5;
    p.down_mbit = 20;
    p.rtt_ms = 40;
    p.loss = 0.01;
  } else {
    return InvalidArgument("unknown preset '" + std::string(name) +
                           "' (known: lan, continent, transatlantic, home)");
  }
  return p;
}

LinkParams ComposeLink(const PeerProfile& from, const PeerProfile& to) {
  LinkParams l;
  const double rate = std::min(Unlimited(from.up_mbit), Unlimited(to.down_mbit));
  l.rate_mbit = std::isinf(rate) ? 0 : rate;
  l.delay_ms = (from.rtt_ms / 2 + to.rtt_ms / 2) / 2;
  l.jitter_ms = std::max(from.jitter_ms, to.jitter_ms);
  l.jitter_distribution = from.jitter_distribution;
  l.allow_reorder = from.allow_reorder;
  l.loss = std::max(from.loss, to.loss);
  l.queue_bytes = from.queue_bytes > 0 ? from.queue_bytes : AutoQueueBytes(l.rate_mbit, l.delay_ms);
  l.queue_packets = from.queue_packets;
  return l;
}

WanConfig MeshConfig(const std::vector<PeerProfile>& profiles) {
  WanConfig c;
  c.num_peers = static_cast<int>(profiles.size());
  c.links.resize(profiles.size() * profiles.size());
  for (int i = 0; i < c.num_peers; ++i) {
    for (int j = 0; j < c.num_peers; ++j) {
      if (i != j) c.link(i, j) = ComposeLink(profiles[i], profiles[j]);
    }
  }
  return c;
}

Result<WanConfig> PresetConfig(std::string_view preset, int num_peers) {
  TRIB_ASSIGN_OR_RETURN(PeerProfile p, PresetProfile(preset));
  if (num_peers < 2 || num_peers > kMaxPeers) {
    return InvalidArgument("peers must be between 2 and " + std::to_string(kMaxPeers) + ", got " +
                           std::to_string(num_peers));
  }
  return MeshConfig(std::vector<PeerProfile>(static_cast<size_t>(num_peers), p));
}

// ---------------------------------------------------------------------------------------------
// Subnets

Result<Subnet> ParseSubnet(const std::string& cidr) {
  unsigned a, b, c, d;
  int prefix;
  char tail;
  if (std::sscanf(cidr.c_str(), "%u.%u.%u.%u/%d%c", &a, &b, &c, &d, &prefix, &tail) != 5 ||
      a > 255 || b > 255 || c > 255 || d > 255) {
    return InvalidArgument("subnet '" + cidr + "' is not of the form a.b.c.d/prefix");
  }
  if (prefix < 8 || prefix > 30) {
    return InvalidArgument("subnet '" + cidr + "': prefix must be between 8 and 30");
  }
  Subnet s;
  s.prefix = prefix;
  const uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  s.base = ((a << 24) | (b << 16) | (c << 8) | d) & mask;
  return s;
}

std::string FormatIpv4(uint32_t h) {
  return std::to_string(h >> 24) + "." + std::to_string((h >> 16) & 255) + "." +
         std::to_string((h >> 8) & 255) + "." + std::to_string(h & 255);
}

// ---------------------------------------------------------------------------------------------
// Validation

namespace {

std::string Num(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
  } else {
    std::snprintf(buf, sizeof(buf), "%g", v);
  }
  return buf;
}

Status CheckRange(double v, double lo, double hi, const std::string& what) {
  if (!(v >= lo && v <= hi)) {  // also refuses NaN
    return InvalidArgument(what + " must be in [" + Num(lo) + ", " + Num(hi) + "], got " + Num(v));
  }
  return Status::Ok();
}

}  // namespace

Status ValidateLink(const LinkParams& l, const std::string& where) {
  TRIB_RETURN_IF_ERROR(CheckRange(l.delay_ms, 0, kMaxDelayMs, where + ".delay_ms"));
  TRIB_RETURN_IF_ERROR(CheckRange(l.jitter_ms, 0, kMaxDelayMs, where + ".jitter_ms"));
  TRIB_RETURN_IF_ERROR(CheckRange(l.rate_mbit, 0, kMaxRateMbit, where + ".rate_mbit"));
  TRIB_RETURN_IF_ERROR(CheckRange(l.loss, 0, 1, where + ".loss"));
  if (l.queue_bytes < 0) return InvalidArgument(where + ".queue_bytes must be >= 0");
  if (l.queue_packets < 0) return InvalidArgument(where + ".queue_packets must be >= 0");
  return Status::Ok();
}

Status ValidateConfig(const WanConfig& c) {
  if (c.num_peers < 2 || c.num_peers > kMaxPeers) {
    return InvalidArgument("peers must be between 2 and " + std::to_string(kMaxPeers) + ", got " +
                           std::to_string(c.num_peers));
  }
  TRIB_ASSIGN_OR_RETURN(Subnet s, ParseSubnet(c.subnet));
  const int64_t hosts = (int64_t{1} << (32 - s.prefix)) - 2;
  if (c.num_peers > hosts) {
    return InvalidArgument("subnet " + c.subnet + " has room for " + std::to_string(hosts) +
                           " hosts, not " + std::to_string(c.num_peers) + " peers");
  }
  if (c.mtu < 576 || c.mtu > 65535) {
    return InvalidArgument("mtu must be between 576 and 65535, got " + std::to_string(c.mtu));
  }
  if (c.name_prefix.empty() || c.name_prefix.size() > 16 ||
      !std::all_of(c.name_prefix.begin(), c.name_prefix.end(),
                   [](char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'); })) {
    return InvalidArgument("name_prefix '" + c.name_prefix +
                           "' must be 1-16 characters of [a-z0-9] (it must not contain '-')");
  }
  if (c.tcp_buffer_bytes < 0 || c.tcp_buffer_bytes > (int64_t{1} << 30)) {
    return InvalidArgument("tcp_buffer_bytes must be between 0 and 1 GiB, got " +
                           std::to_string(c.tcp_buffer_bytes));
  }
  const size_t n = static_cast<size_t>(c.num_peers);
  if (c.links.size() != n * n) {
    return InvalidArgument("links must hold peers × peers = " + std::to_string(n * n) +
                           " entries, got " + std::to_string(c.links.size()));
  }
  for (int i = 0; i < c.num_peers; ++i) {
    for (int j = 0; j < c.num_peers; ++j) {
      if (i == j) continue;
      TRIB_RETURN_IF_ERROR(
          ValidateLink(c.link(i, j), "link " + std::to_string(i) + "->" + std::to_string(j)));
    }
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Scenario files

namespace {

using TableReader = TomlTableReader;

Result<JitterDistribution> ParseDistribution(const std::string& s, const std::string& where) {
  if (s == "uniform") return JitterDistribution::kUniform;
  if (s == "normal") return JitterDistribution::kNormal;
  return InvalidArgument(where + ": jitter_distribution must be \"uniform\" or \"normal\", got \"" +
                         s + "\"");
}

Status RequireNonNegative(std::optional<double> v, const std::string& what) {
  if (v && !(*v >= 0)) return InvalidArgument(what + " must be >= 0, got " + Num(*v));
  return Status::Ok();
}

Status ReadProfile(TableReader& r, PeerProfile& p) {
  const std::string at = r.where();
  TRIB_ASSIGN_OR_RETURN(auto up, r.Number("up_mbit"));
  TRIB_ASSIGN_OR_RETURN(auto down, r.Number("down_mbit"));
  TRIB_ASSIGN_OR_RETURN(auto rtt, r.Number("rtt_ms"));
  TRIB_ASSIGN_OR_RETURN(auto jitter, r.Number("jitter_ms"));
  TRIB_ASSIGN_OR_RETURN(auto dist, r.String("jitter_distribution"));
  TRIB_ASSIGN_OR_RETURN(auto reorder, r.Bool("reorder"));
  TRIB_ASSIGN_OR_RETURN(auto loss, r.Number("loss"));
  TRIB_ASSIGN_OR_RETURN(auto qb, r.Integer("queue_bytes"));
  TRIB_ASSIGN_OR_RETURN(auto qp, r.Integer("queue_packets"));
  TRIB_RETURN_IF_ERROR(RequireNonNegative(up, r.Name("up_mbit")));
  TRIB_RETURN_IF_ERROR(RequireNonNegative(down, r.Name("down_mbit")));
  TRIB_RETURN_IF_ERROR(RequireNonNegative(rtt, r.Name("rtt_ms")));
  TRIB_RETURN_IF_ERROR(RequireNonNegative(jitter, r.Name("jitter_ms")));
  if (up) p.up_mbit = *up;
  if (down) p.down_mbit = *down;
  if (rtt) p.rtt_ms = *rtt;
  if (jitter) p.jitter_ms = *jitter;
  if (dist) {
    TRIB_ASSIGN_OR_RETURN(p.jitter_distribution, ParseDistribution(*dist, at));
  }
  if (reorder) p.allow_reorder = *reorder;
  if (loss) {
    if (!(*loss >= 0 && *loss <= 1)) {
      return InvalidArgument(r.Name("loss") + " must be in [0, 1], got " + Num(*loss));
    }
    p.loss = *loss;
  }
  if (qb) {
    if (*qb < 0) return InvalidArgument(r.Name("queue_bytes") + " must be >= 0");
    p.queue_bytes = *qb;
  }
  if (qp) {
    if (*qp < 0) return InvalidArgument(r.Name("queue_packets") + " must be >= 0");
    p.queue_packets = *qp;
  }
  return Status::Ok();
}

const std::vector<std::string> kProfileKeys = {
    "up_mbit", "down_mbit", "rtt_ms", "jitter_ms", "jitter_distribution",
    "reorder", "loss",      "queue_bytes", "queue_packets"};

Status ReadPeers(const toml::node* node, TableReader& top, int n,
                 std::vector<PeerProfile>& profiles, std::vector<bool>& queue_explicit_peer) {
  if (!node) return Status::Ok();
  const toml::array* arr = node->as_array();
  if (!arr || !arr->is_array_of_tables()) {
    return InvalidArgument(top.At(*node) + ": 'peer' must be written as [[peer]] tables");
  }
  std::set<int64_t> seen;
  for (size_t k = 0; k < arr->size(); ++k) {
    const toml::table& t = *arr->get(k)->as_table();
    TableReader r(t, "peer[" + std::to_string(k) + "]", top.source());
    TRIB_ASSIGN_OR_RETURN(auto index, r.Integer("index"));
    if (!index) return InvalidArgument(top.At(t) + ": " + r.where() + " needs an 'index'");
    if (*index < 0 || *index >= n) {
      return InvalidArgument(top.At(t) + ": " + r.Name("index") + " = " + std::to_string(*index) +
                             " is outside 0.." + std::to_string(n - 1));
    }
    if (!seen.insert(*index).second) {
      return InvalidArgument(top.At(t) + ": peer " + std::to_string(*index) +
                             " is described twice");
    }
    PeerProfile& p = profiles[static_cast<size_t>(*index)];
    TRIB_ASSIGN_OR_RETURN(auto preset, r.String("preset"));
    if (preset) {
      auto base = PresetProfile(*preset);
      if (!base.ok()) return base.status().WithContext(top.At(t) + ": " + r.Name("preset"));
      p = *base;
    }
    Status s = ReadProfile(r, p);
    if (!s.ok()) return s.WithContext(top.At(t));
    if (p.queue_bytes > 0) queue_explicit_peer[static_cast<size_t>(*index)] = true;
    std::vector<std::string> known = {"index", "preset"};
    known.insert(known.end(), kProfileKeys.begin(), kProfileKeys.end());
    TRIB_RETURN_IF_ERROR(r.RefuseUnknown(known));
  }
  return Status::Ok();
}

// One [matrix] entry: an N×N array of numbers, row = sender.
Status ReadMatrix(const toml::node& node, const std::string& key, TableReader& r, int n,
                  const std::function<Status(int, int, double)>& set) {
  const toml::array* rows = node.as_array();
  const std::string name = r.Name(key);
  if (!rows) return InvalidArgument(r.At(node) + ": " + name + " must be an array of arrays");
  if (static_cast<int>(rows->size()) != n) {
    return InvalidArgument(r.At(node) + ": " + name + " must have " + std::to_string(n) +
                           " rows (peers = " + std::to_string(n) + "), got " +
                           std::to_string(rows->size()));
  }
  for (int i = 0; i < n; ++i) {
    const toml::array* row = rows->get(static_cast<size_t>(i))->as_array();
    if (!row || static_cast<int>(row->size()) != n) {
      return InvalidArgument(r.At(node) + ": " + name + "[" + std::to_string(i) +
                             "] must be an array of " + std::to_string(n) + " numbers");
    }
    for (int j = 0; j < n; ++j) {
      const toml::node* cell = row->get(static_cast<size_t>(j));
      if (!cell->is_number()) {
        return InvalidArgument(r.At(*cell) + ": " + name + "[" + std::to_string(i) + "][" +
                               std::to_string(j) + "] must be a number");
      }
      if (i == j) continue;  // a peer does not send to itself through the emulator
      TRIB_RETURN_IF_ERROR(set(i, j, *cell->value<double>()));
    }
  }
  return Status::Ok();
}

Status ReadMatrices(const toml::node* node, TableReader& top, WanConfig& c,
                    std::vector<bool>& queue_explicit) {
  if (!node) return Status::Ok();
  const toml::table* t = node->as_table();
  if (!t) return InvalidArgument(top.At(*node) + ": 'matrix' must be a [matrix] table");
  TableReader r(*t, "matrix", top.source());
  const int n = c.num_peers;
  auto field = [&](const std::string& key, auto apply) -> Status {
    const toml::node* m = r.Take(key);
    if (!m) return Status::Ok();
    return ReadMatrix(*m, key, r, n, [&](int i, int j, double v) -> Status {
      if (!(v >= 0)) {
        return InvalidArgument(r.At(*m) + ": " + r.Name(key) + "[" + std::to_string(i) + "][" +
                               std::to_string(j) + "] must be >= 0, got " + Num(v));
      }
      apply(c.link(i, j), v, static_cast<size_t>(i * n + j));
      return Status::Ok();
    });
  };
  TRIB_RETURN_IF_ERROR(field("delay_ms", [](LinkParams& l, double v, size_t) { l.delay_ms = v; }));
  TRIB_RETURN_IF_ERROR(field("jitter_ms", [](LinkParams& l, double v, size_t) { l.jitter_ms = v; }));
  TRIB_RETURN_IF_ERROR(field("rate_mbit", [](LinkParams& l, double v, size_t) { l.rate_mbit = v; }));
  TRIB_RETURN_IF_ERROR(field("loss", [](LinkParams& l, double v, size_t) { l.loss = v; }));
  TRIB_RETURN_IF_ERROR(field("queue_bytes", [&](LinkParams& l, double v, size_t k) {
    l.queue_bytes = static_cast<int64_t>(v);
    queue_explicit[k] = true;
  }));
  TRIB_RETURN_IF_ERROR(field("queue_packets", [](LinkParams& l, double v, size_t) {
    l.queue_packets = static_cast<int64_t>(v);
  }));
  return r.RefuseUnknown(
      {"delay_ms", "jitter_ms", "rate_mbit", "loss", "queue_bytes", "queue_packets"});
}

Status ReadLinks(const toml::node* node, TableReader& top, WanConfig& c,
                 std::vector<bool>& queue_explicit) {
  if (!node) return Status::Ok();
  const toml::array* arr = node->as_array();
  if (!arr || !arr->is_array_of_tables()) {
    return InvalidArgument(top.At(*node) + ": 'link' must be written as [[link]] tables");
  }
  const int n = c.num_peers;
  for (size_t k = 0; k < arr->size(); ++k) {
    const toml::table& t = *arr->get(k)->as_table();
    TableReader r(t, "link[" + std::to_string(k) + "]", top.source());
    TRIB_ASSIGN_OR_RETURN(auto from, r.Integer("from"));
    TRIB_ASSIGN_OR_RETURN(auto to, r.Integer("to"));
    if (!from || !to) return InvalidArgument(top.At(t) + ": " + r.where() + " needs 'from' and 'to'");
    for (auto [v, key] : {std::pair{*from, "from"}, std::pair{*to, "to"}}) {
      if (v < 0 || v >= n) {
        return InvalidArgument(top.At(t) + ": " + r.Name(key) + " = " + std::to_string(v) +
                               " is outside 0.." + std::to_string(n - 1));
      }
    }
    if (*from == *to) return InvalidArgument(top.At(t) + ": " + r.where() + " links a peer to itself");
    LinkParams& l = c.link(static_cast<int>(*from), static_cast<int>(*to));
    TRIB_ASSIGN_OR_RETURN(auto delay, r.Number("delay_ms"));
    TRIB_ASSIGN_OR_RETURN(auto jitter, r.Number("jitter_ms"));
    TRIB_ASSIGN_OR_RETURN(auto dist, r.String("jitter_distribution"));
    TRIB_ASSIGN_OR_RETURN(auto reorder, r.Bool("reorder"));
    TRIB_ASSIGN_OR_RETURN(auto rate, r.Number("rate_mbit"));
    TRIB_ASSIGN_OR_RETURN(auto loss, r.Number("loss"));
    TRIB_ASSIGN_OR_RETURN(auto qb, r.Integer("queue_bytes"));
    TRIB_ASSIGN_OR_RETURN(auto qp, r.Integer("queue_packets"));
    if (delay) l.delay_ms = *delay;
    if (jitter) l.jitter_ms = *jitter;
    if (dist) {
      TRIB_ASSIGN_OR_RETURN(l.jitter_distribution, ParseDistribution(*dist, top.At(t)));
    }
    if (reorder) l.allow_reorder = *reorder;
    if (rate) l.rate_mbit = *rate;
    if (loss) l.loss = *loss;
    if (qb) {
      l.queue_bytes = *qb;
      queue_explicit[static_cast<size_t>(*from * n + *to)] = true;
    }
    if (qp) l.queue_packets = *qp;
    Status s = ValidateLink(l, r.where());
    if (!s.ok()) return s.WithContext(top.At(t));
    TRIB_RETURN_IF_ERROR(r.RefuseUnknown({"from", "to", "delay_ms", "jitter_ms",
                                          "jitter_distribution", "reorder", "rate_mbit", "loss",
                                          "queue_bytes", "queue_packets"}));
  }
  return Status::Ok();
}

}  // namespace

Result<WanConfig> ParseScenario(const std::string& toml_text, const std::string& source_name) {
  // Debian's toml++ is built with exceptions; they stop here and become a Status.
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& err) {
    return InvalidArgument(source_name + ":" + std::to_string(err.source().begin.line) + ":" +
                           std::to_string(err.source().begin.column) + ": " +
                           std::string(err.description()));
  }
  TableReader top(root, "", source_name);
  auto where = [&](const std::string& key) {
    const toml::node* n = root.get(key);
    return n ? top.At(*n) : source_name;
  };

  TRIB_ASSIGN_OR_RETURN(auto peers, top.Integer("peers"));
  if (!peers) return InvalidArgument(source_name + ": the scenario needs 'peers = N'");
  if (*peers < 2 || *peers > kMaxPeers) {
    return InvalidArgument(where("peers") + ": peers must be between 2 and " +
                           std::to_string(kMaxPeers) + ", got " + std::to_string(*peers));
  }
  const int n = static_cast<int>(*peers);
  TRIB_ASSIGN_OR_RETURN(auto preset, top.String("preset"));
  auto base = PresetProfile(preset.value_or("lan"));
  if (!base.ok()) return base.status().WithContext(where("preset"));

  std::vector<PeerProfile> profiles(static_cast<size_t>(n), *base);
  std::vector<bool> queue_explicit_peer(static_cast<size_t>(n), false);
  TRIB_RETURN_IF_ERROR(ReadPeers(top.Take("peer"), top, n, profiles, queue_explicit_peer));
  WanConfig c = MeshConfig(profiles);

  TRIB_ASSIGN_OR_RETURN(auto subnet, top.String("subnet"));
  TRIB_ASSIGN_OR_RETURN(auto mtu, top.Integer("mtu"));
  TRIB_ASSIGN_OR_RETURN(auto seed, top.Integer("seed"));
  TRIB_ASSIGN_OR_RETURN(auto tcp_buffer, top.Integer("tcp_buffer_bytes"));
  if (tcp_buffer) c.tcp_buffer_bytes = *tcp_buffer;
  if (subnet) c.subnet = *subnet;
  if (mtu) c.mtu = static_cast<int>(std::clamp<int64_t>(*mtu, -1, 1 << 20));
  if (seed) c.seed = static_cast<uint64_t>(*seed);

  // A link whose rate or delay a matrix or [[link]] changed, but whose queue nobody gave,
  // gets its automatic queue recomputed at the end.
  std::vector<bool> queue_explicit(static_cast<size_t>(n * n), false);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) queue_explicit[static_cast<size_t>(i * n + j)] = queue_explicit_peer[i];
  }
  TRIB_RETURN_IF_ERROR(ReadMatrices(top.Take("matrix"), top, c, queue_explicit));
  TRIB_RETURN_IF_ERROR(ReadLinks(top.Take("link"), top, c, queue_explicit));
  TRIB_RETURN_IF_ERROR(top.RefuseUnknown(
      {"peers", "preset", "subnet", "mtu", "seed", "tcp_buffer_bytes", "peer", "matrix", "link"}));

  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      LinkParams& l = c.link(i, j);
      if (i != j && !queue_explicit[static_cast<size_t>(i * n + j)]) {
        l.queue_bytes = AutoQueueBytes(l.rate_mbit, l.delay_ms);
      }
    }
  }
  Status s = ValidateConfig(c);
  if (!s.ok()) return s.WithContext(source_name);
  return c;
}

Result<WanConfig> LoadScenarioFile(const std::string& path) {
  auto text = ReadWholeFile(path);
  if (!text.ok()) return text.status().WithContext("cannot read scenario " + path);
  return ParseScenario(*text, path);
}

// ---------------------------------------------------------------------------------------------
// Description

namespace {

std::string FormatLink(const LinkParams& l) {
  char buf[256];
  std::string rate = l.rate_mbit > 0 ? std::to_string(l.rate_mbit) : "unshaped";
  if (l.rate_mbit > 0) {
    std::snprintf(buf, sizeof(buf), "%.6g Mbit/s", l.rate_mbit);
    rate = buf;
  }
  std::string queue = "none";
  if (l.queue_bytes > 0 || l.queue_packets > 0) {
    queue.clear();
    if (l.queue_bytes > 0) {
      std::snprintf(buf, sizeof(buf), "%.1f KiB", l.queue_bytes / 1024.0);
      queue = buf;
    }
    if (l.queue_packets > 0) {
      queue += (queue.empty() ? "" : " / ") + std::to_string(l.queue_packets) + " pkts";
    }
  }
  std::snprintf(buf, sizeof(buf), "delay %.3g ms, jitter %.3g ms%s%s, rate %s, loss %.3g %%, queue %s",
                l.delay_ms, l.jitter_ms,
                l.jitter_ms > 0 && l.jitter_distribution == JitterDistribution::kNormal ? " (normal)" : "",
                l.allow_reorder ? " (reordering)" : "", rate.c_str(), l.loss * 100, queue.c_str());
  return buf;
}

}  // namespace

std::string DescribeLinks(const WanConfig& c) {
  std::ostringstream os;
  bool uniform = true;
  const LinkParams& first = c.link(0, 1);
  for (int i = 0; i < c.num_peers; ++i) {
    for (int j = 0; j < c.num_peers; ++j) {
      if (i != j && !(c.link(i, j) == first)) uniform = false;
    }
  }
  if (uniform) {
    os << "  every link: " << FormatLink(first) << "\n";
    return os.str();
  }
  for (int i = 0; i < c.num_peers; ++i) {
    for (int j = 0; j < c.num_peers; ++j) {
      if (i != j) os << "  " << i << " -> " << j << ": " << FormatLink(c.link(i, j)) << "\n";
    }
  }
  return os.str();
}

}  // namespace tributary::wan
