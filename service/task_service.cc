#include "service/task_service.h"

#include <algorithm>

#include <unistd.h>
#include "runhcs/wkt/empty.pb.h"

#include "base/log.h"
#include "containerd/runc/options/oci.pb.h"
#include "events/publisher.h"
#include "proto/timestamp.h"

namespace runhcs::service {

using ttrpc::CallContext;

namespace {

constexpr char kProcessSpecUrl[] = "types.containerd.io/opencontainers/runtime-spec/1/Process";

containerd::v1::types::Status ToProtoState(exec::State s) {
  switch (s) {
    case exec::State::kCreated:
      return containerd::v1::types::CREATED;
    case exec::State::kRunning:
      return containerd::v1::types::RUNNING;
    case exec::State::kExited:
      return containerd::v1::types::STOPPED;
  }
  return containerd::v1::types::UNKNOWN;
}

}  // namespace

TaskService::TaskService(Config cfg) : cfg_(std::move(cfg)) {}

size_t TaskService::task_count() {
  MutexLock l(&mu_);
  if (pod_) return pod_->ListTasks().size() - (task_deleted_ ? 1 : 0);
  return task_ && !task_deleted_ ? 1 : 0;
}

StatusOr<std::shared_ptr<task::Task>> TaskService::GetTask(std::string_view id) {
  MutexLock l(&mu_);
  if (pod_) return pod_->GetTask(id);
  if (!task_ || task_deleted_ || id != task_->id()) {
    return NotFoundError("task with id: '{}' not found", id);
  }
  return task_;
}

StatusOr<std::shared_ptr<exec::Exec>> TaskService::GetExec(std::string_view id,
                                                           std::string_view exec_id) {
  ASSIGN_OR_RETURN(auto t, GetTask(id));
  return t->GetExec(exec_id);
}

void TaskService::Register(ttrpc::Server* server) {
  v2::RegisterTaskServer(server, this);
  diag::RegisterShimDiagServer(server, this);
}

Status TaskService::State(const CallContext&, const v2::StateRequest& req,
                          v2::StateResponse* resp) {
  ASSIGN_OR_RETURN(auto t, GetTask(req.id()));
  ASSIGN_OR_RETURN(auto e, t->GetExec(req.exec_id()));
  exec::ExecStatus st = e->status();
  // As runc-v2: the exec id (or the task id for init) in `id`.
  resp->set_id(req.exec_id().empty() ? req.id() : req.exec_id());
  resp->set_bundle(st.bundle);
  resp->set_pid(st.pid);
  resp->set_status(st.state == exec::State::kRunning && t->Paused() ? containerd::v1::types::PAUSED
                                                                    : ToProtoState(st.state));
  resp->set_stdin(st.stdio.stdin_path);
  resp->set_stdout(st.stdio.stdout_path);
  resp->set_stderr(st.stdio.stderr_path);
  resp->set_terminal(st.stdio.terminal);
  resp->set_exit_status(st.exit_status);
  if (st.exited_at) *resp->mutable_exited_at() = ToTimestamp(*st.exited_at);
  return OkStatus();
}

Status TaskService::Create(const CallContext&, const v2::CreateTaskRequest& req,
                           v2::CreateTaskResponse* resp) {
  // terminal + stderr: containerd's CRI plugin always sends a stderr
  // path; as runc-v2, it is accepted and unused (a pty has one output).
  if (!req.checkpoint().empty() || !req.parent_checkpoint().empty()) {
    return NotImplementedError("restore from checkpoint");
  }
  task::CreateRequest cr;
  cr.id = req.id();
  cr.bundle = req.bundle();
  for (const auto& m : req.rootfs()) {
    cr.rootfs.push_back(
        {m.type(), m.source(), m.target(), {m.options().begin(), m.options().end()}});
  }
  cr.stdio = {req.stdin(), req.stdout(), req.stderr(), req.terminal()};
  cr.options = req.options();
  ASSIGN_OR_RETURN(oci::Spec spec, oci::Spec::Load(req.bundle()));
  if (!cfg_.factory) return NotImplementedError("this shim has no task factory");
  MutexLock create_lock(&create_mu_);
  std::shared_ptr<task::Task> created;
  std::shared_ptr<pod::Pod> pod;
  {
    MutexLock l(&mu_);
    pod = pod_;
    if (!pod && task_) return AlreadyExistsError("task with id '{}' already exists", task_->id());
  }
  if (pod) {
    RETURN_IF_ERROR(pod->CreateTask(cr, spec));
    ASSIGN_OR_RETURN(created, pod->GetTask(cr.id));
  } else if (cfg_.is_sandbox) {
    if (cr.id != cfg_.id) {
      return FailedPreconditionError("first task in pod shim '{}' must be the sandbox, not '{}'",
                                     cfg_.id, cr.id);
    }
    ASSIGN_OR_RETURN(pod, cfg_.factory->CreatePod(cr, spec));
    ASSIGN_OR_RETURN(created, pod->GetTask(cr.id));
    MutexLock l(&mu_);
    pod_ = pod;
  } else {
    ASSIGN_OR_RETURN(created, cfg_.factory->CreateTask(cr, spec));
    MutexLock l(&mu_);
    task_ = created;
  }
  ASSIGN_OR_RETURN(auto init, created->GetExec(""));
  resp->set_pid(init->pid());
  return OkStatus();
}

Status TaskService::Start(const CallContext&, const v2::StartRequest& req,
                          v2::StartResponse* resp) {
  ASSIGN_OR_RETURN(auto e, GetExec(req.id(), req.exec_id()));
  RETURN_IF_ERROR(e->Start());
  resp->set_pid(e->pid());
  return OkStatus();
}

Status TaskService::Delete(const CallContext&, const v2::DeleteRequest& req,
                           v2::DeleteResponse* resp) {
  ASSIGN_OR_RETURN(auto t, GetTask(req.id()));
  ASSIGN_OR_RETURN(exec::ExecStatus st, t->DeleteExec(req.exec_id()));
  if (req.exec_id().empty()) {
    MutexLock l(&mu_);
    if (pod_) {
      Status ds = pod_->DeleteTask(req.id());
      if (!ds.ok()) return ds;
      if (req.id() == pod_->id()) task_deleted_ = true;
    } else {
      task_deleted_ = true;
    }
  }
  resp->set_pid(st.pid);
  resp->set_exit_status(st.exit_status);
  if (st.exited_at) *resp->mutable_exited_at() = ToTimestamp(*st.exited_at);
  return OkStatus();
}

Status TaskService::Pids(const CallContext&, const v2::PidsRequest& req, v2::PidsResponse* resp) {
  ASSIGN_OR_RETURN(auto t, GetTask(req.id()));
  ASSIGN_OR_RETURN(auto pids, t->Pids());
  for (const auto& p : pids) {
    auto* info = resp->add_processes();
    info->set_pid(p.pid);
    if (!p.exec_id.empty()) {
      containerd::runc::v1::ProcessDetails d;
      d.set_exec_id(p.exec_id);
      *info->mutable_info() = events::PackBare(d);
    }
  }
  return OkStatus();
}

Status TaskService::Pause(const CallContext&, const v2::PauseRequest& req, Empty*) {
  ASSIGN_OR_RETURN(auto t, GetTask(req.id()));
  return t->Pause();
}

Status TaskService::Resume(const CallContext&, const v2::ResumeRequest& req, Empty*) {
  ASSIGN_OR_RETURN(auto t, GetTask(req.id()));
  return t->Resume();
}

Status TaskService::Checkpoint(const CallContext&, const v2::CheckpointTaskRequest& req, Empty*) {
  ASSIGN_OR_RETURN(auto t, GetTask(req.id()));
  return NotImplementedError("checkpoint of task '{}' is not supported by this shim", t->id());
}

Status TaskService::Kill(const CallContext&, const v2::KillRequest& req, Empty*) {
  std::shared_ptr<pod::Pod> pod;
  {
    MutexLock l(&mu_);
    pod = pod_;
  }
  if (pod) return pod->KillTask(req.id(), req.exec_id(), req.signal(), req.all());
  ASSIGN_OR_RETURN(auto t, GetTask(req.id()));
  return t->KillExec(req.exec_id(), req.signal(), req.all());
}

Status TaskService::Exec(const CallContext&, const v2::ExecProcessRequest& req, Empty*) {
  // terminal + stderr: accepted, stderr unused (see Create).
  if (req.spec().type_url() != kProcessSpecUrl) {
    return InvalidArgumentError("exec spec has type {:?}; want {}", req.spec().type_url(),
                                kProcessSpecUrl);
  }
  ASSIGN_OR_RETURN(auto t, GetTask(req.id()));
  task::ExecRequest er;
  er.exec_id = req.exec_id();
  er.stdio = {req.stdin(), req.stdout(), req.stderr(), req.terminal()};
  er.process_json = req.spec().value();
  return t->CreateExec(er);
}

Status TaskService::ResizePty(const CallContext&, const v2::ResizePtyRequest& req, Empty*) {
  ASSIGN_OR_RETURN(auto e, GetExec(req.id(), req.exec_id()));
  return e->ResizePty(req.width(), req.height());
}

Status TaskService::CloseIO(const CallContext&, const v2::CloseIORequest& req, Empty*) {
  ASSIGN_OR_RETURN(auto e, GetExec(req.id(), req.exec_id()));
  return e->CloseIO(req.stdin());
}

Status TaskService::Update(const CallContext&, const v2::UpdateTaskRequest& req, Empty*) {
  ASSIGN_OR_RETURN(auto t, GetTask(req.id()));
  if (!req.has_resources())
    return InvalidArgumentError("update of task '{}' without resources", req.id());
  return t->Update(req.resources());
}

Status TaskService::Stats(const CallContext&, const v2::StatsRequest& req,
                          v2::StatsResponse* resp) {
  ASSIGN_OR_RETURN(auto t, GetTask(req.id()));
  ASSIGN_OR_RETURN(*resp->mutable_stats(), t->Stats());
  return OkStatus();
}

// Connect: works before Create (a workload's `start` relies on it).
Status TaskService::Connect(const CallContext&, const v2::ConnectRequest& req,
                            v2::ConnectResponse* resp) {
  resp->set_shim_pid(static_cast<uint32_t>(::getpid()));
  resp->set_version(RUNHCS_VERSION_STRING);
  auto e = GetExec(req.id(), "");
  if (e.ok()) resp->set_task_pid((*e)->pid());
  return OkStatus();
}

Status TaskService::Shutdown(const CallContext&, const v2::ShutdownRequest& req, Empty*) {
  if (req.id() != cfg_.id) return OkStatus();  // not ours to stop
  if (task_count() > 0) return OkStatus();     // tasks remain: stay up
  {
    MutexLock l(&mu_);
    if (shutdown_called_) return OkStatus();
    shutdown_called_ = true;
  }
  if (cfg_.on_shutdown) cfg_.on_shutdown();
  return OkStatus();
}

Status TaskService::DiagPid(const CallContext&, const diag::PidRequest&, diag::PidResponse* resp) {
  resp->set_pid(::getpid());
  return OkStatus();
}

Status TaskService::DiagStacks(const CallContext&, const diag::StacksRequest&,
                               diag::StacksResponse* resp) {
  resp->set_stacks(
      FormatStacks(CaptureThreadStacks(), cfg_.symbolize ? cfg_.symbolize : SymbolizeHere));
  // The guest's, when this shim runs a utility VM (bounded by the VM's
  // own timeout). Before the task exists (its Create still running), the
  // VMs already booted: a create that hangs in the guest.
  if (auto t = GetTask(cfg_.id); t.ok()) {
    resp->set_guest_stacks((*t)->DumpGuestStacks());
  } else if (cfg_.untasked_guest_stacks) {
    resp->set_guest_stacks(cfg_.untasked_guest_stacks());
  }
  return OkStatus();
}

Status TaskService::DiagTasks(const CallContext&, const diag::TasksRequest& req,
                              diag::TasksResponse* resp) {
  std::vector<std::shared_ptr<task::Task>> tasks;
  {
    MutexLock l(&mu_);
    if (pod_) {
      tasks = pod_->ListTasks();
    } else if (task_ && !task_deleted_) {
      tasks.push_back(task_);
    }
  }
  if (tasks.empty()) return NotFoundError("no task created in shim '{}'", cfg_.id);
  for (const auto& t : tasks) {
    auto* out = resp->add_tasks();
    out->set_id(t->id());
    if (!req.execs()) continue;
    // Init first, as hcsshim lists it; the fake sandbox task's
    // ListExecs already holds its init.
    std::vector<std::shared_ptr<exec::Exec>> execs = t->ListExecs();
    if (auto init = t->GetExec("");
        init.ok() && std::find(execs.begin(), execs.end(), *init) == execs.end()) {
      execs.insert(execs.begin(), *init);
    }
    for (const auto& e : execs) {
      auto* x = out->add_execs();
      x->set_id(e->id());
      x->set_state(std::string(exec::StateName(e->state())));
    }
  }
  return OkStatus();
}

Status TaskService::DiagExecInHost(const CallContext&, const diag::ExecProcessRequest& req,
                                   diag::ExecProcessResponse* resp) {
  if (req.terminal() && !req.stderr().empty()) {
    return FailedPreconditionError("tty and stderr cannot both be set");
  }
  if (req.args().empty()) return InvalidArgumentError("exec in host needs a command");
  ASSIGN_OR_RETURN(auto t, GetTask(cfg_.id));
  ASSIGN_OR_RETURN(int32_t code, t->ExecInHost(req));
  resp->set_exit_code(code);
  return OkStatus();
}

Status TaskService::DiagShare(const CallContext&, const diag::ShareRequest& req,
                              diag::ShareResponse*) {
  RETURN_IF_ERROR(task::ValidateShareTarget(req.uvm_path()));
  ASSIGN_OR_RETURN(auto t, GetTask(cfg_.id));
  return t->Share(req.host_path(), req.uvm_path(), req.read_only());
}

// Wait: answered when the exec exits (or the task closes, for init), holding
// no thread meanwhile; the server answers DeadlineExceeded at the call's
// deadline, and a waiter whose call is gone is dropped.
void TaskService::Wait(const CallContext&, const v2::WaitRequest& req,
                       ttrpc::TypedResponder<v2::WaitResponse> r) {
  auto reply = [r](const exec::ExecStatus& st) {
    v2::WaitResponse resp;
    resp.set_exit_status(st.exit_status);
    if (st.exited_at) *resp.mutable_exited_at() = ToTimestamp(*st.exited_at);
    r.Send(resp);
  };
  auto wanted = [r] { return !r.Done(); };
  auto t = GetTask(req.id());
  if (!t.ok()) {
    r.Fail(t.status());
  } else if (req.exec_id().empty()) {
    (*t)->NotifyClosed(reply, wanted);
  } else if (auto e = (*t)->GetExec(req.exec_id()); !e.ok()) {
    r.Fail(e.status());
  } else {
    (*e)->NotifyExit(reply, wanted);
  }
}

}  // namespace runhcs::service
