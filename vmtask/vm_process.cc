#include "vmtask/vm_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string_view>

#include "base/event_loop.h"
#include "base/io.h"
#include "base/log.h"
#include "stdio/console.h"

namespace runhcs::vmtask {

namespace apb = ::runhcs::agent::v1;

// The relays of one started process, between the agent's streams and
// ProcessIo's pipes. No thread waits for them: each agent call is async, its
// answer is taken over to the event loop (the client's reader must never
// block on a write of its own), and every field below is touched only there.
struct VmProcess::Pumps : std::enable_shared_from_this<Pumps> {
  std::shared_ptr<uvm::AgentClient> agent;
  apb::ProcessId id;
  ExitCallback on_exit;
  int outputs_left = 0;
  std::optional<uint32_t> exit_status;
  bool exit_reported = false;
  // stdin
  UniqueFd in;
  EventLoop::Token in_tok = 0;
  bool in_stopped = false;

  static void OnLoop(std::function<void()> fn) {
    if (EventLoop::Get().InLoop()) return fn();
    EventLoop::Get().Post(std::move(fn));
  }

  // Output: ReadStream until EOF (or the agent is gone), into `fd`; a
  // reader of `fd` that went away does not stop the draining.
  struct Out : std::enable_shared_from_this<Out> {
    std::shared_ptr<Pumps> pumps;
    apb::ReadStreamRequest req;
    UniqueFd fd;
    std::string rest;  // read, not yet written: fd was full
    EventLoop::Token tok = 0;

    void Next() {
      auto self = shared_from_this();
      pumps->agent->ReadStreamAsync(
          req,
          [self](Status st, apb::ReadStreamResponse r) {
            OnLoop([self, st = std::move(st), r = std::move(r)] { self->OnData(st, r); });
          },
          uvm::AgentClient::Within(uvm::AgentClient::kRelayPoll));
    }
    void OnData(const Status& st, const apb::ReadStreamResponse& r) {
      if (st.code() == Code::kDeadlineExceeded) return Next();  // a long poll ran out
      if (!st.ok() || r.eof()) return Finish();
      Write(r.data());
    }
    void Write(std::string_view data) {
      while (fd && !data.empty()) {
        ssize_t w = ::write(fd.get(), data.data(), data.size());
        if (w >= 0) {
          data.remove_prefix(static_cast<size_t>(w));
        } else if (errno == EAGAIN) {
          rest.assign(data);
          auto self = shared_from_this();
          auto t = EventLoop::Get().Watch(fd.get(), EPOLLOUT, [self](uint32_t) {
            EventLoop::Get().Unwatch(std::exchange(self->tok, 0));
            std::string r = std::move(self->rest);
            self->rest.clear();
            self->Write(r);
          });
          if (t.ok()) {
            tok = *t;
            return;
          }
          fd.reset();  // cannot wait for it: drain without it
        } else if (errno != EINTR) {
          fd.reset();  // the reader is gone: drain anyway
        }
      }
      Next();
    }
    void Finish() {
      if (fd) ::shutdown(fd.get(), SHUT_WR);  // a socket (terminal) has other fds open
      fd.reset();                             // EOF for ProcessIo's copy
      pumps->OutputDone();
    }
  };

  void StartOutput(UniqueFd fd, apb::ReadStreamRequest::Stream which) {
    auto o = std::make_shared<Out>();
    o->pumps = shared_from_this();
    *o->req.mutable_id() = id;
    o->req.set_stream(which);
    if (fd) ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
    o->fd = std::move(fd);
    ++outputs_left;
    o->Next();
  }
  void OutputDone() {
    --outputs_left;
    MaybeExit();
  }

