// Reaper: the one place this process waits for children.
//
// The shim daemon is a subreaper: container processes are reparented to it
// when the OCI runtime exits. Every exit therefore arrives through one
// waitpid(-1) loop (ReapAll, run on SIGCHLD by the daemon's main loop) and is
// dispatched by pid:
//   - a process started with Spawn() wakes its Wait();
//   - a pid given to Watch() gets its callback on the EventLoop (so the
//     callback must not block);
//   - an exit nobody claimed yet is kept while an Expectation is held (and
//     at most kUnclaimedTtl), so a Watch() that comes after the exit (an exec
//     that ended before its pid file was read) still sees it. With no
//     Expectation held it is dropped at once: it belongs to a reparented
//     grandchild nobody will ask about, and keeping it would grow memory
//     with every exec.
// Before Enable() (unit tests, the `start`/`delete` actions) there is no
// SIGCHLD loop, and Wait() calls waitpid on its pid directly.
//
// Exit statuses are encoded as containerd expects: the exit code, or
// 128 + signal number for a process killed by a signal.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/thread_annotations.h"

namespace runhcs {

struct SpawnOptions {
  std::vector<std::string> argv;                // argv[0] is looked up in PATH
  std::vector<std::pair<int, int>> fds;         // {child fd, parent fd}; others close
  std::string cwd;                              // "" = inherit
  std::optional<std::vector<std::string>> env;  // nullopt = inherit
  bool new_session = false;
  // With new_session: make the terminal on fd 0 the controlling terminal.
  bool controlling_tty = false;
  // SIGKILL the child when the thread that spawned it ends (the kernel's
  // parent-death signal follows the forking thread, not the process): spawn
  // from a thread that lives as long as the child (SpawnTied).
  bool die_with_parent = false;
  // Exec the child without address-space randomization (personality
  // ADDR_NO_RANDOMIZE, inherited by what it execs in turn). Under TCG,
  // QEMU finds translated code by guest virtual address: a binary whose
  // libraries land somewhere new on every run is translated anew each
  // time (crun: 190 ms per call in a guest, 80 ms with this).
  bool fixed_address_layout = false;
};

class Reaper {
 public:
  static Reaper& Get();

  // Held from before a child that will be Watch()ed is started (by the OCI
  // runtime) until its Watch() is in place. Move-only.
  class Expectation {
   public:
    Expectation() = default;
    explicit Expectation(Reaper* r) : r_(r) {}
    Expectation(Expectation&& o) noexcept : r_(std::exchange(o.r_, nullptr)) {}
    Expectation& operator=(Expectation&& o) noexcept {
      Release();
      r_ = std::exchange(o.r_, nullptr);
      return *this;
    }
    ~Expectation() { Release(); }
    void Release();

   private:
    Reaper* r_ = nullptr;
  };
  Expectation Expect();
  size_t unclaimed_for_test();

  // Switches to the SIGCHLD-driven mode; the caller then calls ReapAll on
  // every SIGCHLD.
  void Enable();
  void ReapAll();

  // Starts a child. NotFound if argv[0] does not exist or cannot be run.
  StatusOr<pid_t> Spawn(const SpawnOptions& opts);
  // Spawn with die_with_parent, from a thread of its own that then waits for
  // the child and calls `on_exit` with its status: the child dies with this
  // process, however it dies. The caller gets the pid (or the spawn error).
  StatusOr<pid_t> SpawnTied(SpawnOptions opts, std::function<void(StatusOr<int>)> on_exit);
  // Waits for a child started by Spawn; returns its exit status.
  // DeadlineExceeded if `deadline` passes first (the child keeps running).
  StatusOr<int> Wait(pid_t pid,
                     std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt);
  // Calls `on_exit(status)` on a new thread when `pid` exits (at once if it
  // already has). For processes we did not Spawn (reparented to us).
  void Watch(pid_t pid, std::function<void(int)> on_exit);
  // For a child started by Spawn, instead of Wait: `on_exit(status)` runs
  // on the EventLoop when it exits (at once if it has); nullptr: collected
  // and forgotten (a binary logger at its end). Without the SIGCHLD loop
  // (Enable) a thread of the ThreadGroup waits for it instead.
  void WhenExits(pid_t pid, std::function<void(int)> on_exit);
  void Disown(pid_t pid) { WhenExits(pid, nullptr); }
  // Forgets a Watch (e.g. the exec was force-exited and no longer cares).
  void Unwatch(pid_t pid);

  static int ExitStatus(int wait_status);

 private:
  struct Unclaimed {
    int status;
    std::chrono::steady_clock::time_point at;
  };
  void DispatchLocked(pid_t pid, int status) REQUIRES(mu_);

  Mutex mu_;
  CondVar cv_;
  bool enabled_ GUARDED_BY(mu_) = false;
  std::map<pid_t, std::optional<int>> spawned_ GUARDED_BY(mu_);  // pid -> status once exited
  std::map<pid_t, std::function<void(int)>> watched_ GUARDED_BY(mu_);
  std::map<pid_t, Unclaimed> unclaimed_ GUARDED_BY(mu_);
  int expecting_ GUARDED_BY(mu_) = 0;  // live Expectations
};

}  // namespace runhcs
