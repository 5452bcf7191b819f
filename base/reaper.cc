#include "base/reaper.h"

#include <sys/personality.h>
#include <sys/prctl.h>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "base/event_loop.h"
#include "base/log.h"
#include "base/thread_group.h"

extern char** environ;

namespace runhcs {

namespace {
// Unclaimed exits older than this are dropped (they belong to processes
// nobody will ask about, e.g. a container's orphaned grandchildren).
constexpr auto kUnclaimedTtl = std::chrono::seconds(60);
}  // namespace

Reaper& Reaper::Get() {
  static Reaper* r = new Reaper();  // never destroyed: threads may outlive main
  return *r;
}

int Reaper::ExitStatus(int ws) {
  if (WIFEXITED(ws)) return WEXITSTATUS(ws);
  if (WIFSIGNALED(ws)) return 128 + WTERMSIG(ws);
  return 255;
}

void Reaper::Enable() {
  MutexLock l(&mu_);
  enabled_ = true;
}

void Reaper::ReapAll() {
  for (;;) {
    int ws = 0;
    pid_t pid = ::waitpid(-1, &ws, WNOHANG);
    if (pid <= 0) return;
    MutexLock l(&mu_);
    DispatchLocked(pid, ExitStatus(ws));
  }
}

void Reaper::DispatchLocked(pid_t pid, int status) {
  if (auto it = spawned_.find(pid); it != spawned_.end()) {
    it->second = status;
    cv_.SignalAll();
    return;
  }
  if (auto it = watched_.find(pid); it != watched_.end()) {
    auto cb = std::move(it->second);
    watched_.erase(it);
    if (cb) EventLoop::Get().Post([cb = std::move(cb), status] { cb(status); });
    return;
  }
  if (expecting_ == 0) return;
  auto now = std::chrono::steady_clock::now();
  for (auto it = unclaimed_.begin(); it != unclaimed_.end();) {
    it = now - it->second.at > kUnclaimedTtl ? unclaimed_.erase(it) : std::next(it);
  }
  unclaimed_[pid] = {status, now};
}

Reaper::Expectation Reaper::Expect() {
  MutexLock l(&mu_);
  ++expecting_;
  return Expectation(this);
}

void Reaper::Expectation::Release() {
  if (!r_) return;
  MutexLock l(&r_->mu_);
  if (--r_->expecting_ == 0) r_->unclaimed_.clear();
  r_ = nullptr;
}

size_t Reaper::unclaimed_for_test() {
  MutexLock l(&mu_);
  return unclaimed_.size();
}

StatusOr<pid_t> Reaper::Spawn(const SpawnOptions& opts) {
  if (opts.argv.empty()) return InvalidArgumentError("spawn: empty argv");
  std::vector<char*> argv;
  for (const auto& a : opts.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_store;
  std::vector<char*> envp;
  if (opts.env) {
    env_store = *opts.env;
    for (auto& e : env_store) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
  std::vector<int> tmp(opts.fds.size());  // allocated before fork: no malloc in the child
  int status_pipe[2];
  if (::pipe2(status_pipe, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  const pid_t parent = ::getpid();
  // Registered under the lock before the child can be reaped; the lock is
  // not held across the exec handshake, so spawns run side by side.
  mu_.Lock();
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    mu_.Unlock();
    ::close(status_pipe[0]);
    ::close(status_pipe[1]);
    return ErrnoError(err, "fork");
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls from here on.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    if (opts.die_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    }
    if (opts.new_session) ::setsid();
    if (opts.fixed_address_layout) {
      int persona = ::personality(0xffffffff);
      if (persona != -1) ::personality(static_cast<unsigned long>(persona) | ADDR_NO_RANDOMIZE);
    }
    // Move sources out of the way of targets first, then place them.
    for (size_t i = 0; i < opts.fds.size(); ++i) {
      tmp[i] = ::fcntl(opts.fds[i].second, F_DUPFD_CLOEXEC, 64);
    }
    for (size_t i = 0; i < opts.fds.size(); ++i) ::dup2(tmp[i], opts.fds[i].first);
    if (opts.new_session && opts.controlling_tty) ::ioctl(0, TIOCSCTTY, 0);
    if (!opts.cwd.empty() && ::chdir(opts.cwd.c_str()) != 0) {
      int err = errno;
      (void)!::write(status_pipe[1], &err, sizeof err);
      ::_exit(127);
    }
    if (opts.env) {
      ::execvpe(argv[0], argv.data(), envp.data());
    } else {
      ::execvp(argv[0], argv.data());
    }
    int err = errno;
    (void)!::write(status_pipe[1], &err, sizeof err);
    ::_exit(127);
  }
  spawned_[pid] = std::nullopt;
  mu_.Unlock();
  ::close(status_pipe[1]);
  int child_err = 0;
  ssize_t n;
  do {
    n = ::read(status_pipe[0], &child_err, sizeof child_err);
  } while (n < 0 && errno == EINTR);
  ::close(status_pipe[0]);
  if (n > 0) {
    // It never ran: collect it here.
    MutexLock l(&mu_);
    if (!enabled_) ::waitpid(pid, nullptr, 0);
    spawned_.erase(pid);
    Status st = ErrnoError(child_err, fmt::format("exec {}", opts.argv[0]));
    return child_err == ENOENT ? NotFoundError("{}", st.message()) : st;
  }
  return pid;
}

StatusOr<pid_t> Reaper::SpawnTied(SpawnOptions opts, std::function<void(StatusOr<int>)> on_exit) {
  opts.die_with_parent = true;
  struct Handoff {
    Mutex mu;
    CondVar cv;
    std::optional<StatusOr<pid_t>> pid GUARDED_BY(mu);
  };
  auto h = std::make_shared<Handoff>();
  Status started =
      ThreadGroup::Get().Spawn("tied-" + opts.argv[0].substr(opts.argv[0].rfind('/') + 1),
                               [this, h, opts = opts, on_exit = std::move(on_exit)] {
                                 StatusOr<pid_t> pid = Spawn(opts);
                                 {
                                   MutexLock l(&h->mu);
                                   h->pid = pid;
                                   h->cv.SignalAll();
                                 }
                                 if (!pid.ok()) return;
                                 StatusOr<int> st = Wait(*pid);
                                 if (on_exit) on_exit(st);
                               });
  if (!started.ok()) return started;
  MutexLock l(&h->mu);
  while (!h->pid) h->cv.Wait(&h->mu);
  return *h->pid;
}

StatusOr<int> Reaper::Wait(pid_t pid,
                           std::optional<std::chrono::steady_clock::time_point> deadline) {
  MutexLock l(&mu_);
  auto it = spawned_.find(pid);
  if (it == spawned_.end()) return NotFoundError("pid {} was not spawned by the reaper", pid);
  if (!enabled_) {
    // No SIGCHLD loop: wait on the pid itself.
    mu_.Unlock();
    int ws = 0;
    pid_t r;
    if (deadline) {
      while ((r = ::waitpid(pid, &ws, WNOHANG)) == 0 &&
             std::chrono::steady_clock::now() < *deadline) {
        ::usleep(1000);
      }
    } else {
      do {
        r = ::waitpid(pid, &ws, 0);
      } while (r < 0 && errno == EINTR);
    }
    mu_.Lock();
    if (r == 0) return DeadlineExceededError("pid {} still running", pid);
    spawned_.erase(pid);
    if (r < 0) return ErrnoError(errno, fmt::format("waitpid {}", pid));
    return ExitStatus(ws);
  }
  while (!spawned_[pid].has_value()) {
    if (deadline) {
      if (!cv_.WaitUntil(&mu_, *deadline) && !spawned_[pid].has_value()) {
        return DeadlineExceededError("pid {} still running", pid);
      }
    } else {
      cv_.Wait(&mu_);
    }
  }
  int status = *spawned_[pid];
  spawned_.erase(pid);
  return status;
}

void Reaper::Watch(pid_t pid, std::function<void(int)> on_exit) {
  MutexLock l(&mu_);
  if (auto it = unclaimed_.find(pid); it != unclaimed_.end()) {
    int status = it->second.status;
    unclaimed_.erase(it);
    EventLoop::Get().Post([cb = std::move(on_exit), status] { cb(status); });
    return;
  }
  watched_[pid] = std::move(on_exit);
}

void Reaper::WhenExits(pid_t pid, std::function<void(int)> on_exit) {
  {
    MutexLock l(&mu_);
    auto it = spawned_.find(pid);
    if (it == spawned_.end()) return;
    if (it->second.has_value()) {
      int status = *it->second;
      spawned_.erase(it);
      if (on_exit) EventLoop::Get().Post([cb = std::move(on_exit), status] { cb(status); });
      return;
    }
    if (enabled_) {
      spawned_.erase(it);
      watched_[pid] = std::move(on_exit);
      return;
    }
  }
  Status st = ThreadGroup::Get().Spawn("wait-" + std::to_string(pid), [this, pid, on_exit] {
    StatusOr<int> st = Wait(pid);
    if (on_exit) on_exit(st.ok() ? *st : 255);
  });
  if (!st.ok()) spdlog::error("reaper: {}; pid {} is not waited for", st.ToString(), pid);
}

void Reaper::Unwatch(pid_t pid) {
  MutexLock l(&mu_);
  watched_.erase(pid);
}

}  // namespace runhcs
