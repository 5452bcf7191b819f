#include "stats/oom_watcher.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include <fmt/format.h>

#include "base/io.h"
#include "base/latch.h"
#include "base/log.h"

namespace runhcs::stats {

struct OomWatcher::Entry {
  std::string id;
  std::string dir;
  bool unified = false;
  UniqueFd fd;       // v1: the eventfd; v2: the inotify fd
  UniqueFd control;  // v1: memory.oom_control, held open while registered
  Callback on_oom;
  EventLoop::Token tok = 0;  // set on the loop, before its handler can run
  Mutex mu;                  // the count, against a Drain beside the loop
  uint64_t oom_kills GUARDED_BY(mu) = 0;
  bool removed GUARDED_BY(mu) = false;
};

namespace {

// The cgroup's count of OOM kills: v2's memory.events, v1's
// memory.oom_control (kernels since 4.13). A v1 eventfd fires per OOM
// invocation, which may be several for one kill; the count is the truth.
uint64_t OomKills(const std::string& dir, bool unified) {
  auto t = ReadFile(dir + (unified ? "/memory.events" : "/memory.oom_control"));
  if (!t.ok()) return 0;
  std::istringstream in(*t);
  std::string k;
  uint64_t v;
  while (in >> k >> v) {
    if (k == "oom_kill") return v;
  }
  return 0;
}

}  // namespace

OomWatcher& OomWatcher::Get() {
  static OomWatcher* w = new OomWatcher();  // lives as long as the process
  return *w;
}

Status OomWatcher::Add(const std::string& id, const std::string& memory_dir, bool unified,
                       Callback on_oom) {
  auto e = std::make_shared<Entry>();
  e->id = id;
  e->dir = memory_dir;
  e->unified = unified;
  e->on_oom = std::move(on_oom);
  if (unified) {
    e->fd.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!e->fd) return ErrnoError(errno, "inotify_init1");
    std::string events = memory_dir + "/memory.events";
    if (::inotify_add_watch(e->fd.get(), events.c_str(), IN_MODIFY) < 0) {
      return ErrnoError(errno, "watch " + events);
    }
  } else {
    e->fd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!e->fd) return ErrnoError(errno, "eventfd");
    std::string control = memory_dir + "/memory.oom_control";
    e->control.reset(::open(control.c_str(), O_RDONLY | O_CLOEXEC));
    if (!e->control) return ErrnoError(errno, "open " + control);
    RETURN_IF_ERROR(WriteExistingFile(memory_dir + "/cgroup.event_control",
                                      fmt::format("{} {}", e->fd.get(), e->control.get())));
  }
  {
    MutexLock l(&e->mu);
    e->oom_kills = OomKills(memory_dir, unified);
  }
  // Watched from the loop itself, so the handler never runs before `tok`
  // is set; Add returns once it is.
  Latch watched;
  Status st = OkStatus();
  auto watch = [&] {
    auto t = loop_->Watch(e->fd.get(), EPOLLIN, [this, e](uint32_t) { OnReady(e); });
    if (t.ok()) {
      e->tok = *t;
    } else {
      st = t.status();
    }
    watched.Open();
  };
  if (loop_->InLoop()) {
    watch();
  } else if (!loop_->Post(watch)) {
    return FailedPreconditionError("oom watcher: the event loop has stopped");
  }
  watched.Wait();
  RETURN_IF_ERROR(st);
  std::shared_ptr<Entry> replaced;
  {
    MutexLock l(&mu_);
    if (auto it = by_id_.find(id); it != by_id_.end()) replaced = it->second;
    by_id_[id] = e;
  }
  if (replaced) Forget(replaced);
  return OkStatus();
}

bool OomWatcher::Consume(Entry& e, bool wait, bool* recheck) {
  bool signalled = false;
  if (!e.unified) {
    uint64_t n = 0;
    signalled = ::read(e.fd.get(), &n, sizeof n) == sizeof n && n > 0;  // resets it
    // The last signal of a cgroup is its removal, not an OOM.
    if (::access((e.dir + "/memory.oom_control").c_str(), F_OK) != 0) return false;
  } else {
    char buf[4096];
    while (::read(e.fd.get(), buf, sizeof buf) > 0) {
    }
  }
  uint64_t now = OomKills(e.dir, e.unified);
  MutexLock l(&e.mu);
  if (e.removed) return false;
  if (signalled && now <= e.oom_kills) {
    // v1 signals when the OOM starts, before its kill is counted.
    if (!wait) {
      *recheck = true;
      return false;
    }
    for (int i = 0; i < 10 && now <= e.oom_kills; ++i) {
      e.mu.Unlock();
      ::usleep(10'000);
      now = OomKills(e.dir, false);
      e.mu.Lock();
    }
  }
  if (now <= e.oom_kills) return false;
  e.oom_kills = now;
  return true;
}

bool OomWatcher::Recheck(Entry& e) {
  uint64_t now = OomKills(e.dir, e.unified);
  MutexLock l(&e.mu);
  if (e.removed || now <= e.oom_kills) return false;
  e.oom_kills = now;
  return true;
}

void OomWatcher::Report(Entry& e) {
  spdlog::info("oom: {} ({})", e.id, e.dir);
  if (e.on_oom) e.on_oom();
}

void OomWatcher::OnReady(const std::shared_ptr<Entry>& e) {
  bool recheck = false;
  if (Consume(*e, /*wait=*/false, &recheck)) return Report(*e);
  if (recheck) ScheduleRecheck(e, 10);
}

void OomWatcher::ScheduleRecheck(const std::shared_ptr<Entry>& e, int left) {
  loop_->After(std::chrono::milliseconds(10), [this, e, left] {
    if (Recheck(*e)) return Report(*e);
    if (left > 1) ScheduleRecheck(e, left - 1);
  });
}

void OomWatcher::Drain(const std::string& id) {
  std::shared_ptr<Entry> e;
  {
    MutexLock l(&mu_);
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return;
    e = it->second;
  }
  bool recheck = false;
  if (Consume(*e, /*wait=*/!loop_->InLoop(), &recheck)) Report(*e);
}

void OomWatcher::Forget(const std::shared_ptr<Entry>& e) {
  {
    MutexLock l(&e->mu);
    e->removed = true;  // a recheck still queued reports nothing
  }
  loop_->Unwatch(e->tok);  // its handler is not running once this returns
  if (loop_->InLoop()) return;
  // A recheck already past its `removed` test finishes before this returns:
  // after Remove, on_oom's captures may go.
  auto barrier = std::make_shared<Latch>();
  if (loop_->Post([barrier] { barrier->Open(); })) barrier->Wait();
}

void OomWatcher::Remove(const std::string& id) {
  std::shared_ptr<Entry> e;
  {
    MutexLock l(&mu_);
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return;
    e = std::move(it->second);
    by_id_.erase(it);
  }
  Forget(e);  // the fds close with the last reference
}

void OomWatcher::Stop() {
  std::map<std::string, std::shared_ptr<Entry>> all;
  {
    MutexLock l(&mu_);
    all.swap(by_id_);
  }
  for (auto& [id, e] : all) Forget(e);
}

}  // namespace runhcs::stats
