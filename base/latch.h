// Latch: a one-way "done" flag that threads can wait on, with an optional
// deadline, or register a waiter to run when it opens. Used for "the task
// has closed" and "the exec has exited".
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>
#include <vector>

#include "base/thread_annotations.h"

namespace runhcs {

class Latch {
 public:
  // Runs once the latch opens. `wanted`, if set, is asked while waiters pile
  // up; one that answers false (its caller went away) is dropped unrun, so
  // abandoned waiters cannot grow without bound.
  struct Waiter {
    std::function<void()> run;
    std::function<bool()> wanted;
  };

  // Opens the latch, wakes Wait() and runs every waiter on this thread, in
  // the order they came, with no lock held. Idempotent.
  void Open() {
    std::vector<Waiter> run;
    {
      MutexLock l(&mu_);
      if (open_) return;
      open_ = true;
      cv_.SignalAll();
      run.swap(waiters_);
    }
    for (auto& w : run) w.run();
  }
  // True once open; false if `deadline` passed first.
  bool Wait(std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) {
    MutexLock l(&mu_);
    while (!open_) {
      if (!deadline) {
        cv_.Wait(&mu_);
      } else if (!cv_.WaitUntil(&mu_, *deadline)) {
        return open_;
      }
    }
    return true;
  }
  // Runs `w` when the latch opens: at once, on this thread, if it is open.
  void Notify(Waiter w) {
    {
      MutexLock l(&mu_);
      if (!open_) {
        if (waiters_.size() >= prune_at_) {
          std::erase_if(waiters_, [](const Waiter& x) { return x.wanted && !x.wanted(); });
          prune_at_ = std::max<size_t>(kMinPrune, 2 * waiters_.size());
        }
        waiters_.push_back(std::move(w));
        return;
      }
    }
    w.run();
  }
  size_t waiters_for_test() {
    MutexLock l(&mu_);
    return waiters_.size();
  }

 private:
  static constexpr size_t kMinPrune = 16;
  Mutex mu_;
  CondVar cv_;
  bool open_ GUARDED_BY(mu_) = false;
  std::vector<Waiter> waiters_ GUARDED_BY(mu_);
  size_t prune_at_ GUARDED_BY(mu_) = kMinPrune;
};

}  // namespace runhcs