  // stdin: the pipe (or terminal socket) into WriteStdin until EOF, then
  // CloseStdin. One write in flight at a time; stops, without closing the
  // guest's stdin, when the process is gone or a write fails.
  void StartStdin(UniqueFd fd) {
    ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
    in = std::move(fd);
    WatchStdin();
  }
  void WatchStdin() {
    if (in_stopped) return;
    auto self = shared_from_this();
    auto t = EventLoop::Get().Watch(in.get(), EPOLLIN, [self](uint32_t) { self->OnStdin(); });
    if (!t.ok()) {
      spdlog::error("{}/{}: stdin not relayed: {}", id.container_id(), id.exec_id(),
                    t.status().ToString());
      return StopStdin();
    }
    in_tok = *t;
  }
  void OnStdin() {
    char buf[32768];
    ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    StopWatchingStdin();
    if (n <= 0) {
      agent->CloseStdinAsync(id, [](Status, apb::Empty) {});
      return StopStdin();
    }
    apb::WriteStdinRequest w;
    *w.mutable_id() = id;
    w.set_data(buf, static_cast<size_t>(n));
    auto self = shared_from_this();
    agent->WriteStdinAsync(w, [self](Status st, apb::WriteStdinResponse) {
      OnLoop([self, ok = st.ok()] { ok ? self->WatchStdin() : self->StopStdin(); });
    });
  }
  void StopWatchingStdin() { EventLoop::Get().Unwatch(std::exchange(in_tok, 0)); }
  void StopStdin() {
    in_stopped = true;
    StopWatchingStdin();
    in.reset();
  }

