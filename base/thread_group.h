// ThreadGroup: the owner of every thread that is not a long-lived member of
// one object (the event loop, a client's reader, a server's acceptor).
//
// Contract:
//  - Spawn(name, fn) runs fn on a new thread the group owns, named `name`
//    (as `ps -L` shows it, first 15 bytes). It fails with ResourceExhausted
//    when no thread can be made; fn is then not run.
//  - A finished thread is joined by the group (on the next Spawn, or by
//    JoinAll; the process-wide group also joins at exit); nothing is
//    detached.
//  - JoinAll(deadline) joins every thread, waiting up to `deadline` for
//    those still running; it returns how many were still running (they are
//    named in the log). Threads spawned while it waits are joined too.
//  - live() counts threads started and not yet finished.
#pragma once

#include <chrono>
#include <functional>
#include <list>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/thread_annotations.h"

namespace runhcs {

class ThreadGroup {
 public:
  // The process-wide group.
  static ThreadGroup& Get();

  ThreadGroup() = default;
  ~ThreadGroup();
  ThreadGroup(const ThreadGroup&) = delete;
  ThreadGroup& operator=(const ThreadGroup&) = delete;

  Status Spawn(std::string name, std::function<void()> fn) EXCLUDES(mu_);
  size_t JoinAll(std::chrono::steady_clock::time_point deadline) EXCLUDES(mu_);
  size_t live() EXCLUDES(mu_);

 private:
  struct Member {
    std::string name;
    std::thread thread;
    bool done = false;
  };
  void ReapLocked(std::vector<std::thread>* out) REQUIRES(mu_);

  Mutex mu_;
  CondVar cv_;
  std::list<Member> members_ GUARDED_BY(mu_);
};

}  // namespace runhcs
