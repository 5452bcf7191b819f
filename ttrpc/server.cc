#include "ttrpc/server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <functional>

#include "base/log.h"
#include "base/thread_group.h"
#include "ttrpc/frame.h"
#include "ttrpc/ttrpc.pb.h"

namespace runhcs::ttrpc {

std::string CallContext::Metadata(std::string_view key) const {
  for (const auto& [k, v] : metadata) {
    if (k == key) return v;
  }
  return "";
}

struct Server::Conn {
  explicit Conn(UniqueFd f) : fd(std::move(f)) {}
  UniqueFd fd;
  Mutex write_mu;  // serializes frames on fd

  Mutex mu;
  CondVar cv;                         // running went down
  size_t running GUARDED_BY(mu) = 0;  // plain handlers in flight
  bool closed GUARDED_BY(mu) = false;
  // Unanswered calls by stream id (plain and async), so a closing
  // connection can mark them Done.
  std::map<uint32_t, std::shared_ptr<Responder::Call>> calls GUARDED_BY(mu);
  size_t async_pending GUARDED_BY(mu) = 0;
};

// Deadlines of unanswered calls (Server::Shared::timers).
using TimerMap = std::multimap<Clock::time_point, std::weak_ptr<Responder::Call>>;

struct Responder::Call {
  std::weak_ptr<Server::Conn> conn;
  uint32_t sid = 0;
  bool async = false;
  std::atomic<bool> done{false};
  // Its deadline's entry, if it has one and the timer has not fired: the
  // answer removes it (guarded by Server::Shared::mu). Left to the deadline,
  // the entry of every answered call would hold the call's memory until then
  // (containerd gives calls deadlines of minutes).
  std::weak_ptr<Server::Shared> shared;
  std::optional<TimerMap::iterator> timer;
  // "service/method", set only when debug logging is on: each call is then
  // logged when it arrives and when it is answered, with its duration, so a
  // call that never returns shows in the log as one without an answer.
  std::string name;
  Clock::time_point received;
};

// State shared with connection and handler threads, so none of them can
// outlive what they touch.
struct Server::Shared {
  Mutex mu;
  CondVar cv;
  bool shutting_down GUARDED_BY(mu) = false;
  std::vector<std::shared_ptr<Conn>> conns GUARDED_BY(mu);
  size_t handlers_running GUARDED_BY(mu) = 0;

  // Handler threads are pooled: a request goes to an idle worker, or a new
  // one; workers idle for kWorkerIdle exit, so an idle shim keeps none.
  CondVar work_cv;
  std::deque<std::function<void()>> work GUARDED_BY(mu);
  size_t idle_workers GUARDED_BY(mu) = 0;
  size_t wakeups GUARDED_BY(mu) = 0;  // reserved wake-ups not yet taken
  size_t workers GUARDED_BY(mu) = 0;
  std::function<void()> on_idle;  // set before serving; read-only after

  // Deadlines of unanswered calls, served by one timer thread started with
  // the first call that has one. An answer removes its call's entry.
  CondVar timer_cv;
  TimerMap timers GUARDED_BY(mu);
  bool timer_stop GUARDED_BY(mu) = false;
  std::thread timer_thread GUARDED_BY(mu);

  static void AddTimer(const std::shared_ptr<Shared>& self, Clock::time_point at,
                       const std::shared_ptr<Responder::Call>& call) {
    MutexLock l(&self->mu);
    if (self->timer_stop) return;
    bool earliest = self->timers.empty() || at < self->timers.begin()->first;
    call->shared = self;
    call->timer = self->timers.emplace(at, call);
    if (!self->timer_thread.joinable()) {
      self->timer_thread = std::thread([self] { self->TimerLoop(); });
    } else if (earliest) {
      self->timer_cv.SignalAll();
    }
  }

  void TimerLoop() {
    MutexLock l(&mu);
    while (!timer_stop) {
      if (timers.empty()) {
        timer_cv.Wait(&mu);
        continue;
      }
      auto first = timers.begin()->first;
      if (Clock::now() < first) {
        (void)timer_cv.WaitUntil(&mu, first);
        continue;
      }
      std::vector<std::shared_ptr<Responder::Call>> expired;
      auto now = Clock::now();
      while (!timers.empty() && timers.begin()->first <= now) {
        if (auto c = timers.begin()->second.lock()) {
          c->timer.reset();
          expired.push_back(std::move(c));
        }
        timers.erase(timers.begin());
      }
      mu.Unlock();
      for (auto& c : expired) Responder(c).Reply(DeadlineExceededError("ttrpc: deadline exceeded"));
      expired.clear();
      mu.Lock();
    }
  }

