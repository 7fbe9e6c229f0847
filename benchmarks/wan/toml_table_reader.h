// TomlTableReader: typed reads from one table of a TOML file, with errors that name the file,
// the line and the dotted key, and a final check that refuses every key nobody asked about (a
// typo must not silently run another benchmark). Shared by the WAN emulator's scenario files and
// tributary-bench's scenario files, so both report errors the same way.
#pragma once

#include <toml++/toml.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace tributary::wan {

class TomlTableReader {
 public:
  // `where` is the table's dotted name ("" for the root), `source` the file name for messages.
  TomlTableReader(const toml::table& table, std::string where, std::string source)
      : table_(table), where_(std::move(where)), source_(std::move(source)) {}

  // "file.toml:12"
  std::string At(const toml::node& node) const {
    return source_ + ":" + std::to_string(node.source().begin.line);
  }
  // "where.key"
  std::string Name(const std::string& key) const { return where_.empty() ? key : where_ + "." + key; }

  // Absent keys are nullopt; a value of another type is an error.
  Result<std::optional<double>> Number(const std::string& key) { return Typed<double>(key, "a number", &toml::node::is_number); }
  Result<std::optional<int64_t>> Integer(const std::string& key) { return Typed<int64_t>(key, "an integer", &toml::node::is_integer); }
  Result<std::optional<std::string>> String(const std::string& key) { return Typed<std::string>(key, "a string", &toml::node::is_string); }
  Result<std::optional<bool>> Bool(const std::string& key) { return Typed<bool>(key, "true or false", &toml::node::is_boolean); }
  Result<std::optional<std::vector<std::string>>> Strings(const std::string& key) {
    const toml::node* n = Take(key);
    if (!n) return std::optional<std::vector<std::string>>();
    const toml::array* arr = n->as_array();
    if (!arr) return TypeError(*n, key, "an array of strings");
    std::vector<std::string> out;
    for (const auto& item : *arr) {
      if (!item.is_string()) return TypeError(*n, key, "an array of strings");
      out.push_back(*item.value<std::string>());
    }
    return std::optional<std::vector<std::string>>(std::move(out));
  }
  // The node itself (marks the key as known); null when absent.
  const toml::node* Take(const std::string& key) {
    taken_.insert(key);
    return table_.get(key);
  }

  // After all reads: any key nobody asked for is a typo or a feature we do not have.
  Status RefuseUnknown(const std::vector<std::string>& known) const {
    for (const auto& [k, node] : table_) {
      const std::string key(k.str());
      if (taken_.count(key)) continue;
      std::string list;
      for (const auto& name : known) list += (list.empty() ? "" : ", ") + name;
      return InvalidArgument(At(node) + ": unknown key '" + Name(key) + "' (known here: " + list + ")");
    }
    return Status::Ok();
  }
  // "file.toml:12: where.key <what>" (no space when `what` starts with ':').
  Status Error(const std::string& key, const std::string& what) const {
    const toml::node* n = table_.get(key);
    const std::string gap = !what.empty() && what[0] == ':' ? "" : " ";
    return InvalidArgument((n ? At(*n) : source_) + ": " + Name(key) + gap + what);
  }

  const std::string& where() const { return where_; }
  const std::string& source() const { return source_; }

 private:
  template <typename T>
  Result<std::optional<T>> Typed(const std::string& key, const char* want, bool (toml::node::*is)() const noexcept) {
    const toml::node* n = Take(key);
    if (!n) return std::optional<T>();
    if (!(n->*is)()) return TypeError(*n, key, want);
    return std::optional<T>(*n->value<T>());
  }
  Status TypeError(const toml::node& node, const std::string& key, const char* want) const {
    return InvalidArgument(At(node) + ": " + Name(key) + " must be " + want);
  }

  const toml::table& table_;
  std::string where_;
  std::string source_;
  std::set<std::string> taken_;
};

}  // namespace tributary::wan
