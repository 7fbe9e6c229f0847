#include "benchmarks/wanbench/scenario.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include "benchmarks/wan/toml_table_reader.h"
#include "benchmarks/wanbench/toml_section.h"
#include "core/files.h"
#include "runtime/job_spec.h"

namespace tributary::wanbench {
namespace {

constexpr const char* kKnownSystems =
    "tributary-ddp, tributary-diloco, tributary-diloco-h<N>, tributary-diloco-async[-h<N>][-k<N>][-ready], gloo-ddp; "
    "a Tributary system may end in +<codec>";

using Reader = wan::TomlTableReader;

// tributary-ddp[+codec] | tributary-diloco[-async][-h<N>][-k<N>][+codec] | gloo-ddp
Result<SystemSpec> ParseSystem(const std::string& full_name, uint32_t h, uint32_t ddp_steps) {
  auto unknown = [&] { return InvalidArgument("unknown system '" + full_name + "' (known: " + kKnownSystems + ")"); };
  std::string name = full_name, codec;
  if (const auto plus = full_name.find('+'); plus != std::string::npos) {
    name = full_name.substr(0, plus);
    codec = full_name.substr(plus + 1);
    if (codec.empty()) return unknown();
    if (name == "gloo-ddp") return InvalidArgument("system '" + full_name + "': gloo-ddp has no codecs");
  }
  if (name == "gloo-ddp") return SystemSpec{full_name, SystemKind::kGlooDdp, ddp_steps};
  if (name == "tributary-ddp") return SystemSpec{full_name, SystemKind::kTributaryDdp, ddp_steps, false, codec};
  std::string rest;
  if (name.rfind("tributary-diloco", 0) != 0) return unknown();
  rest = name.substr(std::string("tributary-diloco").size());
  SystemSpec system{full_name, SystemKind::kTributaryDiloco, h, false, codec};
  if (rest.rfind("-async", 0) == 0) {
    system.async = true;
    rest = rest.substr(std::string("-async").size());
  }
  // "-h<N>" then, for async systems, "-k<N>": each a positive number of at most 6 digits.
  auto take = [&](char letter) -> std::optional<uint32_t> {
    if (rest.size() < 3 || rest[0] != '-' || rest[1] != letter) return std::nullopt;
    size_t end = 2;
    while (end < rest.size() && rest[end] >= '0' && rest[end] <= '9') ++end;
    const std::string digits = rest.substr(2, end - 2);
    if (digits.empty() || digits.size() > 6 || std::stoul(digits) == 0) return std::nullopt;
    rest = rest.substr(end);
    return static_cast<uint32_t>(std::stoul(digits));
  };
  if (auto h_steps = take('h')) system.steps_per_round = *h_steps;
  if (system.async) {
    if (auto k = take('k')) system.async_apply_step = *k;
    if (rest == "-ready") {  // async_apply_when_ready
      system.async_apply_when_ready = true;
      rest.clear();
    }
  }
  if (!rest.empty()) return unknown();
  return system;
}

// [job]: each key goes through the job spec's own TOML reader, one key at a time, so that its
// error can name the line.
Status ReadJob(const std::string& text, const toml::table& root, const std::string& source,
               BenchScenario& s) {
  const toml::node* node = root.get("job");
  if (!node) return Status::Ok();
  const toml::table* job = node->as_table();
  if (!job) return InvalidArgument(source + ":" + std::to_string(LineOf(*node)) + ": 'job' must be a [job] table");
  const auto& reserved = ReservedJobKeys();
  for (const auto& [k, value] : *job) {
    const std::string key(k.str());
    const std::string at = source + ":" + std::to_string(LineOf(value)) + ": job." + key;
    if (std::find(reserved.begin(), reserved.end(), key) != reserved.end()) {
      return InvalidArgument(at + " is set by tributary-bench for each system (use the top-level "
                             "seed, [budget] and [network].peers)");
    }
    Status st = runtime::ApplyTomlString(IsolateValue(text, value), s.base_spec);
    if (!st.ok()) return InvalidArgument(at + ": " + st.message());
  }
  TRIB_ASSIGN_OR_RETURN(s.job_toml, ExtractSection(text, root, "job", true, source));
  return Status::Ok();
}

Status ReadBudget(const toml::table& root, const std::string& source, BenchScenario& s) {
  const toml::node* node = root.get("budget");
  if (!node || !node->as_table()) {
    return InvalidArgument(source + ": the scenario needs a [budget] table with tokens = N or steps = N");
  }
  Reader r(*node->as_table(), "budget", source);
  TRIB_ASSIGN_OR_RETURN(auto tokens, r.Integer("tokens"));
  TRIB_ASSIGN_OR_RETURN(auto steps, r.Integer("steps"));
  TRIB_ASSIGN_OR_RETURN(auto h, r.Integer("h"));
  TRIB_ASSIGN_OR_RETURN(auto ddp_steps, r.Integer("ddp_steps_per_round"));
  TRIB_ASSIGN_OR_RETURN(auto diloco_steps, r.Integer("diloco_steps"));
  TRIB_ASSIGN_OR_RETURN(auto diloco_eval_every, r.Integer("diloco_eval_every"));
  TRIB_RETURN_IF_ERROR(
      r.RefuseUnknown({"tokens", "steps", "h", "ddp_steps_per_round", "diloco_steps", "diloco_eval_every"}));
  if (diloco_eval_every) {
    if (*diloco_eval_every < 1 || *diloco_eval_every > 100000) {
      return r.Error("diloco_eval_every", "must be in 1..100000, got " + std::to_string(*diloco_eval_every));
    }
    s.diloco_eval_every = static_cast<uint32_t>(*diloco_eval_every);
  }
  if (diloco_steps) {
    if (*diloco_steps < 1) return r.Error("diloco_steps", "must be positive, got " + std::to_string(*diloco_steps));
    s.diloco_steps = static_cast<uint64_t>(*diloco_steps);
  }
  if (h) {
    if (*h < 1 || *h > 100000) return r.Error("h", "must be in 1..100000, got " + std::to_string(*h));
    s.h = static_cast<uint32_t>(*h);
  }
  if (ddp_steps) {
    if (*ddp_steps < 1 || *ddp_steps > 100000) {
      return r.Error("ddp_steps_per_round", "must be in 1..100000, got " + std::to_string(*ddp_steps));
    }
    s.ddp_steps_per_round = static_cast<uint32_t>(*ddp_steps);
  }
  if (tokens.has_value() == steps.has_value()) {
    return InvalidArgument(source + ":" + std::to_string(LineOf(*node)) +
                           ": [budget] needs exactly one of tokens = N (all peers together) or "
                           "steps = N (per peer)");
  }
  const uint64_t per_step = s.tokens_per_step() * static_cast<uint64_t>(s.peers());
  if (steps) {
    if (*steps < 1) return r.Error("steps", "must be positive, got " + std::to_string(*steps));
    s.steps_per_peer = static_cast<uint64_t>(*steps);
  } else {
    if (*tokens < 1) return r.Error("tokens", "must be positive, got " + std::to_string(*tokens));
    if (static_cast<uint64_t>(*tokens) % per_step != 0) {
      const uint64_t down = static_cast<uint64_t>(*tokens) / per_step * per_step;
      return r.Error("tokens", "= " + std::to_string(*tokens) + " is not a whole number of steps: one step of " +
                                   std::to_string(s.peers()) + " peers is " + std::to_string(per_step) +
                                   " tokens (batch_size × context × peers); try " +
                                   std::to_string(down > 0 ? down : per_step) + " or " +
                                   std::to_string(down + per_step));
    }
    s.steps_per_peer = static_cast<uint64_t>(*tokens) / per_step;
  }
  return Status::Ok();
}

Status ReadSystems(Reader& top, BenchScenario& s) {
  TRIB_ASSIGN_OR_RETURN(auto names, top.Strings("systems"));
  const std::vector<std::string> chosen =
      names.value_or(std::vector<std::string>{"tributary-ddp", "tributary-diloco", "gloo-ddp"});
  if (chosen.empty()) return top.Error("systems", "must name at least one system (known: " + std::string(kKnownSystems) + ")");
  std::set<std::string> seen;
  for (const auto& name : chosen) {
    auto system = ParseSystem(name, s.h, s.ddp_steps_per_round);
    if (!system.ok()) return top.Error("systems", ": " + system.status().message());
    if (!seen.insert(name).second) return top.Error("systems", "names '" + name + "' twice");
    system->steps_per_peer = system->ddp() ? s.steps_per_peer : s.diloco_steps.value_or(s.steps_per_peer);
    if (system->steps_per_peer % system->steps_per_round != 0) {
      return top.Error("systems", ": " + name + " trains " + std::to_string(system->steps_per_round) +
                                      " steps per round, which does not divide the budget of " +
                                      std::to_string(system->steps_per_peer) + " steps per peer");
    }
    s.systems.push_back(*system);
  }
  return Status::Ok();
}

Status ReadFaults(Reader& top, const std::string& source, BenchScenario& s) {
  const toml::node* node = top.Take("fault");
  if (!node) return Status::Ok();
  const toml::array* arr = node->as_array();
  if (!arr || !arr->is_array_of_tables()) {
    return InvalidArgument(top.At(*node) + ": 'fault' must be written as [[fault]] tables");
  }
  std::set<std::string> hit;
  for (size_t k = 0; k < arr->size(); ++k) {
    const toml::table& t = *arr->get(k)->as_table();
    Reader r(t, "fault[" + std::to_string(k) + "]", source);
    FaultSpec f;
    TRIB_ASSIGN_OR_RETURN(auto peer, r.Integer("peer"));
    TRIB_ASSIGN_OR_RETURN(auto at, r.Number("at_seconds"));
    TRIB_ASSIGN_OR_RETURN(auto systems, r.Strings("systems"));
    TRIB_ASSIGN_OR_RETURN(auto kind, r.String("kind"));
    TRIB_ASSIGN_OR_RETURN(auto duration, r.Number("duration_seconds"));
    TRIB_RETURN_IF_ERROR(r.RefuseUnknown({"peer", "at_seconds", "systems", "kind", "duration_seconds"}));
    if (!peer || !at) return InvalidArgument(r.At(t) + ": " + std::string("fault[") + std::to_string(k) + "] needs 'peer' and 'at_seconds'");
    if (*peer < 0 || *peer >= s.peers()) {
      return r.Error("peer", "= " + std::to_string(*peer) + " is outside 0.." + std::to_string(s.peers() - 1));
    }
    if (!(*at > 0 && *at < 86400)) return r.Error("at_seconds", "must be in (0, 86400)");
    if (kind && *kind != "kill" && *kind != "cut") {
      return r.Error("kind", "must be \"kill\" or \"cut\", got \"" + *kind + "\"");
    }
    f.kind = kind && *kind == "cut" ? FaultKind::kCut : FaultKind::kKill;
    if (duration) {
      if (f.kind != FaultKind::kCut) return r.Error("duration_seconds", "applies to kind = \"cut\" only");
      if (!(*duration > 0 && *duration < 86400)) return r.Error("duration_seconds", "must be in (0, 86400)");
      f.duration_seconds = *duration;
    }
    f.peer = static_cast<int>(*peer);
    f.at_seconds = *at;
    for (const auto& name : systems.value_or(std::vector<std::string>{})) {
      const bool known = std::any_of(s.systems.begin(), s.systems.end(),
                                     [&](const SystemSpec& x) { return x.name == name; });
      if (!known) return r.Error("systems", "names '" + name + "', which is not in the scenario's systems");
      f.systems.push_back(name);
    }
    for (const auto& system : s.systems) {
      if (!f.Applies(system.name)) continue;
      if (!hit.insert(system.name).second) {
        return InvalidArgument(r.At(t) + ": a second fault for " + system.name + " (one fault per system)");
      }
    }
    s.faults.push_back(std::move(f));
  }
  return Status::Ok();
}

}  // namespace

bool FaultSpec::Applies(const std::string& system) const {
  return systems.empty() || std::find(systems.begin(), systems.end(), system) != systems.end();
}

uint64_t BenchScenario::tokens_per_step() const {
  return uint64_t{base_spec.batch_size()} * base_spec.context();
}

uint64_t BenchScenario::total_tokens() const {
  return steps_per_peer * tokens_per_step() * static_cast<uint64_t>(peers());
}

uint64_t BenchScenario::total_tokens(const SystemSpec& system) const {
  return system.steps_per_peer * tokens_per_step() * static_cast<uint64_t>(peers());
}

const FaultSpec* BenchScenario::FaultFor(const std::string& system) const {
  for (const auto& f : faults) {
    if (f.Applies(system)) return &f;
  }
  return nullptr;
}

const std::vector<std::string>& ReservedJobKeys() {
  static const std::vector<std::string> keys = {"mode", "rounds", "inner_steps", "num_peers", "seed"};
  return keys;
}

Result<BenchScenario> ParseBenchScenario(const std::string& text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& err) {
    return InvalidArgument(source + ":" + std::to_string(err.source().begin.line) + ":" +
                           std::to_string(err.source().begin.column) + ": " +
                           std::string(err.description()));
  }
  BenchScenario s;
  s.source = source;
  s.base_spec = runtime::DefaultJobSpec();
  Reader top(root, "", source);