  static void Dispatch(const std::shared_ptr<Shared>& self, std::function<void()> job) {
    {
      MutexLock l(&self->mu);
      self->work.push_back(std::move(job));
      if (self->idle_workers > 0) {
        // Reserve one idle worker for this job, so two jobs never count on
        // the same sleeper (one of them could be a Wait that blocks for ever).
        --self->idle_workers;
        ++self->wakeups;
        self->work_cv.Signal();
        return;
      }
      ++self->workers;
    }
    Status st = ThreadGroup::Get().Spawn("ttrpc-worker", [self] {
      if (self->WorkerLoop() && self->on_idle) self->on_idle();
    });
    if (!st.ok()) {
      // No new thread: this (the connection's reader) works the queue until
      // it is empty, which answers this request, late rather than never.
      spdlog::warn("ttrpc: {}; serving on the reader", st.ToString());
      (void)self->WorkerLoop(/*drain_only=*/true);
    }
  }

  // True when this was the last worker and it left for want of work.
  // `drain_only`: the caller counted as a worker that failed to start; it
  // works until the queue is empty and then stops being one.
  bool WorkerLoop(bool drain_only = false) {
    constexpr auto kWorkerIdle = std::chrono::seconds(2);
    MutexLock l(&mu);
    for (;;) {
      if (drain_only && work.empty()) {
        --workers;
        return false;
      }
      // A finishing worker may take a job reserved for a sleeper; the
      // sleeper then finds nothing and goes back to sleep.
      while (work.empty()) {
        if (shutting_down) {  // no more work will come: leave at once
          --workers;
          return false;
        }
        ++idle_workers;
        auto deadline = std::chrono::steady_clock::now() + kWorkerIdle;
        while (wakeups == 0) {
          if ((!work_cv.WaitUntil(&mu, deadline) || shutting_down) && wakeups == 0) {
            --idle_workers;
            return --workers == 0 && work.empty();
          }
        }
        --wakeups;  // Dispatch already took us off idle_workers
      }
      auto job = std::move(work.front());
      work.pop_front();
      mu.Unlock();
      job();
      job = nullptr;  // drop captures without the lock
      mu.Lock();
    }
  }
};

namespace {

void SendResponse(int fd, Mutex* write_mu, uint32_t sid, const Status& st,
                  const std::string& payload) {
  ::ttrpc::Response resp;
  if (!st.ok()) {
    resp.mutable_status()->set_code(static_cast<int>(st.code()));
    resp.mutable_status()->set_message(st.WireMessage());
  } else {
    resp.set_payload(payload);
  }
  std::string out = resp.SerializeAsString();
  Status ws;
  {
    MutexLock l(write_mu);
    ws = WriteFrame(fd, sid, FrameType::kResponse, 0, out);
    if (ws.code() == Code::kResourceExhausted) {
      ::ttrpc::Response err;
      err.mutable_status()->set_code(static_cast<int>(Code::kResourceExhausted));
      err.mutable_status()->set_message(ws.message());
      ws = WriteFrame(fd, sid, FrameType::kResponse, 0, err.SerializeAsString());
    }
  }
  if (!ws.ok()) spdlog::debug("ttrpc: response on stream {} not sent: {}", sid, ws.ToString());
}

}  // namespace

bool Responder::Reply(const Status& st, const std::string& payload) const {
  if (!call_ || call_->done.exchange(true)) return false;
  if (auto shared = call_->shared.lock()) {
    MutexLock l(&shared->mu);
    if (call_->timer) shared->timers.erase(*std::exchange(call_->timer, std::nullopt));
  }
  auto conn = call_->conn.lock();
  if (!conn) return false;
  {
    MutexLock l(&conn->mu);
    if (conn->closed) return false;  // its calls were dropped with it
    conn->calls.erase(call_->sid);
    if (call_->async) --conn->async_pending;
  }
  if (!call_->name.empty()) {  // before the answer: the peer may act on it at once
    spdlog::debug(
        "ttrpc: {} stream {} answered in {} ms: {}", call_->name, call_->sid,
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - call_->received)
            .count(),
        st.ToString());
  }
  SendResponse(conn->fd.get(), &conn->write_mu, call_->sid, st, payload);
  return true;
}

bool Responder::Send(const google::protobuf::MessageLite& resp) const {
  std::string out;
  if (!resp.SerializeToString(&out)) return Reply(InternalError("ttrpc: marshal response"));
  return Reply(OkStatus(), out);
}

bool Responder::Done() const { return !call_ || call_->done.load(); }

Server::Server(Options opts) : opts_(opts), shared_(std::make_shared<Shared>()) {
  shared_->on_idle = opts_.on_idle;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) == 0) {
    wake_[0].reset(p[0]);
    wake_[1].reset(p[1]);
  }
}

