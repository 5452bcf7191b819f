// EventLoop: one epoll loop on one thread, for work that waits on file
// descriptors or time and must not hold a thread while it waits: stdio
// copies, exit dispatch, timers.
//
// Contract:
//  - Handlers (fd watches, posted tasks, timers) run on the loop's thread,
//    one at a time, with no lock of the loop held. They MUST NOT block: no
//    waiting for a child, a lock held across I/O, or a blocking call that
//    needs the loop to make progress (that would deadlock).
//  - Watch() is level-triggered. A watch reports EPOLLHUP/EPOLLERR whatever
//    `events` says; a handler that cannot act on them must Unwatch.
//  - Unwatch(t): once it returns, the handler of `t` is not running and will
//    not run again (from another thread it waits for a running handler to
//    finish; from the loop it takes effect at once). Unwatch before closing
//    the fd. Unknown or spent tokens are ignored.
//  - Post(fn) runs fn on the loop, in Post order. After(d, fn) runs fn once
//    `d` has passed; Cancel(t) before then means it never runs.
//  - The loop's thread starts with the first Watch/Post/After and is joined
//    by Stop(). After Stop nothing more runs: Post/After drop their work,
//    Watch fails with FailedPrecondition.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "base/thread_annotations.h"

namespace runhcs {

class EventLoop {
 public:
  using Token = uint64_t;  // never 0
  using FdHandler = std::function<void(uint32_t events)>;

  // The process-wide loop.
  static EventLoop& Get();

  EventLoop() = default;
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  StatusOr<Token> Watch(int fd, uint32_t events, FdHandler fn) EXCLUDES(mu_);
  void Unwatch(Token t) EXCLUDES(mu_);
  // False when the loop is stopped (or cannot start): fn was dropped.
  bool Post(std::function<void()> fn) EXCLUDES(mu_);
  Token After(std::chrono::nanoseconds delay, std::function<void()> fn) EXCLUDES(mu_);
  void Cancel(Token t) EXCLUDES(mu_);

  // True on the loop's thread.
  bool InLoop() const;
  // Drops every watch and pending task, then joins the thread. Idempotent.
  // Not from the loop itself.
  void Stop() EXCLUDES(mu_);

  size_t watches() EXCLUDES(mu_);
  bool running() EXCLUDES(mu_);

 private:
  struct Entry {
    int fd;
    FdHandler fn;
  };
  Status StartLocked() REQUIRES(mu_);
  void Wake();
  void Run();
  // Runs due timers and posted tasks; returns the epoll timeout (ms).
  int RunReady() EXCLUDES(mu_);

  UniqueFd epfd_, wakefd_;
  Mutex mu_;
  CondVar cv_;
  bool stopped_ GUARDED_BY(mu_) = false;
  Token next_ GUARDED_BY(mu_) = 1;
  std::map<Token, std::shared_ptr<Entry>> watches_ GUARDED_BY(mu_);
  Token running_ GUARDED_BY(mu_) = 0;  // the watch whose handler is running
  std::vector<std::function<void()>> posted_ GUARDED_BY(mu_);
  std::multimap<std::chrono::steady_clock::time_point, Token> timer_at_ GUARDED_BY(mu_);
  std::map<Token, std::function<void()>> timers_ GUARDED_BY(mu_);
  std::thread thread_ GUARDED_BY(mu_);  // started once, joined by Stop
  std::atomic<std::thread::id> loop_id_{};
};

}  // namespace runhcs
