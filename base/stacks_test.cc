#include "base/stacks.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/fd.h"

namespace runhcs {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::atomic<pid_t> g_marker_tid{0};

// Blocks in read(2) until a byte arrives; returns it. The name is what the
// test looks for in a dump.
__attribute__((noinline)) int BlockedInStacksTestMarker(int fd) {
  g_marker_tid = static_cast<pid_t>(::gettid());
  char b = 0;
  ssize_t n = ::read(fd, &b, 1);  // interrupted by the dump, restarted (SA_RESTART)
  return n == 1 ? b : -errno;
}

const ThreadStack* Find(const std::vector<ThreadStack>& v, pid_t tid) {
  for (const auto& t : v) {
    if (t.tid == tid) return &t;
  }
  return nullptr;
}

class StacksTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(InstallStackHandler().ok()); }
};

TEST_F(StacksTest, NamesTheFunctionAnotherThreadIsBlockedInAndItsCallStillSucceeds) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  UniqueFd r(p[0]), w(p[1]);
  g_marker_tid = 0;
  std::atomic<int> result{0};
  std::thread t([&] { result = BlockedInStacksTestMarker(r.get()); });
  while (g_marker_tid == 0) std::this_thread::yield();
  usleep(20000);  // into read()

  auto stacks = CaptureThreadStacks();
  const ThreadStack* ts = Find(stacks, g_marker_tid);
  ASSERT_NE(ts, nullptr);
  EXPECT_TRUE(ts->answered);
  std::string text = FormatStacks(stacks, SymbolizeHere);
  EXPECT_THAT(text, HasSubstr("BlockedInStacksTestMarker"));
  EXPECT_THAT(text, HasSubstr("stacks.cc:"));
  EXPECT_THAT(text, HasSubstr(std::to_string(g_marker_tid.load())));
  EXPECT_EQ(stacks.front().tid, static_cast<pid_t>(::gettid()));  // the caller first

  // The read was restarted, not failed with EINTR.
  ASSERT_EQ(::write(w.get(), "x", 1), 1);
  t.join();
  EXPECT_EQ(result.load(), 'x');
}

TEST_F(StacksTest, AThreadWithTheSignalBlockedIsReportedWithoutAUserStack) {
  std::atomic<pid_t> tid{0};
  std::atomic<bool> stop{false};
  std::thread t([&] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    tid = static_cast<pid_t>(::gettid());
    while (!stop) usleep(1000);
  });
  while (tid == 0) std::this_thread::yield();
  auto stacks = CaptureThreadStacks();
  stop = true;
  t.join();
  const ThreadStack* ts = Find(stacks, tid);
  ASSERT_NE(ts, nullptr);
  EXPECT_FALSE(ts->answered);
  EXPECT_TRUE(ts->pcs.empty());
  EXPECT_THAT(FormatStacks(stacks, nullptr), HasSubstr("did not answer"));
  // Its late answer (when it unblocks at exit) must not land in a later dump.
  auto again = CaptureThreadStacks();
  EXPECT_EQ(Find(again, tid), nullptr);
}

TEST_F(StacksTest, SymbolizesInAChildProcess) {
  auto stacks = CaptureThreadStacks();
  ASSERT_FALSE(stacks.empty());
  std::string text = FormatStacks(stacks, [](const std::vector<uintptr_t>& pcs) {
    auto r = SymbolizeInChild({"/proc/self/exe", "--symbolize"}, pcs);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::vector<std::vector<Frame>>();
  });
  // The caller's own stack runs through this test body.
  EXPECT_THAT(text, HasSubstr("runhcs::CaptureThreadStacks()"));
  EXPECT_THAT(text, HasSubstr("stacks.cc:"));
  EXPECT_THAT(text, Not(HasSubstr("#0  0x0000000000000000")));
}

TEST_F(StacksTest, ChildSymbolizerThatIsNotThereIsAnError) {
  auto r = SymbolizeInChild({"/nonexistent/symbolizer"}, {0x10});
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace runhcs

// The test binary doubles as the symbolizer helper.
int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--symbolize") == 0) return runhcs::SymbolizeMain(0, 1);
  ::testing::InitGoogleMock(&argc, argv);
  return RUN_ALL_TESTS();
}