Server::~Server() { Shutdown(); }

void Server::RegisterRaw(const std::string& service, const std::string& method, RawHandler h) {
  (*handlers_)[service][method] = Handler{std::move(h), nullptr};
}

void Server::RegisterAsyncRaw(const std::string& service, const std::string& method,
                              AsyncRawHandler h) {
  (*handlers_)[service][method] = Handler{nullptr, std::move(h)};
}

void Server::ServeListener(UniqueFd listener) {
  listener_ = std::move(listener);
  accept_thread_ = std::thread([this, fd = listener_.get()] { AcceptLoop(fd); });
}

void Server::ServeConnection(UniqueFd conn) { StartConnection(std::move(conn)); }

void Server::AcceptLoop(int listen_fd) {
  for (;;) {
    pollfd pfd[2] = {{listen_fd, POLLIN, 0}, {wake_[0].get(), POLLIN, 0}};
    int n = ::poll(pfd, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("ttrpc: poll on listener: {}", std::strerror(errno));
      return;
    }
    if (pfd[1].revents) return;
    if (!(pfd[0].revents & POLLIN)) continue;
    UniqueFd c(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      spdlog::error("ttrpc: accept: {}", std::strerror(errno));
      if (errno == EMFILE || errno == ENFILE) ::usleep(100000);
      continue;
    }
    if (opts_.require_same_uid) {
      ucred cred{};
      socklen_t len = sizeof cred;
      if (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
          cred.uid != ::geteuid()) {
        spdlog::warn("ttrpc: refused connection from uid {} pid {}", cred.uid, cred.pid);
        continue;
      }
    }
    StartConnection(std::move(c));
  }
}

void Server::StartConnection(UniqueFd fd) {
  auto conn = std::make_shared<Conn>(std::move(fd));
  std::shared_ptr<Shared> shared = shared_;
  {
    MutexLock l(&shared->mu);
    if (shared->shutting_down) return;
    shared->conns.push_back(conn);
  }
  std::shared_ptr<const HandlerMap> handlers = handlers_;
  const size_t max_running = std::max<size_t>(opts_.max_running_per_connection, 1);
  const size_t max_pending = opts_.max_pending_per_connection;
  auto serve = [conn, shared, handlers, max_running, max_pending] {
    int fd = conn->fd.get();
    for (;;) {
      Frame f;
      Status st = ReadFrame(fd, &f);
      if (st.code() == Code::kResourceExhausted) {
        SendResponse(fd, &conn->write_mu, f.header.stream_id, st, "");
        continue;
      }
      if (!st.ok()) {
        if (st.code() != Code::kOutOfRange)
          spdlog::debug("ttrpc: connection closed: {}", st.ToString());
        break;
      }
      if (f.header.type != static_cast<uint8_t>(FrameType::kRequest)) continue;
      uint32_t sid = f.header.stream_id;
      if (sid % 2 == 0) {
        SendResponse(fd, &conn->write_mu, sid,
                     InvalidArgumentError("StreamID must be odd for client initiated streams"), "");
        continue;
      }
      auto req = std::make_shared<::ttrpc::Request>();
      if (!req->ParseFromString(f.payload)) {
        SendResponse(fd, &conn->write_mu, sid,
                     InvalidArgumentError("unmarshal request error: not a ttrpc Request"), "");
        continue;
      }
      const Handler* handler = nullptr;
      Status lookup;
      auto svc = handlers->find(req->service());
      if (svc == handlers->end()) {
        lookup = NotImplementedError("service {}", req->service());
      } else {
        auto m = svc->second.find(req->method());
        if (m == svc->second.end()) {
          lookup = NotImplementedError("method {}", req->method());
        } else {
          handler = &m->second;
        }
      }
      if (!handler) {
        SendResponse(fd, &conn->write_mu, sid, lookup, "");
        continue;
      }
      auto call = std::make_shared<Responder::Call>();
      call->conn = conn;
      call->sid = sid;
      call->async = static_cast<bool>(handler->async);
      if (spdlog::should_log(spdlog::level::debug)) {
        call->name = req->service() + "/" + req->method();
        call->received = Clock::now();
        spdlog::debug("ttrpc: {} stream {} received", call->name, sid);
      }
      Status refused;
      {
        MutexLock l(&conn->mu);
        if (conn->calls.count(sid)) {
          refused = InvalidArgumentError("stream {} is in use", sid);
        } else if (call->async) {
          if (conn->async_pending >= max_pending) {
            refused = ResourceExhaustedError("more than {} calls waiting on this connection",
                                             max_pending);
          } else {
            ++conn->async_pending;
          }
        } else {
          // Backpressure: this connection is not read while it has its
          // share of handlers running.
          while (conn->running >= max_running && !conn->closed) conn->cv.Wait(&conn->mu);
          ++conn->running;
        }
        if (refused.ok()) conn->calls.emplace(sid, call);
      }
      if (!refused.ok()) {
        SendResponse(fd, &conn->write_mu, sid, refused, "");
        continue;
      }
      CallContext ctx;
      ctx.service = req->service();
      ctx.method = req->method();
      if (req->timeout_nano() > 0) {
        ctx.deadline = Clock::now() + std::chrono::nanoseconds(req->timeout_nano());
        Shared::AddTimer(shared, *ctx.deadline, call);
      }
      for (const auto& kv : req->metadata()) ctx.metadata.emplace_back(kv.key(), kv.value());
      Responder responder(call);
      if (call->async) {
        try {
          handler->async(ctx, req->payload(), responder);
        } catch (const std::exception& e) {
          responder.Reply(
              InternalError("handler {}/{} threw: {}", ctx.service, ctx.method, e.what()));
        }
        continue;
      }
      {
        MutexLock l(&shared->mu);
        ++shared->handlers_running;
      }
      Shared::Dispatch(shared, [conn, shared, handler, req, responder, ctx = std::move(ctx)] {
        std::string out;
        Status hs;
        try {
          hs = handler->sync(ctx, req->payload(), &out);
        } catch (const std::exception& e) {
          hs = InternalError("handler {}/{} threw: {}", ctx.service, ctx.method, e.what());
        }
        responder.Reply(hs, out);
        {
          MutexLock l(&conn->mu);
          --conn->running;
          conn->cv.SignalAll();
        }
        MutexLock l(&shared->mu);
        --shared->handlers_running;
        shared->cv.SignalAll();
      });
    }
    // Wake any peer still blocked on us and drop the connection: its
    // unanswered calls are Done from now on.
    ::shutdown(fd, SHUT_RDWR);
    std::map<uint32_t, std::shared_ptr<Responder::Call>> dropped;
    {
      MutexLock l(&conn->mu);
      conn->closed = true;
      dropped.swap(conn->calls);
      conn->async_pending = 0;
      conn->cv.SignalAll();
    }
    for (auto& [sid, c] : dropped) c->done = true;
    MutexLock l(&shared->mu);
    for (auto& [sid, c] : dropped) {
      if (c->timer) shared->timers.erase(*std::exchange(c->timer, std::nullopt));
    }
    dropped.clear();
    auto& v = shared->conns;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (it->get() == conn.get()) {
        v.erase(it);
        break;
      }
    }
    shared->cv.SignalAll();
  };
  if (Status st = ThreadGroup::Get().Spawn("ttrpc-conn", std::move(serve)); !st.ok()) {
    spdlog::error("ttrpc: {}; refusing the connection", st.ToString());
    MutexLock l(&shared->mu);
    std::erase(shared->conns, conn);
    shared->cv.SignalAll();
  }
}

