#include "base/command.h"

#include <gtest/gtest.h>

namespace runhcs {
namespace {

using namespace std::chrono_literals;

TEST(RunCommandTest, ReturnsStdoutOfASuccessfulCommand) {
  auto out = RunCommand({"sh", "-c", "echo one; echo two >&2; echo three"});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "one\nthree\n");
}

TEST(RunCommandTest, AFailureNamesTheCommandItsStatusAndLastStderrLine) {
  // The lines are computed, so the command's own text does not contain them.
  auto out = RunCommand({"sh", "-c", "echo $((6*7)) >&2; echo $((7*8)) dev >&2; exit 3"});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kUnknown);
  EXPECT_NE(out.status().message().find("exit status 3"), std::string::npos);
  EXPECT_NE(out.status().message().find("56 dev"), std::string::npos);
  EXPECT_EQ(out.status().message().find("42"), std::string::npos);
  EXPECT_NE(out.status().message().find("sh -c"), std::string::npos);
}

TEST(RunCommandTest, AMissingProgramIsNotFound) {
  auto out = RunCommand({"/nonexistent/tool"});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kNotFound);
}

TEST(RunCommandTest, OverTimeIsKilledAndDeadlineExceeded) {
  auto start = std::chrono::steady_clock::now();
  auto out = RunCommand({"sleep", "30"}, 200ms);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(RunCommandTest, LargeOutputOnBothStreamsDoesNotDeadlock) {
  auto out = RunCommand({"sh", "-c",
                         "head -c 300000 /dev/zero | tr '\\0' x; "
                         "head -c 300000 /dev/zero | tr '\\0' y >&2"});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->size(), 300000u);
}

}  // namespace
}  // namespace runhcs
