#include "base/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "base/log.h"

namespace runhcs {

namespace {
constexpr EventLoop::Token kWakeToken = 0;
}  // namespace

EventLoop& EventLoop::Get() {
  static EventLoop* loop = new EventLoop();  // never destroyed: Stop() joins it
  return *loop;
}

EventLoop::~EventLoop() { Stop(); }

bool EventLoop::InLoop() const { return loop_id_.load() == std::this_thread::get_id(); }

Status EventLoop::StartLocked() {
  if (thread_.joinable()) return OkStatus();
  if (!epfd_) {
    epfd_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epfd_) return ErrnoError(errno, "epoll_create1");
    wakefd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wakefd_) return ErrnoError(errno, "eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeToken;
    if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, wakefd_.get(), &ev) != 0) {
      return ErrnoError(errno, "epoll_ctl wake");
    }
  }
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (const std::system_error& e) {
    return ResourceExhaustedError("event loop thread: {}", e.what());
  }
  loop_id_ = thread_.get_id();
  return OkStatus();
}

void EventLoop::Wake() {
  uint64_t one = 1;
  (void)!::write(wakefd_.get(), &one, sizeof one);
}

StatusOr<EventLoop::Token> EventLoop::Watch(int fd, uint32_t events, FdHandler fn) {
  MutexLock l(&mu_);
  if (stopped_) return FailedPreconditionError("event loop stopped");
  RETURN_IF_ERROR(StartLocked());
  Token t = next_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = t;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    return ErrnoError(errno, fmt::format("epoll_ctl add fd {}", fd));
  }
  watches_[t] = std::make_shared<Entry>(Entry{fd, std::move(fn)});
  return t;
}

void EventLoop::Unwatch(Token t) {
  std::shared_ptr<Entry> gone;  // destroyed with no lock held
  MutexLock l(&mu_);
  auto it = watches_.find(t);
  if (it != watches_.end()) {
    ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, it->second->fd, nullptr);
    gone = std::move(it->second);
    watches_.erase(it);
  }
  if (InLoop()) return;
  while (running_ == t) cv_.Wait(&mu_);
}

bool EventLoop::Post(std::function<void()> fn) {
  {
    MutexLock l(&mu_);
    if (stopped_) return false;
    if (Status st = StartLocked(); !st.ok()) {
      spdlog::error("event loop: {}; dropping posted work", st.ToString());
      return false;
    }
    posted_.push_back(std::move(fn));
  }
  Wake();
  return true;
}

EventLoop::Token EventLoop::After(std::chrono::nanoseconds delay, std::function<void()> fn) {
  Token t;
  {
    MutexLock l(&mu_);
    if (stopped_) return 0;
    if (Status st = StartLocked(); !st.ok()) {
      spdlog::error("event loop: {}; dropping a timer", st.ToString());
      return 0;
    }
    t = next_++;
    timers_[t] = std::move(fn);
    timer_at_.emplace(std::chrono::steady_clock::now() + delay, t);
  }
  Wake();
  return t;
}

void EventLoop::Cancel(Token t) {
  std::function<void()> gone;
  MutexLock l(&mu_);
  auto it = timers_.find(t);
  if (it == timers_.end()) return;
  gone = std::move(it->second);
  timers_.erase(it);  // its timer_at_ entry is skipped when due
}

size_t EventLoop::watches() {
  MutexLock l(&mu_);
  return watches_.size();
}

bool EventLoop::running() {
  MutexLock l(&mu_);
  return thread_.joinable() && !stopped_;
}

int EventLoop::RunReady() {
  std::vector<std::function<void()>> run;
  {
    MutexLock l(&mu_);
    auto now = std::chrono::steady_clock::now();
    while (!timer_at_.empty() && timer_at_.begin()->first <= now) {
      auto it = timers_.find(timer_at_.begin()->second);
      timer_at_.erase(timer_at_.begin());
      if (it == timers_.end()) continue;  // cancelled
      run.push_back(std::move(it->second));
      timers_.erase(it);
    }
    for (auto& fn : posted_) run.push_back(std::move(fn));
    posted_.clear();
  }
  for (auto& fn : run) fn();
  run.clear();
  MutexLock l(&mu_);
  if (!posted_.empty()) return 0;
  while (!timer_at_.empty() && !timers_.count(timer_at_.begin()->second)) {
    timer_at_.erase(timer_at_.begin());
  }
  if (timer_at_.empty()) return -1;
  auto left = timer_at_.begin()->first - std::chrono::steady_clock::now();
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms < 0 ? 0 : static_cast<int>(std::min<int64_t>(ms, 60'000));
}

void EventLoop::Run() {
  epoll_event evs[64];
  for (;;) {
    int timeout = RunReady();
    {
      MutexLock l(&mu_);
      if (stopped_) return;
    }
    int n = ::epoll_wait(epfd_.get(), evs, 64, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("event loop: epoll_wait: {}", std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      Token t = evs[i].data.u64;
      if (t == kWakeToken) {
        uint64_t v;
        (void)!::read(wakefd_.get(), &v, sizeof v);
        continue;
      }
      std::shared_ptr<Entry> e;
      {
        MutexLock l(&mu_);
        if (stopped_) return;
        auto it = watches_.find(t);
        if (it == watches_.end()) continue;  // unwatched since epoll_wait returned
        e = it->second;
        running_ = t;
      }
      e->fn(evs[i].events);
      MutexLock l(&mu_);
      running_ = 0;
      cv_.SignalAll();
    }
  }
}

void EventLoop::Stop() {
  std::thread t;
  std::map<Token, std::shared_ptr<Entry>> watches;
  std::vector<std::function<void()>> posted;
  std::map<Token, std::function<void()>> timers;
  {
    MutexLock l(&mu_);
    stopped_ = true;
    for (auto& [tok, e] : watches_) ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, e->fd, nullptr);
    watches.swap(watches_);
    posted.swap(posted_);
    timers.swap(timers_);
    timer_at_.clear();
    t = std::move(thread_);
  }
  if (!t.joinable()) return;
  Wake();
  t.join();
}

}  // namespace runhcs
