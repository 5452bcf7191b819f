// FakeProcess: a scriptable Process for unit tests (test-only target).
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <vector>

#include "base/thread_annotations.h"
#include "base/thread_group.h"
#include "exec/process.h"

namespace runhcs::exec {

class FakeProcess : public Process {
 public:
  // Counters and knobs live in a shared block so tests keep access after
  // the exec takes ownership of the process.
  struct Shared {
    Mutex mu;
    ExitCallback on_exit GUARDED_BY(mu);
    std::vector<uint32_t> signals GUARDED_BY(mu);
    std::vector<std::pair<uint32_t, uint32_t>> resizes GUARDED_BY(mu);
    int close_stdin_calls GUARDED_BY(mu) = 0;
    int terminate_calls GUARDED_BY(mu) = 0;
    int release_io_calls GUARDED_BY(mu) = 0;
    std::optional<Status> start_error GUARDED_BY(mu);
    // Runs inside Start after the process "exists" (to race an exit).
    std::function<void(const ExitCallback&)> during_start GUARDED_BY(mu);
    // If set, Signal() makes the process exit with this status.
    std::optional<uint32_t> exit_on_signal GUARDED_BY(mu);
    bool gone GUARDED_BY(mu) = false;
    // If set, ReleaseIo keeps `done` in `held_release` (output a client has
    // not read yet) until the test calls ReleaseHeldIo.
    bool hold_release_io GUARDED_BY(mu) = false;
    std::function<void()> held_release GUARDED_BY(mu);
    uint32_t pid = 4242;
  };

  explicit FakeProcess(std::shared_ptr<Shared> s) : s_(std::move(s)) {}

  StatusOr<uint32_t> Start(ExitCallback on_exit) override {
    std::function<void(const ExitCallback&)> during;
    {
      MutexLock l(&s_->mu);
      if (s_->start_error) return *s_->start_error;
      s_->on_exit = on_exit;
      during = s_->during_start;
    }
    if (during) during(on_exit);
    return s_->pid;
  }
  Status Signal(uint32_t sig) override {
    ExitCallback cb;
    std::optional<uint32_t> exit_status;
    {
      MutexLock l(&s_->mu);
      if (s_->gone) return NotFoundError("process gone");
      s_->signals.push_back(sig);
      exit_status = s_->exit_on_signal;
      if (exit_status) {
        s_->gone = true;
        cb = s_->on_exit;
      }
    }
    // Exits are reported from another thread, as real backends do.
    if (cb) (void)ThreadGroup::Get().Spawn("fake-exit", [cb, exit_status] { cb(*exit_status); });
    return OkStatus();
  }
  Status ResizePty(uint32_t w, uint32_t h) override {
    MutexLock l(&s_->mu);
    s_->resizes.emplace_back(w, h);
    return OkStatus();
  }
  void CloseStdin() override {
    MutexLock l(&s_->mu);
    ++s_->close_stdin_calls;
  }
  void Terminate() override {
    MutexLock l(&s_->mu);
    ++s_->terminate_calls;
    s_->gone = true;
  }
  void ReleaseIo(std::function<void()> done) override {
    {
      MutexLock l(&s_->mu);
      ++s_->release_io_calls;
      if (s_->hold_release_io) {
        s_->held_release = std::move(done);
        return;
      }
    }
    done();
  }

  // Test helper: the held ReleaseIo finishes (its output was read). False
  // if none is held.
  static bool ReleaseHeldIo(const std::shared_ptr<Shared>& s) {
    std::function<void()> done;
    {
      MutexLock l(&s->mu);
      s->hold_release_io = false;
      done = std::move(s->held_release);
      s->held_release = nullptr;
    }
    if (!done) return false;
    done();
    return true;
  }

  // Test helper: the process exits on its own with `status`.
  static void Exit(const std::shared_ptr<Shared>& s, uint32_t status) {
    ExitCallback cb;
    {
      MutexLock l(&s->mu);
      s->gone = true;
      cb = s->on_exit;
    }
    if (cb) cb(status);
  }

 private:
  std::shared_ptr<Shared> s_;
};

}  // namespace runhcs::exec
