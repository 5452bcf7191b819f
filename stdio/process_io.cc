#include "stdio/process_io.h"

#include "stdio/console.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
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

#include "base/io.h"
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

// Opens an output fifo for writing, with an extra read handle kept in
// `keep` so the writer never sees EPIPE and the open never blocks.
StatusOr<UniqueFd> OpenOutputFifo(const std::string& path, std::vector<UniqueFd>* keep) {
  UniqueFd r(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!r) return ErrnoError(errno, fmt::format("open fifo {}", path));
  UniqueFd w(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (!w) return ErrnoError(errno, fmt::format("open fifo {} for writing", path));
  keep->push_back(std::move(r));
  return w;
}

// Waits until fd is ready for `events` or cancel fires. False on cancel.
bool WaitFd(int fd, short events, int cancel_fd) {
  for (;;) {
    pollfd p[2] = {{fd, events, 0}, {cancel_fd, POLLIN, 0}};
    int n = ::poll(p, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (p[1].revents) return false;
    if (p[0].revents) return true;
  }
}

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
  io->cancel_out_.reset(::eventfd(0, EFD_CLOEXEC));
  io->cancel_in_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!io->cancel_out_ || !io->cancel_in_) return ErrnoError(errno, "eventfd");

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
      ASSIGN_OR_RETURN(io->out_dst_, OpenOutputFifo(out.path, &io->keep_));
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
      ASSIGN_OR_RETURN(dst, OpenOutputFifo(t.path, &io->keep_));
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

ProcessIo::~ProcessIo() { Close(std::chrono::milliseconds(0)); }

void ProcessIo::StartPump(int src, int dst, bool is_output, int cancel_fd, bool close_dst_at_end) {
  if (is_output) {
    MutexLock l(&mu_);
    ++outputs_running_;
  }
  SetNonblock(src);
  SetNonblock(dst);
  threads_.emplace_back([this, src, dst, is_output, cancel_fd, close_dst_at_end] {
    if (is_output) {
      CopyOutput(src, dst, cancel_fd);
    } else {
      CopyInput(src, dst, cancel_fd);
    }
    if (close_dst_at_end) ::close(dst);
    if (is_output) {
      MutexLock l(&mu_);
      --outputs_running_;
      cv_.SignalAll();
    }
  });
}

namespace {

// Writes all of buf[0, n) to nonblocking `dst`, waiting while it is full.
// 0 when done, -1 when `cancel_fd` fired, else the errno that failed it.
int WriteChunk(int dst, const char* buf, size_t n, int cancel_fd) {
  size_t off = 0;
  while (off < n) {
    ssize_t w = ::write(dst, buf + off, n - off);
    if (w >= 0) {
      off += static_cast<size_t>(w);
    } else if (errno == EAGAIN) {
      if (!WaitFd(dst, POLLOUT, cancel_fd)) return -1;
    } else if (errno != EINTR) {
      return errno;
    }
  }
  return 0;
}

// Copies `src` to EOF (or EIO from a pty whose slave closed) into `dst`,
// chunk by chunk; `on_error(errno)` decides whether a failed chunk ends the
// copy (true) or is dropped (false). Cancel ends it at once.
template <typename OnError, typename OnOk>
void CopyLoop(int src, int dst, int cancel_fd, OnError on_error, OnOk on_ok) {
  char buf[32768];
  for (;;) {
    if (!WaitFd(src, POLLIN, cancel_fd)) return;
    ssize_t n = ::read(src, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return;
    int err = WriteChunk(dst, buf, static_cast<size_t>(n), cancel_fd);
    if (err < 0) return;
    if (err > 0) {
      if (on_error(err)) return;
    } else {
      on_ok();
    }
  }
}

}  // namespace

// stdin: every byte, to EOF (every writer of the fifo gone), however slowly
// the process reads. Stops early only when the process closed its end
// (EPIPE/EIO) or Close() cancels.
void ProcessIo::CopyInput(int src, int dst, int cancel_fd) {
  CopyLoop(
      src, dst, cancel_fd, [](int) { return true; }, [] {});
}

// stdout/stderr to EOF. A destination that fails (a full disk under a
// file:// log) is logged once and its data dropped while it fails: the
// process must never block on its own stdout.
void ProcessIo::CopyOutput(int src, int dst, int cancel_fd) {
  bool failing = false;
  CopyLoop(
      src, dst, cancel_fd,
      [&](int err) {
        if (!failing) {
          spdlog::error("stdio: writing output to {}: {}; dropping output while this lasts",
                        FdTarget(dst), std::strerror(err));
          failing = true;
        }
        return false;
      },
      [&] {
        if (failing) spdlog::info("stdio: writing output to {} works again", FdTarget(dst));
        failing = false;
      });
}

Status ProcessIo::Started() {
  child_in_.reset();
  child_out_.reset();
  child_err_.reset();
  if (terminal_) {
    // The runtime has connected and sent the master by now.
    ASSIGN_OR_RETURN(master_, console_->ReceiveMaster());
    console_.reset();
    int master_out = ::fcntl(master_.get(), F_DUPFD_CLOEXEC, 0);
    int master_in = ::fcntl(master_.get(), F_DUPFD_CLOEXEC, 0);
    if (out_dst_) {
      StartPump(master_out, out_dst_.release(), true, cancel_out_.get(), true);
      // master_out is closed with the process: keep it owned.
      keep_.emplace_back(master_out);
    } else {
      ::close(master_out);
    }
    if (stdin_src_) {
      StartPump(stdin_src_.get(), master_in, false, cancel_in_.get(), true);
    } else {
      ::close(master_in);
    }
    return OkStatus();
  }
  if (out_r_) StartPump(out_r_.get(), out_dst_.release(), true, cancel_out_.get(), true);
  if (err_r_) StartPump(err_r_.get(), err_dst_.release(), true, cancel_out_.get(), true);
  if (stdin_src_)
    StartPump(stdin_src_.get(), stdin_pipe_w_.release(), false, cancel_in_.get(), true);
  return OkStatus();
}

Status ProcessIo::Resize(uint32_t width, uint32_t height) {
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
  {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    MutexLock l(&mu_);
    while (outputs_running_ > 0) {
      if (!cv_.WaitUntil(&mu_, deadline)) break;
    }
    if (outputs_running_ > 0)
      spdlog::warn("stdio: output still open after {}ms; closing", timeout.count());
  }
  uint64_t one = 1;
  (void)!::write(cancel_out_.get(), &one, sizeof one);
  (void)!::write(cancel_in_.get(), &one, sizeof one);
  for (auto& t : threads_) t.join();
  threads_.clear();
  // Every fd goes now, not with the object: a client waits for EOF on its
  // fifos (a process that failed to start never had copiers to close them).
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
  master_.reset();
  if (logger_pid_ > 0) {
    // The logger exits at EOF on its pipes; reap it without blocking us.
    pid_t pid = logger_pid_;
    std::thread([pid] { (void)Reaper::Get().Wait(pid); }).detach();
    logger_pid_ = -1;
  }
  console_.reset();
}

}  // namespace runhcs::stdio
