#include "pod/sandbox_task.h"

#include <atomic>

#include "base/log.h"
#include "base/thread_group.h"
#include "containerd/events/task.pb.h"
#include "events/publisher.h"
#include "exec/exec_events.h"
#include "proto/timestamp.h"

namespace runhcs::pod {

namespace {

// The fake init process: the VM's pid (1 without one), exits with 0 on any
// signal.
class SandboxProcess : public exec::Process {
 public:
  explicit SandboxProcess(uint32_t pid) : pid_(pid) {}
  StatusOr<uint32_t> Start(ExitCallback on_exit) override {
    on_exit_ = std::move(on_exit);
    return pid_;
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
  void ReleaseIo(std::function<void()> done) override { done(); }

 private:
  const uint32_t pid_;
  ExitCallback on_exit_;  // set by Start, before any Signal
  std::atomic<bool> signalled_{false};
};

}  // namespace

std::shared_ptr<SandboxTask> SandboxTask::Create(events::Publisher* publisher, std::string id,
                                                 std::string bundle,
                                                 std::shared_ptr<uvm::UtilityVm> host,
                                                 std::shared_ptr<void> with_vm) {
  auto t = std::make_shared<SandboxTask>(publisher, id, bundle, std::move(host));
  {
    MutexLock l(&t->mu_);
    t->with_vm_ = std::move(with_vm);
  }
  int vm_pid = t->host_ ? t->host_->pid() : 0;
  t->SetInit({id, "", std::move(bundle), {}},
             std::make_unique<SandboxProcess>(vm_pid > 0 ? static_cast<uint32_t>(vm_pid) : 1u));
  // A crashed VM must still end the task: watch it. (The normal way out:
  // containerd kills the fake init.) The watcher holds the VM, not the
  // task: the task may be dropped for the last time on it (by init's exit
  // path), so it is no member the destructor would have to join.
  if (t->host_) {
    std::weak_ptr<SandboxTask> weak = t;
    Status st = ThreadGroup::Get().Spawn(
        "vm-" + id, [weak, host = t->host_, id] { WatchVm(weak, host.get(), id); });
    if (!st.ok()) spdlog::error("sandbox {}: no watcher for its utility VM: {}", id, st.ToString());
  }
  return t;
}

SandboxTask::SandboxTask(events::Publisher* publisher, std::string id, std::string bundle,
                         std::shared_ptr<uvm::UtilityVm> host)
    : TaskBase(std::move(id), std::move(bundle), "", publisher), host_(std::move(host)) {}

SandboxTask::~SandboxTask() {
  // Never closed (no init exit): the VM still goes, and its watcher wakes.
  bool torn;
  {
    MutexLock l(&mu_);
    torn = torn_down_;
  }
  if (host_ && !torn) (void)host_->Close();
}

void SandboxTask::WatchVm(const std::weak_ptr<SandboxTask>& weak, uvm::UtilityVm* host,
                          const std::string& id) {
  Status st = host->Wait();
  auto t = weak.lock();
  if (!t) return;  // the task went first and closed the VM
  if (!st.ok()) spdlog::error("sandbox {}: utility VM exited: {}", id, st.ToString());
  // The VM came down; nothing else will end the fake init.
  t->init()->ForceExit(1);
}

void SandboxTask::Teardown() {
  if (host_) {
    Status st = host_->Close();
    if (!st.ok()) spdlog::error("sandbox {}: close utility VM: {}", id(), st.ToString());
  }
  std::function<void()> before;
  std::shared_ptr<void> with_vm;
  {
    MutexLock l(&mu_);
    torn_down_ = true;
    before = before_exit_;
    with_vm = std::move(with_vm_);
  }
  with_vm.reset();  // after the VM, outside the lock
  if (before) before();
}

StatusOr<std::unique_ptr<exec::Process>> SandboxTask::NewExecProcess(const task::ExecRequest&) {
  return NotImplementedError("pod sandbox task '{}' does not run execs", id());
}

Status SandboxTask::CreateExec(const task::ExecRequest&) {
  return NotImplementedError("pod sandbox task '{}' does not run execs", id());
}

std::vector<std::shared_ptr<exec::Exec>> SandboxTask::ListExecs() { return {init()}; }

Status SandboxTask::KillExec(std::string_view exec_id, uint32_t signal, bool all) {
  if (all && !exec_id.empty()) {
    return FailedPreconditionError("cannot signal all for non-empty exec: '{}'", exec_id);
  }
  ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
  return e->Kill(signal);
}

StatusOr<std::vector<task::ProcessDetails>> SandboxTask::Pids() {
  return std::vector<task::ProcessDetails>{{init()->pid(), init()->id()}};
}

Status SandboxTask::Pause() { return NotImplementedError("pause of pod sandbox '{}'", id()); }
Status SandboxTask::Resume() { return NotImplementedError("resume of pod sandbox '{}'", id()); }
Status SandboxTask::Update(const runhcs::wkt::Any&) {
  return NotImplementedError("update of pod sandbox '{}'", id());
}

StatusOr<runhcs::wkt::Any> SandboxTask::Stats() {
  if (!host_) return task::NotIsolatedError(id());
  ASSIGN_OR_RETURN(auto vm, host_->Stats());
  containerd::runhcs::stats::v1::Statistics s;
  *s.mutable_vm() = std::move(vm);
  *s.mutable_timestamp() = ToTimestamp(std::chrono::system_clock::now());
  return events::PackBare(s);
}

StatusOr<int32_t> SandboxTask::ExecInHost(
    const containerd::runhcs::v1::diag::ExecProcessRequest& req) {
  if (!host_) return task::NotIsolatedError(id());
  return host_->ExecInUvm(req);
}

std::string SandboxTask::DumpGuestStacks() {
  if (!host_) return "";
  auto stacks = host_->DumpStacks();
  if (!stacks.ok()) {
    spdlog::warn("sandbox {}: guest stacks: {}", id(), stacks.status().ToString());
    return "";
  }
  return *stacks;
}

Status SandboxTask::Share(const std::string& host_path, const std::string& vm_path,
                          bool read_only) {
  if (!host_) return task::NotIsolatedError(id());
  return host_->Share(host_path, vm_path, read_only);
}

}  // namespace runhcs::pod
