#include "base/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>

namespace runhcs {
namespace {

std::string Format(spdlog::level::level_enum level, std::string_view text,
                   std::map<std::string, std::string> fields) {
  auto f = MakeLogFormatter(std::move(fields));
  spdlog::details::log_msg msg("runhcs", level, text);
  spdlog::memory_buf_t buf;
  f->format(msg, buf);
  return std::string(buf.data(), buf.size());
}

TEST(LogFormatTest, IsLogrusTextWithTheShimsFieldsInKeyOrder) {
  std::string line =
      Format(spdlog::level::warn, "task \"c1\" exited",
             {{"namespace", "k8s.io"}, {"id", "c1"}, {"runtime", "io.containerd.runhcs.v1"}});
  std::regex want(
      R"(time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z" level=warning msg="task \\"c1\\" exited" )"
      R"(id=c1 namespace=k8s.io pid=)" +
      std::to_string(::getpid()) + R"( runtime=io.containerd.runhcs.v1\n)");
  EXPECT_TRUE(std::regex_match(line, want)) << line;
}

TEST(LogFormatTest, LevelsAreLogrusNames) {
  EXPECT_NE(Format(spdlog::level::err, "x", {}).find(" level=error "), std::string::npos);
  EXPECT_NE(Format(spdlog::level::info, "x", {}).find(" level=info "), std::string::npos);
  EXPECT_NE(Format(spdlog::level::debug, "x", {}).find(" level=debug "), std::string::npos);
  EXPECT_NE(Format(spdlog::level::critical, "x", {}).find(" level=fatal "), std::string::npos);
}

TEST(LogFormatTest, ValuesAreQuotedAsGoQuotesThemOnlyWhenNeeded) {
  EXPECT_EQ(LogValue("io.containerd.runhcs.v1"), "io.containerd.runhcs.v1");
  EXPECT_EQ(LogValue("/run/containerd/s/ab@1^2+3"), "/run/containerd/s/ab@1^2+3");
  EXPECT_EQ(LogValue(""), "\"\"");
  EXPECT_EQ(LogValue("two words"), "\"two words\"");
  EXPECT_EQ(LogValue("a=b"), "\"a=b\"");
  EXPECT_EQ(LogValue("say \"hi\"\\now\n\t\r"), R"("say \"hi\"\\now\n\t\r")");
  EXPECT_EQ(LogValue(std::string("\x01\x7f", 2)), R"("\x01\x7f")");
  EXPECT_EQ(LogValue("naïve"), "\"naïve\"");
}

// A message that spans lines stays one log line.
TEST(LogFormatTest, OneMessageIsOneLine) {
  std::string line = Format(spdlog::level::info, "first\nsecond", {});
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
}

}  // namespace
}  // namespace runhcs
