// "81.87 MB": byte counts for people (decimal units, as the tables in docs/ use them).
#pragma once

#include <cstdio>
#include <string>

namespace tributary {

inline std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) {
    bytes /= 1000;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof(text), u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return text;
}

}  // namespace tributary
