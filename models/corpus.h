// The training text: every *.txt file under a directory, concatenated in a fixed order, plus a
// digest so peers can prove they train on the same bytes before they compare anything else.
#pragma once

#include <cstddef>
#include <string>

#include "core/digest.h"
#include "core/status.h"

namespace tributary::models {

struct Corpus {
  std::string text;  // files joined with "\n" between them (none after the last)
  Digest digest{};   // SHA-256 of `text`
  size_t num_files = 0;
  std::string source_dir;  // the directory as passed to LoadCorpus
};

// Reads every regular *.txt file under `dir` (recursively), in byte-wise sorted order of their
// paths relative to `dir`. NotFound, with instructions for installing the corpus, if `dir` does
// not exist or holds no .txt file; IoError if a file cannot be read.
Result<Corpus> LoadCorpus(const std::string& dir);

// $TRIBUTARY_DATA_DIR/moby-dick if that variable is set and non-empty, else "data/moby-dick"
// (relative to the current directory).
std::string DefaultCorpusDir();

}  // namespace tributary::models
