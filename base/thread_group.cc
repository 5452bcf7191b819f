#include "base/thread_group.h"

#include <pthread.h>

#include <cstdlib>
#include <system_error>

#include "base/log.h"

namespace runhcs {

ThreadGroup& ThreadGroup::Get() {
  // Never destroyed; its threads are joined at shutdown (the daemon's
  // JoinAll), and at exit, briefly, whatever is left (finished threads not
  // yet joined; any still running get a moment to finish).
  static ThreadGroup* g = [] {
    auto* group = new ThreadGroup();
    std::atexit([] { Get().JoinAll(std::chrono::steady_clock::now() + std::chrono::seconds(2)); });
    return group;
  }();
  return *g;
}

ThreadGroup::~ThreadGroup() { JoinAll(std::chrono::steady_clock::time_point::max()); }

void ThreadGroup::ReapLocked(std::vector<std::thread>* out) {
  for (auto it = members_.begin(); it != members_.end();) {
    if (it->done && it->thread.joinable()) {
      out->push_back(std::move(it->thread));
      it = members_.erase(it);
    } else {
      ++it;
    }
  }
}

Status ThreadGroup::Spawn(std::string name, std::function<void()> fn) {
  std::vector<std::thread> finished;
  Status st = OkStatus();
  {
    MutexLock l(&mu_);
    ReapLocked(&finished);
    members_.push_back(Member{std::move(name), std::thread(), false});
    auto self = std::prev(members_.end());
    try {
      // The member's fields other than `done` are written only here, under
      // mu_, before the thread can look at them.
      self->thread = std::thread([this, self, fn = std::move(fn)] {
        {
          MutexLock l(&mu_);
          ::pthread_setname_np(::pthread_self(), self->name.substr(0, 15).c_str());
        }
        fn();
        MutexLock l(&mu_);
        self->done = true;
        cv_.SignalAll();
      });
    } catch (const std::system_error& e) {
      st = ResourceExhaustedError("thread {}: {}", self->name, e.what());
      members_.erase(self);
    }
  }
  for (auto& t : finished) t.join();
  return st;
}

size_t ThreadGroup::JoinAll(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    std::vector<std::thread> finished;
    {
      MutexLock l(&mu_);
      ReapLocked(&finished);
      if (finished.empty()) {
        if (members_.empty()) return 0;
        if (deadline == std::chrono::steady_clock::time_point::max()) {
          cv_.Wait(&mu_);
        } else if (!cv_.WaitUntil(&mu_, deadline)) {
          for (auto& m : members_) spdlog::warn("thread {} still running", m.name);
          return members_.size();
        }
        continue;
      }
    }
    for (auto& t : finished) t.join();
  }
}

size_t ThreadGroup::live() {
  MutexLock l(&mu_);
  size_t n = 0;
  for (auto& m : members_) n += m.done ? 0 : 1;
  return n;
}

}  // namespace runhcs
