#include "uvm/vm_task.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "base/io.h"
#include "base/log.h"
#include "base/proto_time.h"
#include "base/sha256.h"
#include "containerd/events/task.pb.h"
#include "exec/exec_events.h"
#include "oci/mounts.h"
#include "runhcs/stats.pb.h"
#include "task/exec_set.h"
#include "uvm/vm_process.h"

namespace runhcs::uvm {

namespace {

constexpr auto kExecsDieWithInit = std::chrono::seconds(5);
constexpr auto kDeleteWaitForClose = std::chrono::seconds(60);
constexpr char kGuestRootfs[] = "/run/runhcs/rootfs/";

}  // namespace

std::string VmTask::VmStateDir(const std::string& ns, const std::string& id) {
  return "/run/runhcs/vm/" + Sha256Hex(ns + "/" + id).substr(0, 24);
}

namespace {

// What every VM task needs before the VM: the spec, the rootfs on the host
// (mounted when containerd sent mounts) and the stdio, opened first (a client
// that writes its stdin and closes the fifo before anyone has it open for
// reading loses the data: the fifo's buffer dies with its last opener).
struct Prepared {
  std::string spec;
  std::string rootfs;
  bool mounted = false;
  std::unique_ptr<stdio::ProcessIo> io;

  void Undo() {
    if (io) io->Close(std::chrono::milliseconds(0));
    if (mounted) (void)oci::UnmountAll(rootfs);
  }
};

StatusOr<Prepared> Prepare(const task::CreateRequest& req, const std::string& ns) {
  Prepared p;
  ASSIGN_OR_RETURN(p.spec, ReadFile(req.bundle + "/config.json"));
  // The rootfs to share: the mounts containerd sent, mounted at
  // bundle/rootfs, or else the spec's root.path (relative to the bundle).
  p.rootfs = req.bundle + "/rootfs";
  try {
    auto j = nlohmann::json::parse(p.spec);
    std::string path = j.at("root").at("path").get<std::string>();
    if (req.rootfs.empty()) p.rootfs = path.starts_with("/") ? path : req.bundle + "/" + path;
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError("task '{}': config.json has no usable root.path: {}", req.id, e.what());
  }
  if (!req.rootfs.empty()) {
    ::mkdir(p.rootfs.c_str(), 0711);
    RETURN_IF_ERROR(oci::MountAll(req.rootfs, p.rootfs));
    p.mounted = true;
  }
  auto io = stdio::ProcessIo::Open(req.stdio, {req.id, ns, req.bundle});
  if (!io.ok()) {
    p.Undo();
    return io.status();
  }
  p.io = std::move(io).value();
  return p;
}

}  // namespace

StatusOr<std::shared_ptr<QemuUtilityVm>> VmTask::BootVm(QemuConfig base, const std::string& ns,
                                                         const std::string& id) {
  base.state_dir = VmStateDir(ns, id);
  RETURN_IF_ERROR(MkdirAll("/run/runhcs/vm", 0700));
  if (!base.console) {
    // The guest's serial console (kernel and agent messages) into the shim's log.
    base.console = [id](const std::string& line) { spdlog::info("vm {} console: {}", id, line); };
  }
  auto vm = std::make_shared<QemuUtilityVm>(id, std::move(base));
  if (Status st = vm->Start(); !st.ok()) {
    (void)vm->Close();
    return st;
  }
  return vm;
}

StatusOr<std::shared_ptr<VmTask>> VmTask::Create(const task::CreateRequest& req, const Config& cfg,
                                                 events::Publisher* publisher) {
  ASSIGN_OR_RETURN(Prepared p, Prepare(req, cfg.ns));
  auto vm = BootVm(cfg.vm, cfg.ns, req.id);
  if (!vm.ok()) {
    p.Undo();
    return vm.status();
  }
  return CreateWith(req, cfg.ns, *vm, /*owns_vm=*/true, std::move(p.io), p.spec, p.rootfs, p.mounted,
                    publisher);
}

StatusOr<std::shared_ptr<VmTask>> VmTask::CreateIn(const task::CreateRequest& req, const std::string& ns,
                                                   std::shared_ptr<UtilityVm> vm,
                                                   events::Publisher* publisher) {
  if (!vm || !vm->agent()) return FailedPreconditionError("task '{}': the pod's VM is not running", req.id);
  ASSIGN_OR_RETURN(Prepared p, Prepare(req, ns));
  return CreateWith(req, ns, std::move(vm), /*owns_vm=*/false, std::move(p.io), p.spec, p.rootfs,
                    p.mounted, publisher);
}

StatusOr<std::shared_ptr<VmTask>> VmTask::CreateWith(const task::CreateRequest& req, const std::string& ns,
                                                     std::shared_ptr<UtilityVm> vm, bool owns_vm,
                                                     std::unique_ptr<stdio::ProcessIo> io,
                                                     const std::string& spec, const std::string& rootfs,
                                                     bool mounted, events::Publisher* publisher) {
  std::shared_ptr<AgentClient> agent = vm->agent();
  Status st = agent ? OkStatus() : FailedPreconditionError("task '{}': VM is not running", req.id);
  if (st.ok()) st = vm->Share(rootfs, kGuestRootfs + req.id, /*read_only=*/false);
  if (st.ok()) {
    apb::CreateContainerRequest cc;
    cc.set_container_id(req.id);
    cc.set_spec_json(spec);
    cc.set_rootfs_path(kGuestRootfs + req.id);
    cc.set_stdin(!req.stdio.stdin_path.empty());
    cc.set_terminal(req.stdio.terminal);
    apb::Empty e;
    st = agent->Call("CreateContainer", cc, &e, std::chrono::seconds(30));
  }
  if (!st.ok()) {
    io->Close(std::chrono::milliseconds(0));
    if (owns_vm) (void)vm->Close();
    if (mounted) (void)oci::UnmountAll(rootfs);
    return st;
  }
  auto task = std::make_shared<VmTask>(req.id, req.bundle, ns, std::move(vm), owns_vm, publisher, mounted);
  std::weak_ptr<VmTask> weak = task;
  task->init_ = exec::ProcessExec::Create(
      {req.id, "", req.bundle, req.stdio, 0},
      std::make_unique<VmProcess>(agent, req.id, "", "", req.stdio,
                                  stdio::IoContext{req.id, ns, req.bundle}, std::move(io)),
      publisher, [weak](const exec::ExecStatus&) {
        if (auto t = weak.lock()) t->OnInitExit();
      });
  if (agent) {
    task->oom_ = std::make_unique<OomRelay>(agent, req.id, publisher);
    task->oom_->Start();
  }
  task->WatchVm();
  publisher->Publish(task::CreateEvent(req, 0));
  return task;
}

VmTask::VmTask(std::string id, std::string bundle, std::string ns, std::shared_ptr<UtilityVm> vm,
               bool owns_vm, events::Publisher* publisher, bool mounted)
    : id_(std::move(id)),
      bundle_(std::move(bundle)),
      ns_(std::move(ns)),
      vm_(std::move(vm)),
      owns_vm_(owns_vm),
      publisher_(publisher),
      mounted_(mounted) {}

VmTask::~VmTask() {
  if (owns_vm_) (void)vm_->Close();
}

void VmTask::WatchVm() {
  std::weak_ptr<VmTask> weak = weak_from_this();
  std::shared_ptr<UtilityVm> vm = vm_;
  std::thread([weak, vm] {
    Status st = vm->Wait();
    auto t = weak.lock();
    if (!t || st.ok()) return;  // closed by us, or the task is gone
    // The VM died: started processes learn it from the agent (exit 1);
    // the ones never started are force-exited here, execs before init.
    for (auto& e : t->execs_.InState(exec::State::kCreated)) e->ForceExit(VmProcess::kVmGoneStatus);
    if (t->init_->state() == exec::State::kCreated) t->init_->ForceExit(VmProcess::kVmGoneStatus);
  }).detach();
}

void VmTask::OnInitExit() {
  // An OOM kill in the guest is reported before the exit it caused.
  if (oom_) oom_->Flush();
  auto running = execs_.InState(exec::State::kRunning);
  if (!running.empty()) {
    apb::SignalProcessRequest k;
    k.mutable_id()->set_container_id(id_);
    k.set_signal(SIGKILL);
    k.set_all(true);
    apb::Empty e;
    if (auto a = vm_->agent()) (void)a->Call("SignalProcess", k, &e);
    auto deadline = std::chrono::steady_clock::now() + kExecsDieWithInit;
    for (auto& x : running) {
      if (!x->Wait(deadline).ok()) x->ForceExit(VmProcess::kVmGoneStatus);
    }
  }
  if (owns_vm_) {
    // hcsshim order: the host (VM) is closed before init's TaskExit.
    (void)vm_->Close();
  } else if (auto a = vm_->agent()) {
    // A pod workload: the VM stays; the guest forgets the container.
    apb::RemoveContainerRequest rr;
    rr.set_container_id(id_);
    apb::Empty e;
    Status rs = a->Call("RemoveContainer", rr, &e);
    if (!rs.ok()) spdlog::warn("task {}: remove from the VM: {}", id_, rs.ToString());
  }
  if (!owns_vm_) {
    // The rootfs share must go before the rootfs is unmounted below, or the
    // share's bind mount would keep it busy for the life of the pod.
    Status us = vm_->Unshare(kGuestRootfs + id_);
    if (!us.ok() && us.code() != Code::kNotFound) spdlog::warn("task {}: {}", id_, us.ToString());
  }
  if (mounted_) {
    Status us = oci::UnmountAll(bundle_ + "/rootfs");
    if (!us.ok()) spdlog::warn("task {}: {}", id_, us.ToString());
  }
  publisher_->Publish(exec::ExitEvent(init_->status(), id_));
  closed_.Open();
}

Status VmTask::CreateExec(const task::ExecRequest& req) {
  RETURN_IF_ERROR(task::ValidateNewExecId(req.exec_id));
  if (init_->state() != exec::State::kRunning) {
    return FailedPreconditionError("cannot exec in task '{}': its init is not running", id_);
  }
  if (!nlohmann::json::accept(req.process_json)) {
    return InvalidArgumentError("exec {:?}: process spec is not JSON", req.exec_id);
  }
  std::shared_ptr<AgentClient> agent = vm_->agent();
  if (!agent) return FailedPreconditionError("task '{}': its VM is gone", id_);
  auto e = exec::ProcessExec::Create(
      {id_, req.exec_id, bundle_, req.stdio, 0},
      std::make_unique<VmProcess>(agent, id_, req.exec_id, req.process_json, req.stdio,
                                  stdio::IoContext{id_, ns_, bundle_}, nullptr),
      publisher_);
  RETURN_IF_ERROR(execs_.Add(req.exec_id, e));
  publisher_->Publish(task::ExecAddedEvent(id_, req.exec_id));
  return OkStatus();
}

StatusOr<std::shared_ptr<exec::Exec>> VmTask::GetExec(std::string_view exec_id) {
  if (exec_id.empty()) return std::shared_ptr<exec::Exec>(init_);
  ASSIGN_OR_RETURN(auto e, execs_.Get(exec_id));
  return std::shared_ptr<exec::Exec>(std::move(e));
}

std::vector<std::shared_ptr<exec::Exec>> VmTask::ListExecs() {
  std::vector<std::shared_ptr<exec::Exec>> out;
  for (auto& e : execs_.List()) out.push_back(e);
  return out;
}

Status VmTask::KillExec(std::string_view exec_id, uint32_t signal, bool all) {
  if (all && !exec_id.empty()) {
    return FailedPreconditionError("cannot signal all for non-empty exec: '{}'", exec_id);
  }
  ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
  if (all && e->state() == exec::State::kRunning) {
    auto a = vm_->agent();
    if (!a) return NotFoundError("task '{}': its VM is gone", id_);
    apb::SignalProcessRequest k;
    k.mutable_id()->set_container_id(id_);
    k.set_signal(signal);
    k.set_all(true);
    apb::Empty empty;
    return a->Call("SignalProcess", k, &empty);
  }
  return e->Kill(signal);
}

StatusOr<exec::ExecStatus> VmTask::DeleteExec(std::string_view exec_id) {
  ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
  switch (exec::State st = e->state()) {
    case exec::State::kCreated:
      e->ForceExit(0);
      break;
    case exec::State::kRunning:
      return exec::InvalidStateError(e->id(), id_, exec::StateName(st), "delete");
    case exec::State::kExited:
      break;
  }
  exec::ExecStatus status = e->status();
  if (exec_id.empty()) {
    if (!closed_.Wait(std::chrono::steady_clock::now() + kDeleteWaitForClose)) {
      return DeadlineExceededError("task '{}' did not finish exiting", id_);
    }
    status = e->status();
  } else {
    execs_.Remove(exec_id);
  }
  publisher_->Publish(exec::DeleteEvent(status));
  return status;
}

StatusOr<std::vector<task::ProcessDetails>> VmTask::Pids() {
  std::vector<task::ProcessDetails> out;
  if (init_->state() == exec::State::kRunning) out.push_back({init_->pid(), ""});
  for (auto& e : execs_.InState(exec::State::kRunning)) out.push_back({e->pid(), e->id()});
  return out;
}

StatusOr<exec::ExecStatus> VmTask::Wait(exec::Deadline deadline) {
  if (!closed_.Wait(deadline)) return DeadlineExceededError("wait for task '{}'", id_);
  return init_->status();
}

Status VmTask::Pause() { return FreezeContainer(true); }

Status VmTask::Resume() { return FreezeContainer(false); }

Status VmTask::FreezeContainer(bool freeze) {
  auto agent = vm_->agent();
  if (!agent) return FailedPreconditionError("task '{}': its VM is not running", id_);
  if (init_->state() != exec::State::kRunning) {
    return FailedPreconditionError("cannot {} task '{}': it is not running", freeze ? "pause" : "resume", id_);
  }
  apb::ContainerRequest req;
  req.set_container_id(id_);
  apb::Empty e;
  RETURN_IF_ERROR(agent->Call(freeze ? "PauseContainer" : "ResumeContainer", req, &e));
  {
    MutexLock l(&mu_);
    paused_ = freeze;
  }
  if (freeze) {
    publisher_->Publish(task::PausedEvent(id_));
  } else {
    publisher_->Publish(task::ResumedEvent(id_));
  }
  return OkStatus();
}

bool VmTask::Paused() {
  MutexLock l(&mu_);
  return paused_;
}

Status VmTask::Update(const runhcs::wkt::Any&) {
  return NotImplementedError("update of hypervisor-isolated task '{}' is not implemented yet", id_);
}

StatusOr<runhcs::wkt::Any> VmTask::Stats() {
  containerd::runhcs::stats::v1::Statistics s;
  auto agent = vm_->agent();
  if (!agent) return FailedPreconditionError("task '{}': its VM is not running", id_);
  apb::ContainerRequest req;
  req.set_container_id(id_);
  apb::ContainerStatsResponse cs;
  RETURN_IF_ERROR(agent->Call("ContainerStats", req, &cs).Wrap(fmt::format("stats of task '{}'", id_)));
  *s.mutable_linux_v2() = std::move(*cs.mutable_metrics());
  // As hcsshim: the VM's own figures only from the task that owns the VM.
  if (owns_vm_) {
    ASSIGN_OR_RETURN(*s.mutable_vm(), vm_->Stats());
  }
  *s.mutable_timestamp() = ToTimestamp(std::chrono::system_clock::now());
  runhcs::wkt::Any any;
  any.set_type_url("containerd.runhcs.stats.v1.Statistics");
  any.set_value(s.SerializeAsString());
  return any;
}

StatusOr<int32_t> VmTask::ExecInHost(const containerd::runhcs::v1::diag::ExecProcessRequest& req) {
  return vm_->ExecInUvm(req);
}

std::string VmTask::DumpGuestStacks() {
  auto s = vm_->DumpStacks();
  return s.ok() ? *s : "";
}

Status VmTask::Share(const std::string& host_path, const std::string& vm_path, bool read_only) {
  return vm_->Share(host_path, vm_path, read_only);
}

}  // namespace runhcs::uvm
