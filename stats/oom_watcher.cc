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
#include "base/log.h"

namespace runhcs::stats {

struct OomWatcher::Entry {
  std::string id;
  std::string dir;
  bool unified = false;
  UniqueFd fd;       // v1: the eventfd; v2: the inotify fd
  UniqueFd control;  // v1: memory.oom_control, held open while registered
  uint64_t key = 0;
  Callback on_oom;
  Mutex mu;  // serialises Consume for v2's counter
  uint64_t oom_kills GUARDED_BY(mu) = 0;
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

OomWatcher::OomWatcher()
    : epoll_(::epoll_create1(EPOLL_CLOEXEC)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // key 0: the wake fd
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev);
}

OomWatcher::~OomWatcher() { Stop(); }

void OomWatcher::Stop() {
  std::thread t;
  {
    MutexLock l(&mu_);
    started_ = true;  // never (re)started after this
    t = std::move(thread_);
  }
  if (!t.joinable()) return;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  t.join();
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
    MutexLock l(&e->mu);
    e->oom_kills = OomKills(memory_dir, true);
  } else {
    e->fd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!e->fd) return ErrnoError(errno, "eventfd");
    std::string control = memory_dir + "/memory.oom_control";
    e->control.reset(::open(control.c_str(), O_RDONLY | O_CLOEXEC));
    if (!e->control) return ErrnoError(errno, "open " + control);
    std::string reg = memory_dir + "/cgroup.event_control";
    UniqueFd f(::open(reg.c_str(), O_WRONLY | O_CLOEXEC));
    if (!f) return ErrnoError(errno, "open " + reg);
    RETURN_IF_ERROR(WriteAll(f.get(), fmt::format("{} {}", e->fd.get(), e->control.get())));
    MutexLock l(&e->mu);
    e->oom_kills = OomKills(memory_dir, false);
  }
  std::shared_ptr<Entry> replaced;
  {
    MutexLock l(&mu_);
    e->key = next_key_++;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = e->key;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, e->fd.get(), &ev) != 0)
      return ErrnoError(errno, "epoll_ctl");
    if (auto it = by_id_.find(id); it != by_id_.end()) {
      replaced = it->second;
      by_key_.erase(replaced->key);
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, replaced->fd.get(), nullptr);
    }
    by_id_[id] = e;
    by_key_[e->key] = e;
    if (!started_) {
      started_ = true;
      thread_ = std::thread([this] { Loop(); });
    }
  }
  return OkStatus();
}

bool OomWatcher::Consume(Entry& e) {
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
  if (signalled && now <= e.oom_kills) {
    // v1 notifies when the OOM starts, before its kill is counted: give
    // the kill a moment to land.
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

void OomWatcher::Handle(const std::shared_ptr<Entry>& e) {
  if (Consume(*e) && e->on_oom) {
    spdlog::info("oom: {} ({})", e->id, e->dir);
    e->on_oom();
  }
}

void OomWatcher::Drain(const std::string& id) {
  std::shared_ptr<Entry> e;
  {
    MutexLock l(&mu_);
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return;
    e = it->second;
  }
  Handle(e);
}

void OomWatcher::Remove(const std::string& id) {
  MutexLock l(&mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second->fd.get(), nullptr);
  by_key_.erase(it->second->key);
  by_id_.erase(it);  // the fds close with the last reference
}

void OomWatcher::Loop() {
  epoll_event events[16];
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), events, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("oom watcher: epoll_wait: {}", std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      uint64_t key = events[i].data.u64;
      if (key == 0) return;  // shutting down
      std::shared_ptr<Entry> e;
      {
        MutexLock l(&mu_);
        auto it = by_key_.find(key);
        if (it != by_key_.end()) e = it->second;
      }
      if (e) Handle(e);
    }
  }
}

}  // namespace runhcs::stats
