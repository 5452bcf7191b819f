// OomWatcher: reports the kernel's OOM kills in watched memory cgroups, for
// TaskOOM events. One per process (Get()), one thread (started by the first
// Add), every cgroup waited on with one epoll.
//
// Contract:
//  - v1 (`unified` false): an eventfd registered through cgroup.event_control
//    for memory.oom_control; the kernel signals it on each OOM in the cgroup
//    (at times twice for one kill), and once more when the cgroup is
//    removed. Reported when memory.oom_control's oom_kill count grows.
//  - v2: inotify on memory.events; reported when its oom_kill count grows.
//  - on_oom runs on the watcher thread, or on the thread calling Drain, with
//    no lock of the watcher held; one OOM is reported once.
//  - Drain(id) handles what is pending for `id` now, synchronously: the exit
//    path calls it before publishing TaskExit, so TaskOOM comes first.
//  - Remove(id) stops watching and closes the fds; unknown ids are ignored.
//  - Stop() ends and joins the thread (the daemon's shutdown); nothing is
//    reported after it. Idempotent.
//  - Add of an id already watched replaces it. Add fails (with the errno
//    mapped to a code) when the cgroup's files are not there.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "base/fd.h"
#include "base/status.h"
#include "base/thread_annotations.h"

namespace runhcs::stats {

class OomWatcher {
 public:
  using Callback = std::function<void()>;

  static OomWatcher& Get();
  OomWatcher();
  ~OomWatcher();
  OomWatcher(const OomWatcher&) = delete;
  OomWatcher& operator=(const OomWatcher&) = delete;

  Status Add(const std::string& id, const std::string& memory_dir, bool unified, Callback on_oom);
  void Drain(const std::string& id);
  void Remove(const std::string& id);
  void Stop() EXCLUDES(mu_);

 private:
  struct Entry;
  void Loop();
  // Reads what the entry's fd holds; true when an OOM is to be reported.
  static bool Consume(Entry& e);
  void Handle(const std::shared_ptr<Entry>& e);

  UniqueFd epoll_;
  UniqueFd wake_;
  Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>> by_id_ GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<Entry>> by_key_ GUARDED_BY(mu_);
  uint64_t next_key_ GUARDED_BY(mu_) = 1;
  bool started_ GUARDED_BY(mu_) = false;
  std::thread thread_ GUARDED_BY(mu_);
};

}  // namespace runhcs::stats
