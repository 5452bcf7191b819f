#include "ttrpc/server.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <cerrno>

#include "base/log.h"
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
  std::atomic<size_t> inflight{0};
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
  std::function<void()> on_idle;     // set before serving; read-only after

  static void Dispatch(const std::shared_ptr<Shared>& self, std::function<void()> job) {
    MutexLock l(&self->mu);
    self->work.push_back(std::move(job));
    if (self->idle_workers > 0) {
      // Reserve one idle worker for this job, so two jobs never count on the
      // same sleeper (one of them could be a Wait that blocks for ever).
      --self->idle_workers;
      ++self->wakeups;
      self->work_cv.Signal();
      return;
    }
    ++self->workers;
    std::thread([self] {
      if (self->WorkerLoop() && self->on_idle) self->on_idle();
    }).detach();
  }

  // True when this was the last worker and it left for want of work.
  bool WorkerLoop() {
    constexpr auto kWorkerIdle = std::chrono::seconds(2);
    MutexLock l(&mu);
    for (;;) {
      // A finishing worker may take a job reserved for a sleeper; the
      // sleeper then finds nothing and goes back to sleep.
      while (work.empty()) {
        ++idle_workers;
        auto deadline = std::chrono::steady_clock::now() + kWorkerIdle;
        while (wakeups == 0) {
          if (!work_cv.WaitUntil(&mu, deadline) && wakeups == 0) {
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
  (*handlers_)[service][method] = std::move(h);
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
  size_t max_inflight = opts_.max_inflight_per_connection;
  std::thread([conn, shared, handlers, max_inflight] {
    int fd = conn->fd.get();
    for (;;) {
      Frame f;
      Status st = ReadFrame(fd, &f);
      if (st.code() == Code::kResourceExhausted) {
        SendResponse(fd, &conn->write_mu, f.header.stream_id, st, "");
        continue;
      }
      if (!st.ok()) {
        if (st.code() != Code::kOutOfRange) spdlog::debug("ttrpc: connection closed: {}", st.ToString());
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
      if (conn->inflight.fetch_add(1) >= max_inflight) {
        conn->inflight.fetch_sub(1);
        SendResponse(fd, &conn->write_mu, sid,
                     ResourceExhaustedError("more than {} requests in flight", max_inflight), "");
        continue;
      }
      const RawHandler* handler = nullptr;
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
        conn->inflight.fetch_sub(1);
        continue;
      }
      {
        MutexLock l(&shared->mu);
        ++shared->handlers_running;
      }
      Shared::Dispatch(shared, [conn, shared, handlers, handler, req, sid] {
        CallContext ctx;
        ctx.service = req->service();
        ctx.method = req->method();
        if (req->timeout_nano() > 0) {
          ctx.deadline = Clock::now() + std::chrono::nanoseconds(req->timeout_nano());
        }
        for (const auto& kv : req->metadata()) ctx.metadata.emplace_back(kv.key(), kv.value());
        std::string out;
        Status hs;
        try {
          hs = (*handler)(ctx, req->payload(), &out);
        } catch (const std::exception& e) {
          hs = InternalError("handler {}/{} threw: {}", ctx.service, ctx.method, e.what());
        }
        SendResponse(conn->fd.get(), &conn->write_mu, sid, hs, out);
        conn->inflight.fetch_sub(1);
        MutexLock l(&shared->mu);
        --shared->handlers_running;
        shared->cv.SignalAll();
      });
    }
    // Wake any peer still blocked on us and drop the connection.
    ::shutdown(fd, SHUT_RDWR);
    MutexLock l(&shared->mu);
    auto& v = shared->conns;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (it->get() == conn.get()) {
        v.erase(it);
        break;
      }
    }
    shared->cv.SignalAll();
  }).detach();
}

size_t Server::connection_count() {
  MutexLock l(&shared_->mu);
  return shared_->conns.size();
}

void Server::Shutdown(std::chrono::milliseconds grace) {
  if (wake_[1]) {
    char b = 1;
    (void)!::write(wake_[1].get(), &b, 1);
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  listener_.reset();
  auto deadline = std::chrono::steady_clock::now() + grace;
  MutexLock l(&shared_->mu);
  shared_->shutting_down = true;
  // Let handlers that are about to answer (the Shutdown call itself) send
  // their reply before the connections go; blocked ones (Wait) only delay
  // this a little.
  auto drain = std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(500));
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
