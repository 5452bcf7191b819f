#include "vmtask/vm_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "base/io.h"
#include "base/latch.h"
#include "base/log.h"
#include "stdio/console.h"

namespace runhcs::vmtask {

namespace apb = ::runhcs::agent::v1;

namespace {
constexpr auto kIoDrainTimeout = std::chrono::seconds(2);
}  // namespace

struct VmProcess::Pumps {
  std::shared_ptr<uvm::AgentClient> agent;
  apb::ProcessId id;
  UniqueFd stop;  // eventfd: ends the stdin pump
  Latch out_done, err_done;
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
  if (pumps) {
    uint64_t one = 1;
    (void)!::write(pumps->stop.get(), &one, sizeof one);
  }
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
  p->stop.reset(::eventfd(0, EFD_CLOEXEC));
  {
    MutexLock l(&pumps_mu_);
    pumps_ = p;
  }
  auto pump_out = [p](UniqueFd fd, apb::ReadStreamRequest::Stream which, Latch* done) {
    p->agent->RelayOutput(p->id, which, fd.get());
    if (fd) ::shutdown(fd.get(), SHUT_WR);  // a socket (terminal) has other fds open
    fd.reset();                             // EOF for ProcessIo's copier
    done->Open();
  };
  std::thread(pump_out, std::move(out_w), apb::ReadStreamRequest::STDOUT, &p->out_done).detach();
  std::thread(pump_out, std::move(err_w), apb::ReadStreamRequest::STDERR, &p->err_done).detach();
  if (in_r.get() >= 0) {
    // Until EOF, which ProcessIo gives once CloseStdin came and the fifo is
    // drained (whenever CloseStdin came).
    std::thread([p, fd = std::move(in_r)] {
      p->agent->RelayStdin(p->id, fd.get(), p->stop.get());
    }).detach();
  }
  std::thread([p, cb = std::move(on_exit)] {
    auto st = p->agent->WaitExit(p->id);
    uint32_t status = st.ok() ? static_cast<uint32_t>(*st) : kVmGoneStatus;
    if (!st.ok())
      spdlog::warn("{}/{}: {}; exit status {}", p->id.container_id(), p->id.exec_id(),
                   st.status().ToString(), status);
    // Output first: the exit event follows everything the process wrote.
    p->out_done.Wait();
    p->err_done.Wait();
    uint64_t one = 1;
    (void)!::write(p->stop.get(), &one, sizeof one);
    cb(status);
  }).detach();
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

void VmProcess::ReleaseIo() {
  if (auto io = io_.Get()) io->Close(kIoDrainTimeout);
}

}  // namespace runhcs::vmtask
