#include "proctask/runtime_process.h"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "base/io.h"
#include "base/log.h"
#include "base/reaper.h"
#include "base/thread_group.h"

namespace runhcs::proctask {

std::unique_ptr<RuntimeProcess> RuntimeProcess::ForInit(std::shared_ptr<oci::Runtime> runtime,
                                                        std::string id, pid_t pid,
                                                        std::unique_ptr<stdio::ProcessIo> io,
                                                        Reaper::Expectation expect,
                                                        bool kill_all_on_exit) {
  auto p = std::make_unique<RuntimeProcess>();
  p->runtime_ = std::move(runtime);
  p->id_ = std::move(id);
  p->init_ = true;
  p->kill_all_on_exit_ = kill_all_on_exit;
  p->pid_ = pid;
  p->io_.Set(std::move(io));
  p->init_expect_ = std::move(expect);
  p->OpenPidfd();
  return p;
}

std::unique_ptr<RuntimeProcess> RuntimeProcess::ForExec(std::shared_ptr<oci::Runtime> runtime,
                                                        std::string id, std::string exec_id,
                                                        std::string bundle,
                                                        std::string process_json, exec::Stdio stdio,
                                                        stdio::IoContext ctx) {
  auto p = std::make_unique<RuntimeProcess>();
  p->runtime_ = std::move(runtime);
  p->id_ = std::move(id);
  p->exec_id_ = std::move(exec_id);
  p->bundle_ = std::move(bundle);
  p->process_json_ = std::move(process_json);
  p->stdio_ = std::move(stdio);
  p->ctx_ = std::move(ctx);
  return p;
}

RuntimeProcess::~RuntimeProcess() {
  if (pid_ > 0) Reaper::Get().Unwatch(pid_);
  if (auto io = io_.Get()) io->Close(std::chrono::milliseconds(0));
}

void RuntimeProcess::OpenPidfd() {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  if (fd >= 0) pidfd_.reset(fd);
}

StatusOr<uint32_t> RuntimeProcess::Start(ExitCallback on_exit) {
  if (!init_) return StartExec(std::move(on_exit));
  Reaper::Get().Watch(pid_, [cb = std::move(on_exit), runtime = runtime_, id = id_,
                             kill_all = kill_all_on_exit_](int status) {
    if (!kill_all) return cb(static_cast<uint32_t>(status));
    // What is left of the container dies before its stdio drains (it may
    // hold stdout open). The runtime call blocks: not on the loop.
    auto kill = [cb, runtime, id, status] {
      (void)runtime->Kill(id, SIGKILL, /*all=*/true);
      cb(static_cast<uint32_t>(status));
    };
    if (Status st = ThreadGroup::Get().Spawn("killall-" + id, kill); !st.ok()) {
      spdlog::error("{}; killing on the event loop", st.ToString());
      kill();
    }
  });
  init_expect_.Release();
  Status st = runtime_->Start(id_);
  if (!st.ok()) {
    Reaper::Get().Unwatch(pid_);
    return st;
  }
  return static_cast<uint32_t>(pid_);
}

StatusOr<uint32_t> RuntimeProcess::StartExec(ExitCallback on_exit) {
  ASSIGN_OR_RETURN(std::shared_ptr<stdio::ProcessIo> io, stdio::ProcessIo::Open(stdio_, ctx_));
  io_.Set(io);
  auto expect = Reaper::Get().Expect();
  std::string spec_path = bundle_ + "/.exec-" + exec_id_ + ".json";
  std::string pid_path = bundle_ + "/.exec-" + exec_id_ + ".pid";
  Status st = WriteFileAtomic(spec_path, process_json_, 0600);
  if (st.ok()) {
    st = runtime_->Exec(id_, spec_path, pid_path, io->console_socket(),
                        {io->child_stdin(), io->child_stdout(), io->child_stderr()});
  }
  ::unlink(spec_path.c_str());
  if (!st.ok()) {
    io->Close(std::chrono::milliseconds(0));
    ::unlink(pid_path.c_str());
    return st;
  }
  st = io->Started();
  auto pid = ReadPidFile(pid_path, fmt::format("exec {:?}", exec_id_));
  ::unlink(pid_path.c_str());
  if (!pid.ok()) return pid.status();
  if (!st.ok()) {
    // Its stdio never came (a terminal the runtime did not send): a process
    // nobody can talk to is not started. Killed, and its exit reaped here
    // (as the agent does in a VM).
    ::kill(*pid, SIGKILL);
    Reaper::Get().Watch(*pid, [](int) {});
    io->Close(std::chrono::milliseconds(0));
    return st.Wrap(fmt::format("exec {:?} in {}: stdio", exec_id_, id_));
  }
  pid_ = *pid;
  OpenPidfd();
  // An exec that already ended was reaped into the Reaper's unclaimed
  // exits; Watch delivers it.
  Reaper::Get().Watch(pid_,
                      [cb = std::move(on_exit)](int status) { cb(static_cast<uint32_t>(status)); });
  return static_cast<uint32_t>(pid_);
}

Status RuntimeProcess::Signal(uint32_t signal) {
  int rc;
  if (pidfd_) {
    rc = static_cast<int>(
        ::syscall(SYS_pidfd_send_signal, pidfd_.get(), static_cast<int>(signal), nullptr, 0));
  } else {
    rc = ::kill(pid_, static_cast<int>(signal));
  }
  if (rc != 0) {
    if (errno == ESRCH) return NotFoundError("process {} already exited", pid_);
    return ErrnoError(errno, fmt::format("signal {} to pid {}", signal, pid_));
  }
  return OkStatus();
}

Status RuntimeProcess::ResizePty(uint32_t width, uint32_t height) {
  auto io = io_.Get();
  if (!io) return FailedPreconditionError("process has no stdio yet");
  return io->Resize(width, height);
}

void RuntimeProcess::CloseStdin() { io_.CloseStdin(); }

void RuntimeProcess::Terminate() { (void)Signal(SIGKILL); }

void RuntimeProcess::ReleaseIo(std::function<void()> done) { io_.ReleaseAtExit(std::move(done)); }

}  // namespace runhcs::proctask