  // [network] first: the number of peers shapes the rest.
  top.Take("network");
  if (!root.get("network")) {
    return InvalidArgument(source + ": the scenario needs a [network] table (peers, preset, ... as "
                           "in docs/WAN_EMULATOR.md)");
  }
  TRIB_ASSIGN_OR_RETURN(std::string network_text, ExtractSection(text, root, "network", false, source));
  auto network = wan::ParseScenario(network_text, source);
  if (!network.ok()) return network.status().WithContext("[network]");
  s.network = *network;
  s.base_spec.set_num_peers(static_cast<uint32_t>(s.peers()));

  TRIB_ASSIGN_OR_RETURN(auto name, top.String("name"));
  s.name = name.value_or(std::filesystem::path(source).stem().string());
  if (s.name.empty() || s.name.size() > 64 ||
      !std::all_of(s.name.begin(), s.name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
      })) {
    return top.Error("name", "must be 1-64 characters of [A-Za-z0-9_-] (it names output files), got '" + s.name + "'");
  }
  TRIB_ASSIGN_OR_RETURN(auto seed, top.Integer("seed"));
  if (seed) {
    if (*seed < 0) return top.Error("seed", "must be >= 0");
    s.seed = static_cast<uint64_t>(*seed);
  }
  s.base_spec.set_seed(s.seed);
  TRIB_ASSIGN_OR_RETURN(auto timeout, top.Number("timeout_seconds"));
  if (timeout) {
    if (!(*timeout >= 10 && *timeout <= 86400)) return top.Error("timeout_seconds", "must be in [10, 86400]");
    s.timeout_seconds = *timeout;
  }
  top.Take("job");
  TRIB_RETURN_IF_ERROR(ReadJob(text, root, source, s));
  if (s.job_toml.empty()) s.job_toml = "[job]\n";
  top.Take("budget");
  TRIB_RETURN_IF_ERROR(ReadBudget(root, source, s));
  TRIB_RETURN_IF_ERROR(ReadSystems(top, s));
  TRIB_RETURN_IF_ERROR(ReadFaults(top, source, s));
  TRIB_RETURN_IF_ERROR(top.RefuseUnknown(
      {"name", "seed", "systems", "timeout_seconds", "network", "job", "budget", "fault"}));
  for (const auto& system : s.systems) {
    Status st = runtime::ValidateJobSpec(SpecFor(s, system));
    if (!st.ok()) return st.WithContext(source + ": [job] for " + system.name);
  }
  return s;
}

