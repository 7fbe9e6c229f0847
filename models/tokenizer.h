// Byte-level "character" tokenizer. Token id i is the i-th smallest distinct byte value of the
// text the vocabulary was built from, so the vocabulary is a deterministic function of the
// corpus and can be shipped around as a string (vocabulary()) and rebuilt (FromVocabulary).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tributary::models {

class ByteTokenizer {
 public:
  // Vocabulary = the sorted set of distinct bytes in `text` (possibly empty).
  static ByteTokenizer FromText(std::string_view text);
  // Inverse of vocabulary(): InvalidArgument unless the bytes are strictly increasing.
  static Result<ByteTokenizer> FromVocabulary(std::string_view vocabulary);

  // There is no "unknown" id: a byte outside the vocabulary is an InvalidArgument error (naming
  // the byte and its offset), because silently remapping it would change what the model sees.
  Result<std::vector<int64_t>> Encode(std::string_view text) const;
  // InvalidArgument for an id outside [0, vocab_size()).
  Result<std::string> Decode(std::span<const int64_t> ids) const;

  int vocab_size() const { return static_cast<int>(vocabulary_.size()); }
  // Byte i is the byte of token id i.
  const std::string& vocabulary() const { return vocabulary_; }

 private:
  ByteTokenizer() { id_of_.fill(-1); }

  std::string vocabulary_;
  std::array<int16_t, 256> id_of_{};  // -1: byte not in the vocabulary
};

}  // namespace tributary::models
