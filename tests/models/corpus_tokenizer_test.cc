#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/digest.h"
#include "models/corpus.h"
#include "models/tokenizer.h"

namespace tributary::models {
namespace {
namespace fs = std::filesystem;

std::string TempDir() {
  auto dir =
      fs::temp_directory_path() / ("trib-models-" + std::to_string(::getpid()) + "-" +
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void WriteFile(const fs::path& path, const std::string& contents) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << contents;
}

TEST(TokenizerTest, VocabularyIsSortedDistinctBytes) {
  ByteTokenizer tok = ByteTokenizer::FromText("hello, world");
  EXPECT_EQ(tok.vocabulary(), " ,dehlorw");
  EXPECT_EQ(tok.vocab_size(), 9);
  auto ids = tok.Encode("hello");
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_EQ(*ids, (std::vector<int64_t>{4, 3, 5, 5, 6}));
}

TEST(TokenizerTest, RoundTripIncludingMultiByteUtf8) {
  const std::string text = "Call me Ishmael\xe2\x80\x94 some years ago.\n\tAhab!";
  ByteTokenizer tok = ByteTokenizer::FromText(text);
  auto ids = tok.Encode(text);
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), text.size());
  for (int64_t id : *ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, tok.vocab_size());
  }
  auto back = tok.Decode(*ids);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, text);
}

TEST(TokenizerTest, UnknownByteAndOutOfRangeIdAreErrors) {
  ByteTokenizer tok = ByteTokenizer::FromText("abc");
  auto bad = tok.Encode("abxc");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("0x78"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("offset 2"), std::string::npos);

  std::vector<int64_t> ids = {0, 3};
  EXPECT_EQ(tok.Decode(ids).status().code(), StatusCode::kInvalidArgument);
  ids = {-1};
  EXPECT_FALSE(tok.Decode(ids).ok());
}

TEST(TokenizerTest, FromVocabularyRebuildsTheSameTokenizer) {
  ByteTokenizer tok = ByteTokenizer::FromText("the quick brown fox");
  auto rebuilt = ByteTokenizer::FromVocabulary(tok.vocabulary());
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_EQ(rebuilt->vocabulary(), tok.vocabulary());
  EXPECT_EQ(*rebuilt->Encode("fox"), *tok.Encode("fox"));
  EXPECT_FALSE(ByteTokenizer::FromVocabulary("ba").ok());
  EXPECT_FALSE(ByteTokenizer::FromVocabulary("aa").ok());
}

TEST(CorpusTest, ConcatenatesTxtFilesInSortedPathOrder) {
  const std::string dir = TempDir();
  WriteFile(fs::path(dir) / "b.txt", "second");
  WriteFile(fs::path(dir) / "sub" / "c.txt", "third");
  WriteFile(fs::path(dir) / "a.txt", "first");
  WriteFile(fs::path(dir) / "B.txt", "zeroth");  // upper case sorts first (byte order)
  WriteFile(fs::path(dir) / "notes.md", "ignored");
  auto corpus = LoadCorpus(dir);
  ASSERT_TRUE(corpus.ok()) << corpus.status().ToString();
  EXPECT_EQ(corpus->text, "zeroth\nfirst\nsecond\nthird");
  EXPECT_EQ(corpus->num_files, 4u);
  EXPECT_EQ(corpus->source_dir, dir);
  EXPECT_EQ(corpus->digest, Sha256Of("zeroth\nfirst\nsecond\nthird"));
  fs::remove_all(dir);
}

TEST(CorpusTest, MissingDirectoryIsNotFoundWithInstructions) {
  auto corpus = LoadCorpus("/nonexistent/trib-corpus");
  ASSERT_FALSE(corpus.ok());
  EXPECT_EQ(corpus.status().code(), StatusCode::kNotFound);
  const std::string& msg = corpus.status().message();
  EXPECT_NE(msg.find("/nonexistent/trib-corpus"), std::string::npos) << msg;
  EXPECT_NE(msg.find("run scripts/setup.sh (or scripts/fetch_corpus.sh) to install the Moby-Dick "
                     "corpus into data/moby-dick"),
            std::string::npos)
      << msg;
}

TEST(CorpusTest, DirectoryWithoutTxtFilesIsNotFound) {
  const std::string dir = TempDir();
  WriteFile(fs::path(dir) / "readme.md", "no text here");
  auto corpus = LoadCorpus(dir);
  ASSERT_FALSE(corpus.ok());
  EXPECT_EQ(corpus.status().code(), StatusCode::kNotFound);
  EXPECT_NE(corpus.status().message().find("scripts/fetch_corpus.sh"), std::string::npos);
  fs::remove_all(dir);
}

TEST(CorpusTest, DefaultDirHonoursDataDirVariable) {
  const char* saved = std::getenv("TRIBUTARY_DATA_DIR");
  const std::string saved_value = saved ? saved : "";
  ::setenv("TRIBUTARY_DATA_DIR", "/srv/trib-data", 1);
  EXPECT_EQ(DefaultCorpusDir(), "/srv/trib-data/moby-dick");
  ::unsetenv("TRIBUTARY_DATA_DIR");
  EXPECT_EQ(DefaultCorpusDir(), "data/moby-dick");
  if (saved) ::setenv("TRIBUTARY_DATA_DIR", saved_value.c_str(), 1);
}

}  // namespace
}  // namespace tributary::models
