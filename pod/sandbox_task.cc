#include "pod/sandbox_task.h"

#include <atomic>

#include "base/log.h"
#include "base/proto_time.h"
#include "containerd/events/task.pb.h"
#include "events/publisher.h"
#include "exec/exec_events.h"

namespace runhcs::pod {

namespace {

// The fake init process: pid 1, exits with 0 on any signal.
class SandboxProcess : public exec::Process {
 public:
  StatusOr<uint32_t> Start(ExitCallback on_exit) override {
    on_exit_ = std::move(on_exit);
    return 1u;
  }
  Status Signal(uint32_t) override {
    if (signalled_.exchange(true)) return NotFoundError("sandbox init already exited");
    on_exit_(0);
    return OkStatus();
  }
  Status ResizePty(uint32_t, uint32_t) override {
    return FailedPreconditionError("the pod sandbox has no terminal");
  }
  void CloseStdin() override {}
  void Terminate() override { signalled_ = true; }
  void ReleaseIo() override {}

 private:
  ExitCallback on_exit_;  // set by Start, before any Signal
  std::atomic<bool> signalled_{false};
};

constexpr auto kDeleteWaitForClose = std::chrono::seconds(30);

}  // namespace

std::unique_ptr<SandboxTask> SandboxTask::Create(events::Publisher* publisher, std::string id,
                                                 std::string bundle,
                                                 std::shared_ptr<uvm::UtilityVm> host) {
  return std::make_unique<SandboxTask>(publisher, std::move(id), std::move(bundle),
                                       std::move(host));
}

SandboxTask::SandboxTask(events::Publisher* publisher, std::string id, std::string bundle,
                         std::shared_ptr<uvm::UtilityVm> host)
    : publisher_(publisher),
      id_(id),
      host_(std::move(host)),
      init_(exec::ProcessExec::Create({id, "", std::move(bundle), {}},
                                      std::make_unique<SandboxProcess>(), publisher)) {
  // A crashed VM must still end the task: watch it.
  if (host_) host_waiter_ = std::thread([this] { WaitParentExit(); });
  // The normal way out: containerd kills the fake init.
  init_waiter_ = std::thread([this] { WaitInitExit(); });
}

SandboxTask::~SandboxTask() {
  init_->ForceExit(1);
  Close();
  if (init_waiter_.joinable()) init_waiter_.join();
  if (host_waiter_.joinable()) host_waiter_.join();
}

void SandboxTask::WaitInitExit() {
  (void)init_->Wait();
  Close();
}

void SandboxTask::WaitParentExit() {
  Status st = host_->Wait();
  if (!st.ok()) spdlog::error("sandbox {}: utility VM exited: {}", id_, st.ToString());
  // The VM came down; nothing else will end the fake init.
  init_->ForceExit(1);
  Close();
}

void SandboxTask::Close() {
  bool first;
  {
    MutexLock l(&mu_);
    first = !closing_;
    closing_ = true;
  }
  if (!first) {
    closed_.Wait();  // another caller is closing: return once it is done
    return;
  }
  if (host_) {
    Status st = host_->Close();
    if (!st.ok()) spdlog::error("sandbox {}: close utility VM: {}", id_, st.ToString());
  }
  std::function<void()> before;
  {
    MutexLock l(&mu_);
    before = before_exit_;
  }
  if (before) before();
  publisher_->Publish(exec::ExitEvent(init_->status(), init_->id()));
  closed_.Open();
}

Status SandboxTask::CreateExec(const task::ExecRequest&) {
  return NotImplementedError("pod sandbox task '{}' does not run execs", id_);
}

StatusOr<std::shared_ptr<exec::Exec>> SandboxTask::GetExec(std::string_view exec_id) {
  if (exec_id.empty()) return std::shared_ptr<exec::Exec>(init_);
  return NotFoundError("exec: '{}' in task: '{}' not found", exec_id, id_);
}

std::vector<std::shared_ptr<exec::Exec>> SandboxTask::ListExecs() { return {init_}; }

Status SandboxTask::KillExec(std::string_view exec_id, uint32_t signal, bool all) {
  if (all && !exec_id.empty()) {
    return FailedPreconditionError("cannot signal all for non-empty exec: '{}'", exec_id);
  }
  ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
  return e->Kill(signal);
}

StatusOr<exec::ExecStatus> SandboxTask::DeleteExec(std::string_view exec_id) {
  ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
  switch (exec::State st = e->state()) {
    case exec::State::kCreated:
      e->ForceExit(0);
      break;
    case exec::State::kRunning:
      return exec::InvalidStateError(exec_id, id_, exec::StateName(st), "delete");
    case exec::State::kExited:
      break;
  }
  if (!closed_.Wait(std::chrono::steady_clock::now() + kDeleteWaitForClose)) {
    return DeadlineExceededError("task '{}' did not close within {}s", id_,
                                 kDeleteWaitForClose.count());
  }
  exec::ExecStatus status = e->status();
  publisher_->Publish(exec::DeleteEvent(status));
  return status;
}

StatusOr<std::vector<task::ProcessDetails>> SandboxTask::Pids() {
  return std::vector<task::ProcessDetails>{{init_->pid(), init_->id()}};
}

StatusOr<exec::ExecStatus> SandboxTask::Wait(exec::Deadline deadline) {
  if (!closed_.Wait(deadline)) return DeadlineExceededError("wait for task '{}'", id_);
  return init_->status();
}

Status SandboxTask::Pause() { return NotImplementedError("pause of pod sandbox '{}'", id_); }
Status SandboxTask::Resume() { return NotImplementedError("resume of pod sandbox '{}'", id_); }
Status SandboxTask::Update(const runhcs::wkt::Any&) {
  return NotImplementedError("update of pod sandbox '{}'", id_);
}

StatusOr<runhcs::wkt::Any> SandboxTask::Stats() {
  if (!host_) return task::NotIsolatedError(id_);
  ASSIGN_OR_RETURN(auto vm, host_->Stats());
  containerd::runhcs::stats::v1::Statistics s;
  *s.mutable_vm() = std::move(vm);
  *s.mutable_timestamp() = ToTimestamp(std::chrono::system_clock::now());
  return events::PackBare(s);
}

StatusOr<int32_t> SandboxTask::ExecInHost(
    const containerd::runhcs::v1::diag::ExecProcessRequest& req) {
  if (!host_) return task::NotIsolatedError(id_);
  return host_->ExecInUvm(req);
}

std::string SandboxTask::DumpGuestStacks() {
  if (!host_) return "";
  auto stacks = host_->DumpStacks();
  if (!stacks.ok()) {
    spdlog::warn("sandbox {}: guest stacks: {}", id_, stacks.status().ToString());
    return "";
  }
  return *stacks;
}

Status SandboxTask::Share(const std::string& host_path, const std::string& vm_path,
                          bool read_only) {
  if (!host_) return task::NotIsolatedError(id_);
  return host_->Share(host_path, vm_path, read_only);
}

}  // namespace runhcs::pod
