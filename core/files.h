// File helpers. WriteFileAtomically never leaves a half-written file under `path`: it writes a
// temporary sibling, fsyncs it, renames it over `path` and fsyncs the directory, so a crash at
// any point leaves either the old file or the new one.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace tributary {

Status WriteFileAtomically(const std::string& path, std::string_view contents);
Result<std::string> ReadWholeFile(const std::string& path);
// The file's contents, or "" when it cannot be read: for logs that may not exist yet.
std::string ReadFileOrEmpty(const std::string& path);
bool FileExists(const std::string& path);
Status MakeDirectories(const std::string& path);

}  // namespace tributary
