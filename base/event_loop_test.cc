#include "base/event_loop.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>

#include <gtest/gtest.h>

#include "base/latch.h"
#include "base/thread_group.h"

namespace runhcs {
namespace {

using namespace std::chrono_literals;

struct Pipe {
  UniqueFd r, w;
  Pipe() {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    r.reset(p[0]);
    w.reset(p[1]);
  }
};

TEST(EventLoopTest, PostedWorkRunsInOrderOnTheLoop) {
  EventLoop loop;
  EXPECT_FALSE(loop.InLoop());
  Mutex mu;
  std::vector<int> seen;
  Latch done;
  std::atomic<bool> in_loop{true};
  for (int i = 0; i < 100; ++i) {
    loop.Post([&, i] {
      in_loop = in_loop && loop.InLoop();
      MutexLock l(&mu);
      seen.push_back(i);
    });
  }
  loop.Post([&] { done.Open(); });
  ASSERT_TRUE(done.Wait(std::chrono::steady_clock::now() + 5s));
  EXPECT_TRUE(in_loop);
  MutexLock l(&mu);
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], i);
}

TEST(EventLoopTest, WatchReportsReadableAndHangup) {
  EventLoop loop;
  Pipe p;
  std::atomic<size_t> bytes{0};
  Latch hup;
  EventLoop::Token tok = 0;
  auto t = loop.Watch(p.r.get(), EPOLLIN, [&](uint32_t ev) {
    char buf[4096];
    ssize_t n = ::read(p.r.get(), buf, sizeof buf);
    if (n > 0) bytes += static_cast<size_t>(n);
    if (n == 0 || (ev & EPOLLHUP && n <= 0)) {
      loop.Unwatch(tok);  // from the handler: at once
      hup.Open();
    }
  });
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  tok = *t;
  std::string chunk(1000, 'x');
  for (int i = 0; i < 10; ++i) ASSERT_EQ(::write(p.w.get(), chunk.data(), chunk.size()), 1000);
  p.w.reset();
  ASSERT_TRUE(hup.Wait(std::chrono::steady_clock::now() + 5s));
  EXPECT_EQ(bytes.load(), 10000u);
  EXPECT_EQ(loop.watches(), 0u);
}

TEST(EventLoopTest, UnwatchFromAnotherThreadWaitsForARunningHandler) {
  EventLoop loop;
  Pipe p;
  Latch entered;
  std::atomic<bool> finished{false};
  std::atomic<int> calls{0};
  auto t = loop.Watch(p.r.get(), EPOLLIN, [&](uint32_t) {
    ++calls;
    entered.Open();
    std::this_thread::sleep_for(100ms);
    finished = true;
  });
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(::write(p.w.get(), "x", 1), 1);
  ASSERT_TRUE(entered.Wait(std::chrono::steady_clock::now() + 5s));
  loop.Unwatch(*t);
  EXPECT_TRUE(finished) << "Unwatch returned while the handler ran";
  int after = calls;
  std::this_thread::sleep_for(50ms);  // still readable: a live watch would run again
  EXPECT_EQ(calls.load(), after);
  loop.Unwatch(*t);    // spent token: ignored
  loop.Unwatch(9999);  // unknown token: ignored
}

TEST(EventLoopTest, TimersFireAfterTheirDelayAndCancelledOnesNever) {
  EventLoop loop;
  auto start = std::chrono::steady_clock::now();
  Latch fired;
  std::atomic<bool> cancelled_ran{false};
  std::chrono::steady_clock::time_point at;
  auto c = loop.After(30ms, [&] { cancelled_ran = true; });
  loop.After(80ms, [&] {
    at = std::chrono::steady_clock::now();
    fired.Open();
  });
  loop.Cancel(c);
  ASSERT_TRUE(fired.Wait(start + 5s));
  EXPECT_GE(at - start, 80ms);
  EXPECT_FALSE(cancelled_ran);
}

TEST(EventLoopTest, StopJoinsAndRefusesMore) {
  EventLoop loop;
  Latch ran;
  loop.Post([&] { ran.Open(); });
  ASSERT_TRUE(ran.Wait(std::chrono::steady_clock::now() + 5s));
  EXPECT_TRUE(loop.running());
  loop.Stop();
  EXPECT_FALSE(loop.running());
  Pipe p;
  auto t = loop.Watch(p.r.get(), EPOLLIN, [](uint32_t) {});
  EXPECT_EQ(t.status().code(), Code::kFailedPrecondition);
  std::atomic<bool> late{false};
  loop.Post([&] { late = true; });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(late);
  loop.Stop();  // idempotent
}

TEST(EventLoopTest, WatchOfABadFdFails) {
  EventLoop loop;
  auto t = loop.Watch(-1, EPOLLIN, [](uint32_t) {});
  EXPECT_FALSE(t.ok());
  EXPECT_EQ(loop.watches(), 0u);
}

TEST(ThreadGroupTest, EveryThreadIsJoined) {
  ThreadGroup g;
  std::atomic<int> ran{0};
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(g.Spawn("worker", [&] { ++ran; }).ok());
  EXPECT_EQ(g.JoinAll(std::chrono::steady_clock::time_point::max()), 0u);
  EXPECT_EQ(ran.load(), 20);
  EXPECT_EQ(g.live(), 0u);
}

TEST(ThreadGroupTest, JoinAllWithADeadlineCountsThoseStillRunning) {
  ThreadGroup g;
  Latch release;
  ASSERT_TRUE(g.Spawn("stuck", [&] { release.Wait(); }).ok());
  ASSERT_TRUE(g.Spawn("quick", [] {}).ok());
  EXPECT_EQ(g.JoinAll(std::chrono::steady_clock::now() + 50ms), 1u);
  EXPECT_EQ(g.live(), 1u);
  release.Open();
  EXPECT_EQ(g.JoinAll(std::chrono::steady_clock::now() + 5s), 0u);
}

TEST(ThreadGroupTest, ThreadsSpawnedWhileJoiningAreJoinedToo) {
  ThreadGroup g;
  std::atomic<int> ran{0};
  ASSERT_TRUE(g.Spawn("parent", [&] {
                 std::this_thread::sleep_for(20ms);
                 ASSERT_TRUE(g.Spawn("child", [&] { ++ran; }).ok());
                 ++ran;
               }).ok());
  EXPECT_EQ(g.JoinAll(std::chrono::steady_clock::time_point::max()), 0u);
  EXPECT_EQ(ran.load(), 2);
}

}  // namespace
}  // namespace runhcs
