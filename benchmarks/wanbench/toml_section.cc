#include "benchmarks/wanbench/toml_section.h"

#include <algorithm>
#include <cctype>

namespace tributary::wanbench {
namespace {

std::vector<std::string> SplitLines(std::string_view text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    lines.emplace_back(text.substr(start, end - start));
    if (end == text.size()) break;
    start = end + 1;
  }
  return lines;
}

std::string JoinLines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

bool IsHeaderLine(const std::string& line) {
  auto it = std::find_if(line.begin(), line.end(), [](char c) { return c != ' ' && c != '\t'; });
  return it != line.end() && *it == '[';
}

std::string QuoteKey(std::string_view key) {
  const bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  if (bare) return std::string(key);
  std::string q = "\"";
  for (char c : key) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"";
}

std::string JoinPath(const std::string& path, std::string_view key) {
  return path.empty() ? QuoteKey(key) : path + "." + QuoteKey(key);
}

void CopyLines(const toml::node& node, const std::vector<std::string>& in,
               std::vector<std::string>& out) {
  const auto& src = node.source();
  const size_t first = src.begin.line, last = std::max(src.begin.line, src.end.line);
  for (size_t l = first; l >= 1 && l <= last && l <= in.size(); ++l) out[l - 1] = in[l - 1];
}

// Copies every value of `table` and writes its sub-table headers with `path` as their prefix.
void Walk(const toml::table& table, const std::string& path, bool array_element,
          const std::vector<std::string>& in, std::vector<std::string>& out) {
  const size_t header = table.source().begin.line;
  if (header >= 1 && header <= in.size() && IsHeaderLine(in[header - 1])) {
    out[header - 1] = path.empty() ? "" : (array_element ? "[[" + path + "]]" : "[" + path + "]");
  }
  for (const auto& [k, child] : table) {
    const std::string child_path = JoinPath(path, k.str());
    if (const toml::table* sub = child.as_table(); sub && !sub->is_inline()) {
      Walk(*sub, child_path, false, in, out);
      continue;
    }
    const toml::array* arr = child.as_array();
    if (arr && arr->is_array_of_tables() && !arr->empty() &&
        !arr->get(0)->as_table()->is_inline()) {
      for (const auto& element : *arr) Walk(*element.as_table(), child_path, true, in, out);
      continue;
    }
    CopyLines(child, in, out);
  }
}

}  // namespace

int LineOf(const toml::node& node) { return static_cast<int>(node.source().begin.line); }

Result<std::string> ExtractSection(std::string_view text, const toml::table& root,
                                   const std::string& key, bool keep_prefix,
                                   const std::string& source) {
  const toml::node* node = root.get(key);
  if (!node) return NotFound(source + ": no [" + key + "] table");
  const toml::table* table = node->as_table();
  const std::string at = source + ":" + std::to_string(LineOf(*node));
  if (!table) return InvalidArgument(at + ": '" + key + "' must be a [" + key + "] table");
  const std::vector<std::string> in = SplitLines(text);
  const size_t header = table->source().begin.line;
  if (table->is_inline() || header < 1 || header > in.size() || !IsHeaderLine(in[header - 1])) {
    return InvalidArgument(at + ": write '" + key + "' as a [" + key +
                           "] table, not inline or with dotted keys");
  }
  std::vector<std::string> out(in.size());
  Walk(*table, keep_prefix ? QuoteKey(key) : "", false, in, out);
  if (!keep_prefix) {
    // The table's own keys become top-level keys, and TOML has no header that returns to the
    // top level: they must come before the first sub-table header.
    for (const auto& [k, child] : *table) {
      const toml::table* sub = child.as_table();
      const toml::array* arr = child.as_array();
      const bool headed = (sub && !sub->is_inline()) ||
                          (arr && arr->is_array_of_tables() && !arr->empty() &&
                           !arr->get(0)->as_table()->is_inline());
      if (headed) continue;
      for (size_t l = 0; l + 1 < child.source().begin.line && l < out.size(); ++l) {
        if (IsHeaderLine(out[l])) {
          return InvalidArgument(source + ":" + std::to_string(LineOf(child)) + ": " + key + "." +
                                 std::string(k.str()) + " must come before the sub-table on line " +
                                 std::to_string(l + 1) + " (write [" + key +
                                 "]'s own keys first)");
        }
      }
    }
  }
  return JoinLines(out);
}

std::string IsolateValue(std::string_view text, const toml::node& value) {
  const std::vector<std::string> in = SplitLines(text);
  std::vector<std::string> out(in.size());
  CopyLines(value, in, out);
  return JoinLines(out);
}

}  // namespace tributary::wanbench
