// Test helpers: a small deterministic English-like corpus in a fresh temp directory, so tests
// never depend on the downloaded Moby-Dick data.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/seed.h"

namespace tributary::testing {

inline std::string FreshTempDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  auto dir = std::filesystem::temp_directory_path() /
             ("trib-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// `files` chapters of pseudo-sentences (~`bytes_per_file` bytes each) with learnable structure.
inline std::string MakeTempCorpus(const std::string& tag, int files = 3, int bytes_per_file = 40000,
                                  uint64_t seed = 7) {
  static const std::vector<std::string> kWords = {
      "the", "whale", "sea", "ship", "captain", "white", "called", "me", "ishmael", "and",
      "of",  "a",     "to",  "in",   "his",     "was",   "that",   "it", "with",    "old"};
  const std::string dir = FreshTempDir(tag);
  SeedStream rng(seed);
  for (int f = 0; f < files; ++f) {
    std::string text;
    while (static_cast<int>(text.size()) < bytes_per_file) {
      const int words = 4 + static_cast<int>(rng.Below(8));
      for (int w = 0; w < words; ++w) {
        if (w) text += ' ';
        text += kWords[rng.Below(kWords.size())];
      }
      text += rng.Below(4) == 0 ? ".\n" : ". ";
    }
    char name[32];
    std::snprintf(name, sizeof(name), "chapter_%03d.txt", f + 1);
    std::ofstream(std::filesystem::path(dir) / name) << text;
  }
  return dir;
}

}  // namespace tributary::testing
