#include "stdio/console.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>

#include "base/io.h"

namespace runhcs::stdio {
namespace {

using namespace std::chrono_literals;

TEST(ConsoleSocketTest, TheFdTheRuntimeSendsArrives) {
  auto sock = ConsoleSocket::Create();
  ASSERT_TRUE(sock.ok()) << sock.status().ToString();
  auto conn = ConnectUnix({(*sock)->path(), false});
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  UniqueFd sent(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(SendFd(conn->get(), sent.get()).ok());
  auto got = (*sock)->ReceiveMaster(5s);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  struct stat a, b;
  ASSERT_EQ(::fstat(sent.get(), &a), 0);
  ASSERT_EQ(::fstat(got->get(), &b), 0);
  EXPECT_EQ(a.st_rdev, b.st_rdev);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_NE(::fcntl(got->get(), F_GETFD) & FD_CLOEXEC, 0);
}

// A runtime that returned without connecting, or connected and sent
// nothing, never will: the caller gets DeadlineExceeded, not a hang.
TEST(ConsoleSocketTest, NoConnectionIsDeadlineExceeded) {
  auto sock = ConsoleSocket::Create();
  ASSERT_TRUE(sock.ok());
  auto start = std::chrono::steady_clock::now();
  auto got = (*sock)->ReceiveMaster(200ms);
  EXPECT_EQ(got.status().code(), Code::kDeadlineExceeded) << got.status().ToString();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms);
}

TEST(ConsoleSocketTest, AConnectionThatSendsNothingIsDeadlineExceeded) {
  auto sock = ConsoleSocket::Create();
  ASSERT_TRUE(sock.ok());
  auto conn = ConnectUnix({(*sock)->path(), false});
  ASSERT_TRUE(conn.ok());
  auto got = (*sock)->ReceiveMaster(200ms);
  EXPECT_EQ(got.status().code(), Code::kDeadlineExceeded) << got.status().ToString();
  EXPECT_NE(got.status().message().find("nothing sent"), std::string::npos)
      << got.status().ToString();
}

TEST(ConsoleSocketTest, AConnectionClosedWithoutAnFdIsAnError) {
  auto sock = ConsoleSocket::Create();
  ASSERT_TRUE(sock.ok());
  {
    auto conn = ConnectUnix({(*sock)->path(), false});
    ASSERT_TRUE(conn.ok());
  }
  auto got = (*sock)->ReceiveMaster(5s);
  EXPECT_FALSE(got.ok());
  EXPECT_NE(got.status().code(), Code::kDeadlineExceeded) << got.status().ToString();
}

}  // namespace
}  // namespace runhcs::stdio
