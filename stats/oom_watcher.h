// OomWatcher: reports the kernel's OOM kills in watched memory cgroups, for
// TaskOOM events. One per process (Get()), every cgroup watched on the
// EventLoop: no thread of its own.
//
// Contract:
//  - v1 (`unified` false): an eventfd registered through cgroup.event_control
//    for memory.oom_control; the kernel signals it when an OOM starts in the
//    cgroup (at times twice for one kill, and before the kill is counted),
//    and once more when the cgroup is removed. Reported when
//    memory.oom_control's oom_kill count grows; a signal that comes before
//    its kill is counted is checked again (10 ms apart, 10 times).
//  - v2: inotify on memory.events; reported when its oom_kill count grows.
//  - on_oom runs on the event loop (it must not block), or on the thread
//    calling Drain, with no lock of the watcher held; one OOM is reported
//    once.
//  - Drain(id) handles what is pending for `id` now, synchronously (waiting
//    up to 100 ms for a v1 kill that was signalled and not yet counted):
//    the exit path calls it before publishing TaskExit, so TaskOOM comes
//    first.
//  - Remove(id) stops watching and closes the fds; nothing of `id` is
//    reported after it returns; unknown ids are ignored.
//  - Stop() removes every id (the daemon's shutdown). Idempotent.
//  - Add of an id already watched replaces it. Add fails (with the errno
//    mapped to a code) when the cgroup's files are not there.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/event_loop.h"
#include "base/fd.h"
#include "base/status.h"
#include "base/thread_annotations.h"

namespace runhcs::stats {

class OomWatcher {
 public:
  using Callback = std::function<void()>;

  static OomWatcher& Get();
  explicit OomWatcher(EventLoop* loop = &EventLoop::Get()) : loop_(loop) {}
  ~OomWatcher() { Stop(); }
  OomWatcher(const OomWatcher&) = delete;
  OomWatcher& operator=(const OomWatcher&) = delete;

  Status Add(const std::string& id, const std::string& memory_dir, bool unified, Callback on_oom)
      EXCLUDES(mu_);
  void Drain(const std::string& id) EXCLUDES(mu_);
  void Remove(const std::string& id) EXCLUDES(mu_);
  void Stop() EXCLUDES(mu_);

 private:
  struct Entry;
  // Reads what the entry's fd holds and compares the kill count; true when
  // an OOM is to be reported. `wait`: give a signalled v1 kill time to be
  // counted, here; else `*recheck` says to look again later.
  static bool Consume(Entry& e, bool wait, bool* recheck);
  // The count alone (a recheck); true when it grew.
  static bool Recheck(Entry& e);
  static void Report(Entry& e);
  void OnReady(const std::shared_ptr<Entry>& e);
  void ScheduleRecheck(const std::shared_ptr<Entry>& e, int left);
  void Forget(const std::shared_ptr<Entry>& e);

  EventLoop* const loop_;
  Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> by_id_ GUARDED_BY(mu_);
};

}  // namespace runhcs::stats