Result<BenchScenario> LoadBenchScenarioFile(const std::string& path) {
  auto text = ReadWholeFile(path);
  if (!text.ok()) return text.status().WithContext("cannot read scenario " + path);
  return ParseBenchScenario(*text, path);
}

v1::JobSpec SpecFor(const BenchScenario& s, const SystemSpec& system) {
  v1::JobSpec spec = s.base_spec;
  spec.set_mode(system.ddp() ? v1::MODE_DDP : system.async ? v1::MODE_DILOCO_ASYNC : v1::MODE_DILOCO);
  if (!system.codec.empty()) spec.set_codec(system.codec);
  spec.set_inner_steps(system.steps_per_round);
  spec.set_rounds(static_cast<uint32_t>(system.steps_per_peer / system.steps_per_round));
  if (!system.ddp() && s.diloco_eval_every > 0) spec.set_eval_every(s.diloco_eval_every);
  if (system.async_apply_step > 0) spec.set_async_apply_step(system.async_apply_step);
  if (system.async_apply_when_ready) spec.set_async_apply_when_ready(true);
  if (system.tributary() && s.FaultFor(system.name) && spec.min_peers() == 0) {
    // Without this the coordinator would wait for the dead peer forever. The gather window
    // keeps round 0 from starting before every peer has joined.
    spec.set_min_peers(static_cast<uint32_t>(s.peers() - 1));
    if (spec.gather_ms() == 0) spec.set_gather_ms(2000);
  }
  return spec;
}

