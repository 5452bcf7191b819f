#include "stdio/process_io.h"

#include "stdio/console.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>
#include <algorithm>

#include <cerrno>
#include <climits>
#include <cstring>

#include "base/event_loop.h"
#include "base/io.h"
#include "base/latch.h"
#include "base/log.h"
#include "base/reaper.h"
#include "stdio/uri.h"

namespace runhcs::stdio {

namespace {

constexpr auto kLoggerReadyTimeout = std::chrono::seconds(10);

void SetNonblock(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

Status MkdirParents(const std::string& path) {
  for (size_t pos = 1; pos < path.size(); ++pos) {
    if (path[pos] != '/') continue;
    std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError(errno, fmt::format("mkdir {}", part));
    }
  }
  return OkStatus();
}

struct Pipe {
  UniqueFd r, w;
  static StatusOr<Pipe> Make() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
    return Pipe{UniqueFd(p[0]), UniqueFd(p[1])};
  }
};

}  // namespace

// Opens an output fifo for writing, with a reader of ours so the writer
// never sees EPIPE and the open never blocks, and a second writer that
// holds the fifo open for its client until the exit is through with it
// (AwaitFifoReaders). Whether the client's reader is there already (a
// reader counts from the moment its open(2) starts) is noted.
StatusOr<UniqueFd> ProcessIo::OpenOutputFifo(const std::string& path) {
  UniqueFd w(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  const bool client_seen = static_cast<bool>(w);
  if (!w && errno != ENXIO) return ErrnoError(errno, fmt::format("open fifo {}", path));
  UniqueFd r(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!r) return ErrnoError(errno, fmt::format("open fifo {}", path));
  if (!w) w.reset(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  UniqueFd hold(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (!w || !hold) return ErrnoError(errno, fmt::format("open fifo {} for writing", path));
  MutexLock l(&fifos_mu_);
  output_fifos_.push_back({std::move(r), std::move(hold), client_seen});
  return w;
}

namespace {

// The exit is through with an output fifo (its copy has finished and our
// reader is closed) once its client has read all of it, or has left. A
// client whose reader is not open yet (ctr and CRI open theirs on a thread
// of their own) keeps it waiting: `hold` keeps the data and lets its open
// complete.
bool FifoTaken(int hold, bool* client_seen) {
  pollfd p{hold, POLLOUT, 0};
  if (::poll(&p, 1, 0) < 0) return true;
  if (p.revents & POLLERR) return *client_seen;  // no reader: gone, or yet to come
  *client_seen = true;
  int queued = 0;
  return ::ioctl(hold, FIONREAD, &queued) != 0 || queued == 0;
}

constexpr auto kReaderPoll = std::chrono::microseconds(500);

// What fd refers to, for messages.
std::string FdTarget(int fd) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink(fmt::format("/proc/self/fd/{}", fd).c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : fmt::format("fd {}", fd);
}

}  // namespace

StatusOr<std::unique_ptr<ProcessIo>> ProcessIo::Open(const Paths& stdio, const IoContext& ctx) {
  auto io = std::make_unique<ProcessIo>();
  io->terminal_ = stdio.terminal;

  ASSIGN_OR_RETURN(Target in, ParseTarget(stdio.stdin_path));
  ASSIGN_OR_RETURN(Target out, ParseTarget(stdio.stdout_path));
  ASSIGN_OR_RETURN(Target err, ParseTarget(stdio.stderr_path));
  if (in.kind != Target::kNone && in.kind != Target::kFifo) {
    return InvalidArgumentError("stdin {:?} must be a fifo", stdio.stdin_path);
  }

  if (in.kind == Target::kFifo) {
    io->stdin_src_.reset(::open(in.path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!io->stdin_src_) return ErrnoError(errno, fmt::format("open stdin fifo {}", in.path));
    io->stdin_path_ = in.path;
  }

  if (stdio.terminal) {
    // The runtime connects here and sends the pty master.
    ASSIGN_OR_RETURN(io->console_, ConsoleSocket::Create());
    if (out.kind == Target::kFifo) {
      ASSIGN_OR_RETURN(io->out_dst_, io->OpenOutputFifo(out.path));
    } else if (out.kind == Target::kFile) {
      RETURN_IF_ERROR(MkdirParents(out.path));
      io->out_dst_.reset(::open(out.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
      if (!io->out_dst_) return ErrnoError(errno, fmt::format("open {}", out.path));
    } else if (out.kind == Target::kBinary) {
      return InvalidArgumentError("binary:// logging is not supported with a terminal");
    }
    return io;
  }

  if (in.kind == Target::kFifo) {
    ASSIGN_OR_RETURN(Pipe p, Pipe::Make());
    io->child_in_ = std::move(p.r);
    io->stdin_pipe_w_ = std::move(p.w);
  }

  if (out.kind == Target::kBinary || err.kind == Target::kBinary) {
    if (out.kind != Target::kBinary || err.kind != Target::kBinary || out.path != err.path) {
      return InvalidArgumentError("binary:// must be used for both stdout and stderr");
    }
    ASSIGN_OR_RETURN(Pipe po, Pipe::Make());
    ASSIGN_OR_RETURN(Pipe pe, Pipe::Make());
    ASSIGN_OR_RETURN(Pipe ready, Pipe::Make());
    SpawnOptions so;
    so.argv.push_back(out.path);
    so.argv.insert(so.argv.end(), out.args.begin(), out.args.end());
    so.fds = {{3, po.r.get()}, {4, pe.r.get()}, {5, ready.w.get()}};
    int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    so.fds.insert(so.fds.begin(), {{0, devnull}, {1, devnull}, {2, devnull}});
    so.cwd = ctx.bundle;
    so.env = std::vector<std::string>{"CONTAINER_ID=" + ctx.id, "CONTAINER_NAMESPACE=" + ctx.ns};
    auto pid = Reaper::Get().Spawn(so);
    ::close(devnull);
    if (!pid.ok()) return pid.status().Wrap("start binary logger");
    io->logger_pid_ = *pid;
    ready.w.reset();
    // Ready: a byte, or EOF.
    // EINTR (a stack dump's signal) waits again, for what is left.
    auto until = std::chrono::steady_clock::now() + kLoggerReadyTimeout;
    int n;
    do {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      pollfd p{ready.r.get(), POLLIN, 0};
      n = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return DeadlineExceededError("binary logger {} did not signal ready", out.path);
    io->child_out_ = std::move(po.w);
    io->child_err_ = std::move(pe.w);
    return io;
  }

  // fifo and file outputs go through pipes and copiers.
  for (int which = 0; which < 2; ++which) {
    const Target& t = which == 0 ? out : err;
    if (t.kind == Target::kNone) continue;
    UniqueFd dst;
    if (t.kind == Target::kFifo) {
      ASSIGN_OR_RETURN(dst, io->OpenOutputFifo(t.path));
    } else if (which == 1 && out.kind == Target::kFile && out.path == t.path) {
      // One writer for both streams (ctr --log-uri sends the same file).
      dst.reset(::fcntl(io->out_dst_.get(), F_DUPFD_CLOEXEC, 0));
    } else {
      RETURN_IF_ERROR(MkdirParents(t.path));
      dst.reset(::open(t.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
      if (!dst) return ErrnoError(errno, fmt::format("open {}", t.path));
    }
    ASSIGN_OR_RETURN(Pipe p, Pipe::Make());
    (which == 0 ? io->out_dst_ : io->err_dst_) = std::move(dst);
    (which == 0 ? io->child_out_ : io->child_err_) = std::move(p.w);
    (which == 0 ? io->out_r_ : io->err_r_) = std::move(p.r);
  }
  return io;
}

// The copies of one ProcessIo. Copy state is confined to the event loop;
// the counters are also read by Close's waiter.
struct ProcessIo::Copies {
  EventLoop* loop = &EventLoop::Get();
  Mutex mu;
  CondVar cv;
  int outputs_running GUARDED_BY(mu) = 0;
  int running GUARDED_BY(mu) = 0;
  std::vector<std::shared_ptr<Copy>> all GUARDED_BY(mu);  // unfinished copies
  // Loop-confined: CloseAsync's continuation and its deadline.
  std::function<void()> drained;
  EventLoop::Token drain_timer = 0;

  // Runs fn on the loop and returns once it ran (inline when this is the
  // loop, or when the loop has stopped: then no handler runs any more).
  void OnLoop(const std::function<void()>& fn) {
    if (loop->InLoop()) return fn();
    auto ran = std::make_shared<Latch>();
    if (!loop->Post([&fn, ran] {
          fn();
          ran->Open();
        })) {
      return fn();
    }
    ran->Wait();
  }
  // On the loop: every copy stops now.
  void FinishAll();
  // On the loop: a copy finished; wakes Close and, once the output is
  // drained, CloseAsync's continuation.
  void Finished(const Copy* c, bool output);
};

// One byte stream, src -> dst, on the loop. Reads while dst takes what it
// reads; when dst is full (EAGAIN) it stops watching src and watches dst
// until the rest is written, so nothing is dropped and nothing is buffered
// beyond one read.
struct ProcessIo::Copy : std::enable_shared_from_this<Copy> {
  std::shared_ptr<Copies> owner;
  int src = -1, dst = -1;
  bool output = false, close_dst = false;
  // Loop-confined.
  EventLoop::Token src_tok = 0, dst_tok = 0;
  std::string pending;  // read, not yet written (dst was full)
  bool failing = false, finished = false;

  Status Begin() {
    auto self = shared_from_this();
    ASSIGN_OR_RETURN(src_tok,
                     owner->loop->Watch(src, EPOLLIN, [self](uint32_t) { self->OnSrc(); }));
    return OkStatus();
  }

  void OnSrc() {
    // Per thread (only loop threads copy), allocated on first use: a 64 KiB
    // thread_local array would sit in every thread's static TLS block, which
    // glibc zeroes at thread start, so each thread of the shim would carry it
    // resident.
    constexpr size_t kSize = 65536;
    static thread_local std::unique_ptr<char[]> buf;
    if (!buf) buf = std::make_unique_for_overwrite<char[]>(kSize);
    ssize_t n = ::read(src, buf.get(), kSize);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) return Finish();  // EOF, or EIO from a pty whose slave closed
    Write(buf.get(), static_cast<size_t>(n));
  }

  // Writes data[0, n) to dst; the part dst cannot take now goes to
  // `pending` and src is paused until dst is writable.
  void Write(const char* data, size_t n) {
    size_t off = 0;
    while (off < n) {
      ssize_t w = ::write(dst, data + off, n - off);
      if (w >= 0) {
        off += static_cast<size_t>(w);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pending.assign(data + off, n - off);
        return Pause();
      }
      if (!output) return Finish();  // the process closed its stdin
      // An output destination that fails (a full disk under file://) is
      // logged once and its data dropped while it fails: the process must
      // never block on its own stdout.
      if (!failing) {
        spdlog::error("stdio: writing output to {}: {}; dropping output while this lasts",
                      FdTarget(dst), std::strerror(errno));
        failing = true;
      }
      return;
    }
    if (failing) spdlog::info("stdio: writing output to {} works again", FdTarget(dst));
    failing = false;
  }

  void Pause() {
    owner->loop->Unwatch(std::exchange(src_tok, 0));
    auto self = shared_from_this();
    auto t = owner->loop->Watch(dst, EPOLLOUT, [self](uint32_t) { self->OnDst(); });
    if (!t.ok()) {
      spdlog::error("stdio: {}; stopping the copy to {}", t.status().ToString(), FdTarget(dst));
      return Finish();
    }
    dst_tok = *t;
  }

  void OnDst() {
    std::string rest = std::move(pending);
    pending.clear();
    owner->loop->Unwatch(std::exchange(dst_tok, 0));
    Write(rest.data(), rest.size());
    if (finished || dst_tok != 0) return;  // still full, or gone
    if (Status st = Begin(); !st.ok()) {
      spdlog::error("stdio: {}; stopping the copy", st.ToString());
      Finish();
    }
  }

  void Finish() {
    if (finished) return;
    finished = true;
    owner->loop->Unwatch(std::exchange(src_tok, 0));
    owner->loop->Unwatch(std::exchange(dst_tok, 0));
    if (close_dst) ::close(dst);
    owner->Finished(this, output);
  }
};

void ProcessIo::Copies::FinishAll() {
  std::vector<std::shared_ptr<Copy>> copies;
  {
    MutexLock l(&mu);
    copies = all;
  }
  for (auto& c : copies) c->Finish();
}

void ProcessIo::Copies::Finished(const Copy* c, bool output) {
  bool drained_now = false;
  {
    MutexLock l(&mu);
    std::erase_if(all, [c](const std::shared_ptr<Copy>& x) { return x.get() == c; });
    --running;
    if (output) drained_now = --outputs_running == 0;
    cv.SignalAll();
  }
  if (drained_now && drained) {
    loop->Cancel(std::exchange(drain_timer, 0));
    std::exchange(drained, nullptr)();
  }
}

ProcessIo::ProcessIo() : copies_(std::make_shared<Copies>()) {}

ProcessIo::~ProcessIo() { Close(std::chrono::milliseconds(0)); }

void ProcessIo::StartCopy(int src, int dst, bool is_output, bool close_dst_at_end) {
  SetNonblock(src);
  SetNonblock(dst);
  auto c = std::make_shared<Copy>();
  c->owner = copies_;
  c->src = src;
  c->dst = dst;
  c->output = is_output;
  c->close_dst = close_dst_at_end;
  {
    MutexLock l(&copies_->mu);
    copies_->all.push_back(c);
    ++copies_->running;
    if (is_output) ++copies_->outputs_running;
  }
  // Begin and a failed Begin's Finish on the loop: a Finish elsewhere could
  // run beside a handler.
  copies_->OnLoop([c] {
    if (Status st = c->Begin(); !st.ok()) {
      spdlog::error("stdio: {}", st.ToString());
      c->Finish();
    }
  });
}

Status ProcessIo::Started() {
  child_in_.reset();
  child_out_.reset();
  child_err_.reset();
  if (terminal_) {
    // The runtime has connected and sent the master by now.
    ASSIGN_OR_RETURN(UniqueFd master, console_->ReceiveMaster());
    console_.reset();
    int master_out = ::fcntl(master.get(), F_DUPFD_CLOEXEC, 0);
    int master_in = ::fcntl(master.get(), F_DUPFD_CLOEXEC, 0);
    {
      MutexLock l(&master_mu_);
      master_ = std::move(master);
    }
    if (out_dst_) {
      // master_out is closed with the process: keep it owned.
      keep_.emplace_back(master_out);
      StartCopy(master_out, out_dst_.release(), true, true);
    } else {
      ::close(master_out);
    }
    if (stdin_src_) {
      StartCopy(stdin_src_.get(), master_in, false, true);
    } else {
      ::close(master_in);
    }
    return OkStatus();
  }
  if (out_r_) StartCopy(out_r_.get(), out_dst_.release(), true, true);
  if (err_r_) StartCopy(err_r_.get(), err_dst_.release(), true, true);
  if (stdin_src_) StartCopy(stdin_src_.get(), stdin_pipe_w_.release(), false, true);
  return OkStatus();
}

Status ProcessIo::Resize(uint32_t width, uint32_t height) {
  MutexLock l(&master_mu_);
  if (!master_) return FailedPreconditionError("process has no terminal");
  winsize ws{};
  ws.ws_col = static_cast<unsigned short>(width);
  ws.ws_row = static_cast<unsigned short>(height);
  if (::ioctl(master_.get(), TIOCSWINSZ, &ws) != 0) return ErrnoError(errno, "TIOCSWINSZ");
  return OkStatus();
}

void ProcessIo::CloseStdin() {
  if (stdin_path_.empty() || closed_) return;
  // A writer that comes and goes: with no other writer left, the copier
  // (running or still to start) drains the fifo, then sees EOF. Our read end
  // is open, so this open neither blocks nor fails with ENXIO.
  UniqueFd nudge(::open(stdin_path_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
}

void ProcessIo::Close(std::chrono::milliseconds timeout) {
  if (closed_.exchange(true)) return;
  Copies* c = copies_.get();
  if (timeout.count() > 0 && c->loop->InLoop()) {
    spdlog::error("stdio: a blocking Close on the event loop; not draining");
    timeout = std::chrono::milliseconds(0);
  }
  {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    MutexLock l(&c->mu);
    while (c->outputs_running > 0) {
      if (!c->cv.WaitUntil(&c->mu, deadline)) break;
    }
    if (c->outputs_running > 0 && timeout.count() > 0)
      spdlog::warn("stdio: output still open after {}ms; closing", timeout.count());
  }
  c->OnLoop([c] { c->FinishAll(); });
  CloseFds();
}

void ProcessIo::CloseAsync(std::chrono::milliseconds timeout, std::function<void()> done) {
  if (closed_) return done();
  auto self = shared_from_this();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto finish = [self, deadline, done = std::move(done)] {
    self->AwaitFifoReaders(deadline, [self, done] {
      self->Close(std::chrono::milliseconds(0));  // on the loop: inline
      done();
    });
  };
  auto start = [self, timeout, finish = std::move(finish)]() mutable {
    Copies* c = self->copies_.get();
    bool drained;
    {
      MutexLock l(&c->mu);
      drained = c->outputs_running == 0;
    }
    if (drained || c->drained) return finish();
    c->drained = std::move(finish);
    c->drain_timer = c->loop->After(timeout, [c, timeout] {
      c->drain_timer = 0;
      if (!c->drained) return;
      spdlog::warn("stdio: output still open after {}ms; closing", timeout.count());
      std::exchange(c->drained, nullptr)();
    });
  };
  EventLoop* loop = copies_->loop;
  if (loop->InLoop()) return start();
  auto shared_start = std::make_shared<decltype(start)>(std::move(start));
  if (!loop->Post([shared_start] { (*shared_start)(); })) (*shared_start)();
}

void ProcessIo::AwaitFifoReaders(std::chrono::steady_clock::time_point deadline,
                                 std::function<void()> then) {
  bool waiting;
  {
    MutexLock l(&fifos_mu_);
    std::erase_if(output_fifos_, [](OutputFifo& f) {
      f.ours.reset();  // from here on only the client's reader counts
      return FifoTaken(f.hold.get(), &f.client_seen);
    });
    waiting = !output_fifos_.empty() && !closed_ && std::chrono::steady_clock::now() < deadline;
  }
  if (!waiting) return then();
  auto self = shared_from_this();
  copies_->loop->After(kReaderPoll, [self, deadline, then = std::move(then)]() mutable {
    self->AwaitFifoReaders(deadline, std::move(then));
  });
}

void ProcessIo::CloseFds() {
  // Every fd goes now, not with the object: a client waits for EOF on its
  // fifos (a process that failed to start never had copies to close them).
  child_in_.reset();
  child_out_.reset();
  child_err_.reset();
  stdin_src_.reset();
  stdin_pipe_w_.reset();
  out_r_.reset();
  err_r_.reset();
  out_dst_.reset();
  err_dst_.reset();
  keep_.clear();
  {
    MutexLock l(&fifos_mu_);
    output_fifos_.clear();
  }
  {
    MutexLock l(&master_mu_);
    master_.reset();
  }
  if (logger_pid_ > 0) {
    // The logger exits at EOF on its pipes; the Reaper collects it.
    Reaper::Get().Disown(logger_pid_);
    logger_pid_ = -1;
  }
  console_.reset();
}

}  // namespace runhcs::stdio
