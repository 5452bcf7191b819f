// Latch: a one-way "done" flag that threads can wait on, with an optional
// deadline. Used for "the task has closed" in every Task implementation.
#pragma once

#include <chrono>
#include <optional>

#include "base/thread_annotations.h"

namespace runhcs {

class Latch {
 public:
  void Open() {
    MutexLock l(&mu_);
    open_ = true;
    cv_.SignalAll();
  }
  bool IsOpen() {
    MutexLock l(&mu_);
    return open_;
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

 private:
  Mutex mu_;
  CondVar cv_;
  bool open_ GUARDED_BY(mu_) = false;
};

}  // namespace runhcs
