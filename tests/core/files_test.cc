#include "core/files.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace tributary {
namespace {

std::string TempDir() {
  auto dir = std::filesystem::temp_directory_path() /
             ("trib-files-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
              "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

TEST(FilesTest, AtomicWriteReplacesWholeFileAndLeavesNoTemp) {
  std::string dir = TempDir();
  std::string path = dir + "/state.bin";
  ASSERT_TRUE(WriteFileAtomically(path, "first version").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());
  auto got = ReadWholeFile(path);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "second");
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1) << "temporary file left behind";
}

TEST(FilesTest, WriteIntoMissingDirectoryFailsCleanly) {
  Status st = WriteFileAtomically("/nonexistent-dir-trib/x.bin", "data");
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_NE(st.message().find("nonexistent-dir-trib"), std::string::npos);
}

TEST(FilesTest, ReadMissingFileIsNotFound) {
  auto r = ReadWholeFile("/nonexistent-dir-trib/none");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tributary
