#include "launcher/process.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <sstream>

namespace tributary::launcher {
namespace {

using namespace std::chrono_literals;

TEST(ProcessTest, ExitCodeEnvironmentAndLogFile) {
  const std::string log = ::testing::TempDir() + "/trib-process-test.log";
  std::remove(log.c_str());
  auto child = ChildProcess::Spawn({"/bin/sh", "-c", "echo hello $TRIB_X; exit 3"},
                                   {{"TRIB_X", "world"}}, log);
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  auto code = child->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 3);
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "hello world\n");
}

TEST(ProcessTest, KilledChildReportsSignalAndMissingBinaryFails) {
  auto child = ChildProcess::Spawn({"/bin/sleep", "30"});
  ASSERT_TRUE(child.ok());
  EXPECT_FALSE(child->Poll().has_value());
  EXPECT_EQ(child->Wait(DeadlineAfter(50ms)).status().code(), StatusCode::kDeadlineExceeded);
  child->Signal(SIGKILL);
  auto code = child->Wait(DeadlineAfter(5s));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 128 + SIGKILL);
  EXPECT_FALSE(ChildProcess::Spawn({"/nonexistent/binary"}).ok());
}

}  // namespace
}  // namespace tributary::launcher
