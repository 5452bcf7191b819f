#include "stdio/uri.h"

#include <gtest/gtest.h>

namespace runhcs::stdio {
namespace {

TEST(Uri, Kinds) {
  EXPECT_EQ(ParseTarget("")->kind, Target::kNone);
  auto plain = ParseTarget("/run/containerd/fifo/1/c-stdout");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->kind, Target::kFifo);
  EXPECT_EQ(plain->path, "/run/containerd/fifo/1/c-stdout");
  EXPECT_EQ(ParseTarget("fifo:///x/y")->kind, Target::kFifo);
  auto file = ParseTarget("file:///var/log/a%20b.log");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->kind, Target::kFile);
  EXPECT_EQ(file->path, "/var/log/a b.log");
  // A '+' in a path is a '+' (Go's url.Parse); in a query it is a space.
  EXPECT_EQ(ParseTarget("file:///var/log/c++.log")->path, "/var/log/c++.log");
  EXPECT_EQ(ParseTarget("binary:///bin/l?k=a+b")->args, (std::vector<std::string>{"k", "a b"}));
}

TEST(Uri, BinaryArgsAreKeyThenValueInKeyOrder) {
  auto b = ParseTarget("binary:///usr/bin/logger?z=1&a=x%2Fy&flag&a=ignored");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->kind, Target::kBinary);
  EXPECT_EQ(b->path, "/usr/bin/logger");
  EXPECT_EQ(b->args, (std::vector<std::string>{"a", "x/y", "flag", "z", "1"}));
}

TEST(Uri, BadInput) {
  EXPECT_EQ(ParseTarget("http://x/y").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ParseTarget("relative/path").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(ParseTarget("file://").status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace runhcs::stdio
