// PolledReaper: for a process without a SIGCHLD loop (tests, benchmarks):
// switches the Reaper to its reaping mode and calls ReapAll from a thread
// every `period` until destroyed.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

#include "base/reaper.h"

namespace runhcs {

class PolledReaper {
 public:
  explicit PolledReaper(std::chrono::milliseconds period = std::chrono::milliseconds(2)) {
    Reaper::Get().Enable();
    thread_ = std::thread([this, period] {
      while (running_) {
        Reaper::Get().ReapAll();
        std::this_thread::sleep_for(period);
      }
    });
  }
  ~PolledReaper() {
    running_ = false;
    thread_.join();
  }
  PolledReaper(const PolledReaper&) = delete;
  PolledReaper& operator=(const PolledReaper&) = delete;

 private:
  std::atomic<bool> running_{true};
  std::thread thread_;
};

}  // namespace runhcs