std::string DescribeScenario(const BenchScenario& s) {
  const v1::JobSpec& j = s.base_spec;
  std::string systems;
  for (const auto& x : s.systems) systems += (systems.empty() ? "" : ", ") + x.name;
  std::string out = s.name + ": " + std::to_string(s.peers()) + " peers; model " + j.model() +
                    " (" + std::to_string(j.n_layer()) + " layers, d_model " +
                    std::to_string(j.d_model()) + ", context " + std::to_string(j.context()) +
                    "), batch " + std::to_string(j.batch_size()) + " per peer; budget " +
                    std::to_string(s.steps_per_peer) + " steps per peer = " +
                    std::to_string(s.total_tokens()) + " tokens";
  if (s.diloco_steps) out += " (DiLoCo systems: " + std::to_string(*s.diloco_steps) + " steps per peer)";
  out += "; systems: " + systems;
  for (const auto& f : s.faults) {
    char at[32];
    std::snprintf(at, sizeof(at), "%g", f.at_seconds);
    if (f.kind == FaultKind::kKill) {
      out += "; fault: kill peer " + std::to_string(f.peer) + " " + at + " s after all joined";
    } else {
      char lasting[48] = "for good";
      if (f.duration_seconds > 0) std::snprintf(lasting, sizeof(lasting), "for %g s", f.duration_seconds);
      out += "; fault: cut peer " + std::to_string(f.peer) + "'s links " + at + " s after all joined, " + lasting;
    }
  }
  return out;
}

}  // namespace tributary::wanbench