  void StartWait() {
    apb::WaitProcessRequest wr;
    *wr.mutable_id() = id;
    auto self = shared_from_this();
    agent->WaitProcessAsync(
        wr,
        [self](Status st, apb::WaitProcessResponse r) {
          OnLoop([self, st = std::move(st), r = std::move(r)] { self->OnWait(st, r); });
        },
        uvm::AgentClient::Within(uvm::AgentClient::kRelayPoll));
  }
  void OnWait(const Status& st, const apb::WaitProcessResponse& r) {
    if (st.code() == Code::kDeadlineExceeded) return StartWait();  // a long poll ran out
    exit_status = st.ok() ? static_cast<uint32_t>(r.exit_status()) : kVmGoneStatus;
    if (!st.ok())
      spdlog::warn("{}/{}: {}; exit status {}", id.container_id(), id.exec_id(), st.ToString(),
                   *exit_status);
    MaybeExit();
  }
  // Output first: the exit is reported after everything the process wrote.
  void MaybeExit() {
    if (exit_reported || !exit_status || outputs_left > 0) return;
    exit_reported = true;
    StopStdin();
    if (on_exit) std::exchange(on_exit, nullptr)(*exit_status);
  }
};

VmProcess::VmProcess(std::shared_ptr<uvm::AgentClient> agent, std::string container_id,
                     std::string exec_id, std::string process_json, exec::Stdio stdio,
                     stdio::IoContext ctx, std::unique_ptr<stdio::ProcessIo> io)
    : agent_(std::move(agent)),
      container_id_(std::move(container_id)),
      exec_id_(std::move(exec_id)),
      process_json_(std::move(process_json)),
      stdio_(std::move(stdio)),
      ctx_(std::move(ctx)),
      io_(std::move(io)) {}

VmProcess::~VmProcess() {
  std::shared_ptr<Pumps> pumps;
  {
    MutexLock l(&pumps_mu_);
    pumps = pumps_;
  }
  if (pumps) Pumps::OnLoop([pumps] { pumps->StopStdin(); });
  if (auto io = io_.Get()) io->Close(std::chrono::milliseconds(0));
}

StatusOr<uint32_t> VmProcess::Start(ExitCallback on_exit) {
  std::shared_ptr<stdio::ProcessIo> io = io_.Get();
  if (!io) {
    ASSIGN_OR_RETURN(io, stdio::ProcessIo::Open(stdio_, ctx_));
    io_.Set(io);
  }
  UniqueFd out_w, err_w, in_r;
  if (stdio_.terminal) {
    // ProcessIo waits for a runtime to hand it a pty master. The terminal
    // is in the guest; hand it one end of a socket pair instead and carry
    // the guest pty's bytes on the other. (No pty here: no second line
    // discipline between the client and the guest's terminal.)
    int sp[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0)
      return ErrnoError(errno, "socketpair");
    UniqueFd near(sp[0]), far(sp[1]);
    ASSIGN_OR_RETURN(UniqueFd conn, ConnectUnix({io->console_socket(), false}));
    RETURN_IF_ERROR(stdio::SendFd(conn.get(), near.get()));
    out_w.reset(::fcntl(far.get(), F_DUPFD_CLOEXEC, 0));
    in_r = std::move(far);
  } else {
    // Our copies of the process's ends of ProcessIo's pipes: the agent's
    // streams are the process's stdio from ProcessIo's point of view.
    out_w.reset(::fcntl(io->child_stdout(), F_DUPFD_CLOEXEC, 0));
    err_w.reset(::fcntl(io->child_stderr(), F_DUPFD_CLOEXEC, 0));
    if (io->child_stdin() >= 0) in_r.reset(::fcntl(io->child_stdin(), F_DUPFD_CLOEXEC, 0));
  }
  apb::ProcessId id;
  id.set_container_id(container_id_);
  id.set_exec_id(exec_id_);
  apb::StartResponse started;
  if (exec_id_.empty()) {
    apb::StartContainerRequest r;
    r.set_container_id(container_id_);
    RETURN_IF_ERROR(agent_->StartContainer(r, &started));
  } else {
    apb::ExecProcessRequest r;
    *r.mutable_id() = id;
    r.set_process_json(process_json_);
    r.set_stdin(in_r.get() >= 0);
    r.set_terminal(stdio_.terminal);
    RETURN_IF_ERROR(agent_->ExecProcess(r, &started));
  }
  Status ios = io->Started();
  if (!ios.ok()) spdlog::warn("{}/{}: stdio: {}", container_id_, exec_id_, ios.ToString());

  auto p = std::make_shared<Pumps>();
  p->agent = agent_;
  p->id = id;
  p->on_exit = std::move(on_exit);
  {
    MutexLock l(&pumps_mu_);
    pumps_ = p;
  }
  // Until EOF, which ProcessIo gives once CloseStdin came and the fifo is
  // drained (whenever CloseStdin came).
  Pumps::OnLoop([p, out_w = std::make_shared<UniqueFd>(std::move(out_w)),
                 err_w = std::make_shared<UniqueFd>(std::move(err_w)),
                 in_r = std::make_shared<UniqueFd>(std::move(in_r))] {
    p->StartOutput(std::move(*out_w), apb::ReadStreamRequest::STDOUT);
    p->StartOutput(std::move(*err_w), apb::ReadStreamRequest::STDERR);
    if (*in_r) p->StartStdin(std::move(*in_r));
    p->StartWait();
  });
  return started.pid();
}

Status VmProcess::Signal(uint32_t signal) {
  apb::SignalProcessRequest r;
  r.mutable_id()->set_container_id(container_id_);
  r.mutable_id()->set_exec_id(exec_id_);
  r.set_signal(signal);
  apb::Empty e;
  return agent_->SignalProcess(r, &e);
}

Status VmProcess::ResizePty(uint32_t width, uint32_t height) {
  if (!stdio_.terminal) {
    return FailedPreconditionError("process {}/{} has no terminal", container_id_, exec_id_);
  }
  apb::ResizeTtyRequest r;
  r.mutable_id()->set_container_id(container_id_);
  r.mutable_id()->set_exec_id(exec_id_);
  r.set_width(width);
  r.set_height(height);
  apb::Empty e;
  return agent_->ResizeTty(r, &e);
}

void VmProcess::CloseStdin() {
  // Our stdin pump sees EOF once the fifo is drained and closes the guest's.
  io_.CloseStdin();
}

void VmProcess::Terminate() { (void)Signal(SIGKILL); }

void VmProcess::ReleaseIo(std::function<void()> done) { io_.ReleaseAtExit(std::move(done)); }

}  // namespace runhcs::vmtask
