#include "models/tokenizer.h"

#include <cstdio>

namespace tributary::models {

ByteTokenizer ByteTokenizer::FromText(std::string_view text) {
  std::array<bool, 256> seen{};
  for (char c : text) seen[static_cast<unsigned char>(c)] = true;
  ByteTokenizer tok;
  for (int b = 0; b < 256; ++b) {
    if (!seen[b]) continue;
    tok.id_of_[b] = static_cast<int16_t>(tok.vocabulary_.size());
    tok.vocabulary_.push_back(static_cast<char>(b));
  }
  return tok;
}

Result<ByteTokenizer> ByteTokenizer::FromVocabulary(std::string_view vocabulary) {
  for (size_t i = 1; i < vocabulary.size(); ++i) {
    if (static_cast<unsigned char>(vocabulary[i - 1]) >=
        static_cast<unsigned char>(vocabulary[i])) {
      return InvalidArgument("tokenizer vocabulary must be strictly increasing bytes; position " +
                             std::to_string(i) + " breaks the order");
    }
  }
  return FromText(vocabulary);
}

Result<std::vector<int64_t>> ByteTokenizer::Encode(std::string_view text) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char byte = static_cast<unsigned char>(text[i]);
    const int16_t id = id_of_[byte];
    if (id < 0) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "0x%02x", byte);
      return InvalidArgument("byte " + std::string(hex) + " at offset " + std::to_string(i) +
                             " is not in the tokenizer's " + std::to_string(vocab_size()) +
                             "-byte vocabulary");
    }
    ids.push_back(id);
  }
  return ids;
}

Result<std::string> ByteTokenizer::Decode(std::span<const int64_t> ids) const {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size()) {
      return InvalidArgument("token id " + std::to_string(ids[i]) + " at position " +
                             std::to_string(i) + " is outside the vocabulary [0, " +
                             std::to_string(vocab_size()) + ")");
    }
    text.push_back(vocabulary_[static_cast<size_t>(ids[i])]);
  }
  return text;
}

}  // namespace tributary::models
