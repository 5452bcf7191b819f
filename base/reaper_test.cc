#include "base/reaper.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <future>
#include <string>
#include <thread>

namespace runhcs {
namespace {

// A child this test forks itself (as the OCI runtime's children are: not
// Spawn()ed), exiting with `code`; reaped by ReapAll.
pid_t ForkExiting(int code) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(code);
  // Let it become a zombie before ReapAll looks.
  siginfo_t si;
  ::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOWAIT);
  return pid;
}

class ReaperTest : public ::testing::Test {
 protected:
  void SetUp() override { Reaper::Get().Enable(); }
};

TEST_F(ReaperTest, UnclaimedExitIsDroppedWithoutAnExpectation) {
  ForkExiting(3);
  Reaper::Get().ReapAll();
  EXPECT_EQ(Reaper::Get().unclaimed_for_test(), 0u);
}

TEST_F(ReaperTest, UnclaimedExitIsKeptForALateWatchWhileExpected) {
  auto expect = Reaper::Get().Expect();
  pid_t pid = ForkExiting(7);
  Reaper::Get().ReapAll();
  EXPECT_EQ(Reaper::Get().unclaimed_for_test(), 1u);
  std::promise<int> got;
  Reaper::Get().Watch(pid, [&](int status) { got.set_value(status); });
  EXPECT_EQ(got.get_future().get(), 7);
  EXPECT_EQ(Reaper::Get().unclaimed_for_test(), 0u);
}

TEST_F(ReaperTest, LastExpectationReleasedForgetsUnclaimedExits) {
  auto a = Reaper::Get().Expect();
  auto b = Reaper::Get().Expect();
  ForkExiting(1);
  ForkExiting(2);
  Reaper::Get().ReapAll();
  EXPECT_EQ(Reaper::Get().unclaimed_for_test(), 2u);
  a.Release();
  EXPECT_EQ(Reaper::Get().unclaimed_for_test(), 2u);  // b still expects
  Reaper::Expectation moved = std::move(b);
  b.Release();  // moved-from: no effect
  EXPECT_EQ(Reaper::Get().unclaimed_for_test(), 2u);
  moved.Release();
  EXPECT_EQ(Reaper::Get().unclaimed_for_test(), 0u);
}

TEST_F(ReaperTest, WatchBeforeExitGetsSignalStatus) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::pause();
    ::_exit(0);
  }
  std::promise<int> got;
  Reaper::Get().Watch(pid, [&](int status) { got.set_value(status); });
  ::kill(pid, SIGKILL);
  siginfo_t si;
  ::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOWAIT);
  Reaper::Get().ReapAll();
  EXPECT_EQ(got.get_future().get(), 128 + SIGKILL);
}

TEST_F(ReaperTest, SpawnedChildIsWaitedAndMissingBinaryIsNotFound) {
  std::thread reaper([] {
    for (int i = 0; i < 200; ++i) {
      Reaper::Get().ReapAll();
      ::usleep(5000);
    }
  });
  auto pid = Reaper::Get().Spawn({.argv = {"/bin/sh", "-c", "exit 5"}});
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  auto st = Reaper::Get().Wait(*pid);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, 5);
  EXPECT_EQ(Reaper::Get().Spawn({.argv = {"/nonexistent/binary"}}).status().code(),
            Code::kNotFound);
  reaper.join();
}

// What a child reports in /proc/self/personality (hex), spawned with or
// without a fixed address layout; inherited by what it execs.
std::string PersonalityOfChild(bool fixed) {
  std::string out = ::testing::TempDir() + "/personality-" + std::to_string(::getpid());
  auto pid = Reaper::Get().Spawn({.argv = {"/bin/sh", "-c", "cat /proc/self/personality > " + out},
                                  .fixed_address_layout = fixed});
  EXPECT_TRUE(pid.ok()) << pid.status().ToString();
  if (!pid.ok()) return "";
  auto st = Reaper::Get().Wait(*pid);
  EXPECT_TRUE(st.ok() && *st == 0);
  std::ifstream in(out);
  std::string text;
  std::getline(in, text);
  std::remove(out.c_str());
  return text;
}

TEST_F(ReaperTest, FixedAddressLayoutTurnsRandomizationOffForTheChildOnly) {
  std::thread reaper([] {
    for (int i = 0; i < 200; ++i) {
      Reaper::Get().ReapAll();
      ::usleep(5000);
    }
  });
  EXPECT_EQ(PersonalityOfChild(true), "00040000");  // ADDR_NO_RANDOMIZE
  EXPECT_EQ(PersonalityOfChild(false), "00000000");
  reaper.join();
}

}  // namespace
}  // namespace runhcs
