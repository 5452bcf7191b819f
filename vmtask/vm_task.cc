#include "vmtask/vm_task.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "base/io.h"
#include "base/log.h"
#include "base/sha256.h"
#include "base/thread_group.h"
#include "containerd/events/task.pb.h"
#include "exec/exec_events.h"
#include "oci/mounts.h"
#include "proto/timestamp.h"
#include "runhcs/stats.pb.h"
#include "stats/cgroup.h"
#include "task/exec_set.h"
#include "uvm/hung_guest.h"
#include "vmtask/vm_process.h"

namespace runhcs::vmtask {

namespace apb = ::runhcs::agent::v1;

namespace {

constexpr char kGuestRootfs[] = "/run/runhcs/rootfs/";
constexpr char kGuestMounts[] = "/run/runhcs/mounts/";

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
    return InvalidArgumentError("task '{}': config.json has no usable root.path: {}", req.id,
                                e.what());
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

bool HasOption(const nlohmann::json& m, std::string_view opt) {
  if (!m.contains("options") || !m["options"].is_array()) return false;
  for (const auto& o : m["options"]) {
    if (o.is_string() && o.get<std::string>() == opt) return true;
  }
  return false;
}

// The spec's bind mounts of host paths reach the guest through the VM's
// share (virtiofs): each source (a directory or a file; a symlink resolved
// on the host) is shared at kGuestMounts/<id>/<n>, read-only when the mount
// says "ro", and the mount's source becomes that guest path. /dev/shm (CRI
// binds the sandbox's) becomes a tmpfs of the guest's. Nothing else of the
// host is shared. A mount asking for bidirectional propagation ("rshared")
// is InvalidArgument. On error what was shared is unshared. Returns the new
// spec; `shared` gets the guest paths.
StatusOr<std::string> MapBindMounts(const std::string& spec_json, const std::string& id,
                                    uvm::UtilityVm* vm, std::vector<std::string>* shared) {
  nlohmann::json spec;
  try {
    spec = nlohmann::json::parse(spec_json);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError("task '{}': config.json: {}", id, e.what());
  }
  if (!spec.contains("mounts") || !spec["mounts"].is_array()) return spec_json;
  auto undo = [&] {
    for (const auto& g : *shared) (void)vm->Unshare(g);
    shared->clear();
  };
  int n = 0;
  for (auto& m : spec["mounts"]) {
    if (!m.is_object()) continue;
    std::string type = m.value("type", "");
    if (type != "bind" && !HasOption(m, "bind") && !HasOption(m, "rbind")) continue;
    std::string dest = m.value("destination", "");
    std::string src = m.value("source", "");
    if (dest == "/dev/shm") {
      m = nlohmann::json{{"destination", "/dev/shm"},
                         {"type", "tmpfs"},
                         {"source", "shm"},
                         {"options", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}};
      continue;
    }
    if (src.empty() || src.front() != '/') {
      undo();
      return InvalidArgumentError("task '{}': bind mount at {:?} has source {:?}, not a host path",
                                  id, dest, src);
    }
    // Mounts made in the guest cannot come back to the host through
    // virtiofs: bidirectional propagation (CRI's PROPAGATION_BIDIRECTIONAL)
    // would silently be one-way. Host-to-container ("rslave") works.
    if (HasOption(m, "rshared") || HasOption(m, "shared")) {
      undo();
      return InvalidArgumentError(
          "task '{}': mount at {:?} asks for bidirectional propagation (rshared); mounts made in "
          "a VM cannot propagate to the host: use host-to-container propagation or process "
          "isolation",
          id, dest);
    }
    std::string guest = kGuestMounts + id + "/" + std::to_string(n++);
    Status st = vm->Share(src, guest, HasOption(m, "ro"));
    if (!st.ok()) {
      undo();
      return st.Wrap(fmt::format("task '{}': bind mount of {} at {}", id, src, dest));
    }
    shared->push_back(guest);
    m["source"] = guest;
  }
  return spec.dump();
}

}  // namespace

StatusOr<std::string> MapNamespaces(const std::string& spec_json, const std::string& id,
                                    bool in_pod, std::vector<std::string>* pod_namespaces) {
  nlohmann::json spec;
  try {
    spec = nlohmann::json::parse(spec_json);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError("task '{}': config.json: {}", id, e.what());
  }
  if (!spec.contains("linux") || !spec["linux"].is_object() ||
      !spec["linux"].contains("namespaces") || !spec["linux"]["namespaces"].is_array()) {
    return spec_json;
  }
  nlohmann::json kept = nlohmann::json::array();
  for (auto& n : spec["linux"]["namespaces"]) {
    if (!n.is_object() || !n.contains("path")) {
      kept.push_back(n);
      continue;
    }
    std::string type = n.value("type", ""), path = n.value("path", "");
    if (!in_pod) {
      return InvalidArgumentError(
          "task '{}': the {} namespace {} is the host's; a hypervisor-isolated container cannot "
          "join it",
          id, type, path);
    }
    if (type == "network") continue;  // the VM's network is the pod's
    if (type != "pid" && type != "ipc" && type != "uts") {
      return InvalidArgumentError(
          "task '{}': the {} namespace {} cannot be joined in the pod's VM (only the pod's "
          "network, pid, ipc and uts namespaces are shared)",
          id, type, path);
    }
    n.erase("path");
    kept.push_back(n);
    pod_namespaces->push_back(type);
  }
  spec["linux"]["namespaces"] = std::move(kept);
  return spec.dump();
}

StatusOr<std::shared_ptr<uvm::UtilityVm>> VmTask::BootVm(uvm::VmConfig base, const std::string& ns,
                                                         const std::string& id) {
  base.state_dir = VmStateDir(ns, id);
  base.kvm_verdict_file = kKvmVerdictFile;
  RETURN_IF_ERROR(MkdirAll("/run/runhcs/vm", 0700));
  if (!base.console) {
    // The guest's serial console (kernel and agent messages) into the shim's log.
    base.console = [id](const std::string& line) { spdlog::info("vm {} console: {}", id, line); };
  }
  std::shared_ptr<uvm::UtilityVm> vm = uvm::NewUtilityVm(id, base);
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
  return CreateWith(req, cfg.ns, *vm, /*owns_vm=*/true, std::move(p.io), p.spec, p.rootfs,
                    p.mounted, publisher);
}

StatusOr<std::shared_ptr<VmTask>> VmTask::CreateIn(const task::CreateRequest& req,
                                                   const std::string& ns,
                                                   std::shared_ptr<uvm::UtilityVm> vm,
                                                   events::Publisher* publisher) {
  if (!vm || !vm->agent())
    return FailedPreconditionError("task '{}': the pod's VM is not running", req.id);
  ASSIGN_OR_RETURN(Prepared p, Prepare(req, ns));
  return CreateWith(req, ns, std::move(vm), /*owns_vm=*/false, std::move(p.io), p.spec, p.rootfs,
                    p.mounted, publisher);
}

StatusOr<std::shared_ptr<VmTask>> VmTask::CreateWith(
    const task::CreateRequest& req, const std::string& ns, std::shared_ptr<uvm::UtilityVm> vm,
    bool owns_vm, std::unique_ptr<stdio::ProcessIo> io, const std::string& spec,
    const std::string& rootfs, bool mounted, events::Publisher* publisher) {
  std::shared_ptr<uvm::AgentClient> agent = vm->agent();
  Status st = agent ? OkStatus() : FailedPreconditionError("task '{}': VM is not running", req.id);
  if (st.ok()) st = vm->Share(rootfs, kGuestRootfs + req.id, /*read_only=*/false);
  std::vector<std::string> mount_shares, pod_namespaces;
  std::string guest_spec;
  if (st.ok()) {
    auto ns_mapped = MapNamespaces(spec, req.id, !owns_vm, &pod_namespaces);
    auto mapped =
        ns_mapped.ok() ? MapBindMounts(*ns_mapped, req.id, vm.get(), &mount_shares) : ns_mapped;
    st = mapped.status();
    if (mapped.ok()) guest_spec = std::move(*mapped);
  }
  if (st.ok()) {
    apb::CreateContainerRequest cc;
    cc.set_container_id(req.id);
    cc.set_spec_json(guest_spec);
    cc.set_rootfs_path(kGuestRootfs + req.id);
    cc.set_stdin(!req.stdio.stdin_path.empty());
    cc.set_terminal(req.stdio.terminal);
    for (const auto& t : pod_namespaces) cc.add_pod_namespaces(t);
    apb::Empty e;
    st = agent->CreateContainer(cc, &e, uvm::AgentClient::Within(std::chrono::seconds(30)));
  }
  if (!st.ok()) {
    io->Close(std::chrono::milliseconds(0));
    for (const auto& g : mount_shares) (void)vm->Unshare(g);
    if (owns_vm) {
      (void)vm->Close();
    } else {
      (void)vm->Unshare(kGuestRootfs + req.id);
    }
    if (mounted) (void)oci::UnmountAll(rootfs);
    return st;
  }
  auto task =
      std::make_shared<VmTask>(req.id, req.bundle, ns, std::move(vm), owns_vm, publisher, mounted);
  task->mount_shares_ = std::move(mount_shares);
  task->SetInit(
      {req.id, "", req.bundle, req.stdio, 0},
      std::make_unique<VmProcess>(agent, req.id, "", "", req.stdio,
                                  stdio::IoContext{req.id, ns, req.bundle}, std::move(io)));
  if (agent) {
    task->oom_ = std::make_unique<OomRelay>(agent, req.id, publisher);
    task->oom_->Start();
  }
  task->WatchVm();
  publisher->Publish(task::CreateEvent(req, 0));
  return task;
}

VmTask::VmTask(std::string id, std::string bundle, std::string ns,
               std::shared_ptr<uvm::UtilityVm> vm, bool owns_vm, events::Publisher* publisher,
               bool mounted)
    : TaskBase(std::move(id), std::move(bundle), std::move(ns), publisher),
      vm_(std::move(vm)),
      owns_vm_(owns_vm),
      mounted_(mounted) {}

VmTask::~VmTask() {
  vm_->CancelOnGone(gone_token_.load());
  if (owns_vm_) (void)vm_->Close();
}

void VmTask::WatchVm() {
  std::weak_ptr<VmTask> weak = std::static_pointer_cast<VmTask>(shared_from_this());
  // No thread waits: a pod workload's VM outlives the task (a thread each
  // stayed for the life of the pod, one per container ever created in it).
  gone_token_ = vm_->OnGone([weak, id = id()](const Status& why) {
    if (why.ok()) return;  // closed by us
    auto t = weak.lock();
    if (!t) return;
    // The VM died: started processes learn it from the agent (exit 1);
    // the ones never started are force-exited, execs before init. ForceExit
    // waits for their stdio: not on the VM's thread.
    Status st = ThreadGroup::Get().Spawn("vmgone-" + id, [t] {
      for (auto& e : t->execs().InState(exec::State::kCreated))
        e->ForceExit(VmProcess::kVmGoneStatus);
      if (t->init()->state() == exec::State::kCreated)
        t->init()->ForceExit(VmProcess::kVmGoneStatus);
    });
    if (!st.ok()) spdlog::error("task {}: after its VM went: {}", id, st.ToString());
  });
}

Status VmTask::SignalAll(uint32_t signal) {
  auto a = vm_->agent();
  if (!a) return NotFoundError("task '{}': its VM is gone", id());
  apb::SignalProcessRequest k;
  k.mutable_id()->set_container_id(id());
  k.set_signal(signal);
  k.set_all(true);
  apb::Empty e;
  return a->SignalProcess(k, &e);
}

void VmTask::KillAll() { (void)SignalAll(SIGKILL); }

void VmTask::Teardown() {
  // An OOM kill in the guest is reported before the exit it caused.
  if (oom_) oom_->Flush();
  if (owns_vm_) {
    // hcsshim order: the host (VM) is closed before init's TaskExit.
    (void)vm_->Close();
  } else if (auto a = vm_->agent()) {
    // A pod workload: the VM stays; the guest forgets the container.
    apb::RemoveContainerRequest rr;
    rr.set_container_id(id());
    apb::Empty e;
    Status rs = a->RemoveContainer(rr, &e);
    if (!rs.ok()) spdlog::warn("task {}: remove from the VM: {}", id(), rs.ToString());
  }
  if (!owns_vm_) {
    // The bind mounts' shares go with the container (a VM of its own takes
    // them with it).
    for (const auto& g : mount_shares_) {
      Status us = vm_->Unshare(g);
      if (!us.ok() && us.code() != Code::kNotFound)
        spdlog::warn("task {}: {}", id(), us.ToString());
    }
    // The rootfs share must go before the rootfs is unmounted below, or the
    // share's bind mount would keep it busy for the life of the pod.
    Status us = vm_->Unshare(kGuestRootfs + id());
    if (!us.ok() && us.code() != Code::kNotFound) spdlog::warn("task {}: {}", id(), us.ToString());
  }
  if (mounted_) {
    Status us = oci::UnmountAll(bundle() + "/rootfs");
    if (!us.ok()) spdlog::warn("task {}: {}", id(), us.ToString());
  }
}

StatusOr<std::unique_ptr<exec::Process>> VmTask::NewExecProcess(const task::ExecRequest& req) {
  std::shared_ptr<uvm::AgentClient> agent = vm_->agent();
  if (!agent) return FailedPreconditionError("task '{}': its VM is gone", id());
  return std::unique_ptr<exec::Process>(
      std::make_unique<VmProcess>(agent, id(), req.exec_id, req.process_json, req.stdio,
                                  stdio::IoContext{id(), ns(), bundle()}, nullptr));
}

Status VmTask::KillExec(std::string_view exec_id, uint32_t signal, bool all) {
  if (all && !exec_id.empty()) {
    return FailedPreconditionError("cannot signal all for non-empty exec: '{}'", exec_id);
  }
  ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
  Status st = all && e->state() == exec::State::kRunning ? SignalAll(signal) : e->Kill(signal);
  if (signal != SIGKILL) return st;
  // A guest that no longer answers loses its VM, or the container (and a
  // pod, which CRI stops container by container) could never be stopped.
  return uvm::TerminateIfGuestHung(vm_.get(), std::move(st),
                                   exec_id.empty() ? id() : id() + "/" + std::string(exec_id));
}

StatusOr<std::vector<task::ProcessDetails>> VmTask::Pids() {
  std::vector<task::ProcessDetails> out;
  if (init()->state() == exec::State::kRunning) out.push_back({init()->pid(), ""});
  for (auto& e : execs().InState(exec::State::kRunning)) out.push_back({e->pid(), e->id()});
  return out;
}

Status VmTask::Pause() { return FreezeContainer(true); }

Status VmTask::Resume() { return FreezeContainer(false); }

Status VmTask::FreezeContainer(bool freeze) {
  auto agent = vm_->agent();
  if (!agent) return FailedPreconditionError("task '{}': its VM is not running", id());
  if (init()->state() != exec::State::kRunning) {
    return FailedPreconditionError("cannot {} task '{}': it is not running",
                                   freeze ? "pause" : "resume", id());
  }
  apb::ContainerRequest req;
  req.set_container_id(id());
  apb::Empty e;
  RETURN_IF_ERROR(freeze ? agent->PauseContainer(req, &e) : agent->ResumeContainer(req, &e));
  {
    MutexLock l(&mu_);
    paused_ = freeze;
  }
  if (freeze) {
    publisher()->Publish(task::PausedEvent(id()));
  } else {
    publisher()->Publish(task::ResumedEvent(id()));
  }
  return OkStatus();
}

bool VmTask::Paused() {
  MutexLock l(&mu_);
  return paused_;
}

Status VmTask::Update(const runhcs::wkt::Any& resources) {
  ASSIGN_OR_RETURN(std::string json, task::LinuxResourcesJson(id(), resources));
  auto agent = vm_->agent();
  if (!agent) return FailedPreconditionError("task '{}': its VM is not running", id());
  apb::UpdateContainerRequest req;
  req.set_container_id(id());
  req.set_resources_json(std::move(json));
  apb::Empty e;
  return agent->UpdateContainer(req, &e);
}

StatusOr<runhcs::wkt::Any> VmTask::Stats() {
  containerd::runhcs::stats::v1::Statistics s;
  auto agent = vm_->agent();
  if (!agent) return FailedPreconditionError("task '{}': its VM is not running", id());
  apb::ContainerRequest req;
  req.set_container_id(id());
  apb::ContainerStatsResponse cs;
  RETURN_IF_ERROR(agent->ContainerStats(req, &cs).Wrap(fmt::format("stats of task '{}'", id())));
  runhcs::wkt::Any any;
  if (!owns_vm_) {
    // A pod workload: its guest cgroup as the v2 Metrics containerd's CRI
    // plugin decodes (ContainerStats, ListContainerStats); the VM's own
    // figures are the sandbox's.
    any.set_type_url(stats::kV2MetricsType);
    any.set_value(cs.metrics().SerializeAsString());
    return any;
  }
  *s.mutable_linux_v2() = std::move(*cs.mutable_metrics());
  ASSIGN_OR_RETURN(*s.mutable_vm(), vm_->Stats());
  *s.mutable_timestamp() = ToTimestamp(std::chrono::system_clock::now());
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

}  // namespace runhcs::vmtask
