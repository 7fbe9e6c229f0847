// Lifts one top-level table out of a TOML file as a document of its own, line for line: every
// line that does not belong to the table is left blank. A parser that then reads the extracted
// text (the WAN emulator's ParseScenario, the job spec's ApplyTomlString) reports errors at the
// line numbers of the original file, so a scenario can embed their formats unchanged.
#pragma once

#include <toml++/toml.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tributary::wanbench {

// `root` is `text` parsed. With keep_prefix = false the table's own keys become top-level keys
// and "[key.sub]" headers become "[sub]" (what ParseScenario expects of a [network] table);
// with keep_prefix = true headers stay as they are. Refuses an inline or dotted-key table.
Result<std::string> ExtractSection(std::string_view text, const toml::table& root,
                                   const std::string& key, bool keep_prefix,
                                   const std::string& source);

// The text of the lines of one value (a key's line, or every line of a multi-line array) with
// all other lines blank: feeding one key at a time to a parser that does not report line
// numbers still lets the caller name the line.
std::string IsolateValue(std::string_view text, const toml::node& value);

// The 1-based line where `node` starts in its source, for messages ("file.toml:12: ...").
int LineOf(const toml::node& node);

}  // namespace tributary::wanbench
