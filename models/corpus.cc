#include "models/corpus.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

#include "core/files.h"

namespace tributary::models {
namespace {
namespace fs = std::filesystem;

constexpr const char* kHowToInstall =
    "run scripts/setup.sh (or scripts/fetch_corpus.sh) to install the Moby-Dick corpus into "
    "data/moby-dick";
}  // namespace

Result<Corpus> LoadCorpus(const std::string& dir) {
  std::error_code ec;
  if (dir.empty() || !fs::is_directory(dir, ec)) {
    return NotFound("corpus directory '" + dir + "' does not exist; " + kHowToInstall);
  }
  // Sorting relative paths (not directory_iterator order, which is filesystem-dependent) makes
  // the text, and so its digest, identical on every machine.
  std::vector<std::string> files;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (it->path().extension() == ".txt" && it->is_regular_file(type_ec)) {
      files.push_back(it->path().lexically_relative(dir).generic_string());
    }
  }
  if (ec) return IoError("cannot list corpus directory '" + dir + "': " + ec.message());
  if (files.empty()) {
    return NotFound("corpus directory '" + dir + "' has no .txt files; " + kHowToInstall);
  }
  std::sort(files.begin(), files.end());

  Corpus corpus;
  corpus.source_dir = dir;
  corpus.num_files = files.size();
  for (size_t i = 0; i < files.size(); ++i) {
    auto contents = ReadWholeFile((fs::path(dir) / files[i]).string());
    if (!contents.ok()) {
      return IoError("cannot read corpus file: " + contents.status().message());
    }
    if (i > 0) corpus.text += '\n';
    corpus.text += *contents;
  }
  corpus.digest = Sha256Of(corpus.text);
  return corpus;
}

std::string DefaultCorpusDir() {
  const char* root = std::getenv("TRIBUTARY_DATA_DIR");
  if (root != nullptr && *root != '\0') return std::string(root) + "/moby-dick";
  return "data/moby-dick";
}

}  // namespace tributary::models