size_t Server::connection_count() {
  MutexLock l(&shared_->mu);
  return shared_->conns.size();
}

size_t Server::pending_deadlines() {
  MutexLock l(&shared_->mu);
  return shared_->timers.size();
}

void Server::Shutdown(std::chrono::milliseconds grace) {
  if (wake_[1]) {
    char b = 1;
    (void)!::write(wake_[1].get(), &b, 1);
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  listener_.reset();
  auto deadline = std::chrono::steady_clock::now() + grace;
  DrainAndClose(deadline);
  std::thread timer;
  {
    MutexLock l(&shared_->mu);
    shared_->timer_stop = true;
    shared_->timer_cv.SignalAll();
    timer = std::move(shared_->timer_thread);
  }
  if (timer.joinable()) timer.join();
}

void Server::DrainAndClose(Clock::time_point deadline) {
  MutexLock l(&shared_->mu);
  shared_->shutting_down = true;
  shared_->work_cv.SignalAll();  // idle workers leave
  // Let handlers that are about to answer (the Shutdown call itself) send
  // their reply before the connections go; blocked ones (Wait) only delay
  // this a little.
  auto drain =
      std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(500));
  while (shared_->handlers_running > 0) {
    if (!shared_->cv.WaitUntil(&shared_->mu, drain)) break;
  }
  for (auto& c : shared_->conns) ::shutdown(c->fd.get(), SHUT_RDWR);
  while (!shared_->conns.empty() || shared_->handlers_running > 0) {
    if (!shared_->cv.WaitUntil(&shared_->mu, deadline)) {
      spdlog::warn("ttrpc: shutdown left {} connections and {} handlers running",
                   shared_->conns.size(), shared_->handlers_running);
      break;
    }
  }
}

}  // namespace runhcs::ttrpc
