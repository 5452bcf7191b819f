#include "pod/pod.h"

#include <future>

namespace runhcs::pod {

PodImpl::PodImpl(std::string id, std::shared_ptr<task::Task> sandbox,
                 std::shared_ptr<uvm::UtilityVm> host, WorkloadFactory factory)
    : id_(std::move(id)),
      sandbox_(std::move(sandbox)),
      host_(std::move(host)),
      factory_(std::move(factory)) {}

Status PodImpl::CreateTask(const task::CreateRequest& req, const oci::Spec& spec) {
  if (req.id == id_) return AlreadyExistsError("task with id '{}' already exists", req.id);
  {
    MutexLock l(&mu_);
    if (workloads_.count(req.id) || creating_.count(req.id)) {
      return AlreadyExistsError("task with id '{}' already exists", req.id);
    }
  }
  ASSIGN_OR_RETURN(auto init, sandbox_->GetExec(""));
  if (init->state() != exec::State::kRunning) {
    return FailedPreconditionError(
        "task with id '{}' cannot be created in pod '{}' which is not running", req.id, id_);
  }
  auto role = oci::PodRoleOf(spec, req.id);
  if (!role.ok()) return FailedPreconditionError("{}", role.status().message());
  if (role->kind != oci::PodRole::kWorkload || role->sandbox_id != id_) {
    return FailedPreconditionError("task '{}' is not a workload container of pod '{}'", req.id,
                                   id_);
  }
  {
    MutexLock l(&mu_);
    if (workloads_.count(req.id) || creating_.count(req.id)) {
      return AlreadyExistsError("task with id '{}' already exists", req.id);
    }
    creating_[req.id] = true;
  }
  auto t = factory_(req, spec, host_);
  MutexLock l(&mu_);
  creating_.erase(req.id);
  if (!t.ok()) return t.status();
  workloads_[req.id] = std::move(t).value();
  return OkStatus();
}

StatusOr<std::shared_ptr<task::Task>> PodImpl::GetTask(std::string_view tid) {
  if (tid == id_) return sandbox_;
  MutexLock l(&mu_);
  auto it = workloads_.find(tid);
  if (it == workloads_.end()) return NotFoundError("task with id: '{}' not found", tid);
  return it->second;
}

std::vector<std::shared_ptr<task::Task>> PodImpl::ListTasks() {
  std::vector<std::shared_ptr<task::Task>> out{sandbox_};
  MutexLock l(&mu_);
  for (auto& [id, t] : workloads_) out.push_back(t);
  return out;
}

Status PodImpl::KillTask(std::string_view tid, std::string_view exec_id, uint32_t signal,
                         bool all) {
  ASSIGN_OR_RETURN(auto t, GetTask(tid));
  if (all && !exec_id.empty()) {
    return FailedPreconditionError("cannot signal all with non empty ExecID: '{}'", exec_id);
  }
  if (!all || tid != id_) return t->KillExec(exec_id, signal, all);
  std::vector<std::future<Status>> kills;
  {
    MutexLock l(&mu_);
    for (const auto& entry : workloads_) {
      std::shared_ptr<task::Task> w = entry.second;
      kills.push_back(
          std::async(std::launch::async, [w, signal] { return w->KillExec("", signal, true); }));
    }
  }
  kills.push_back(
      std::async(std::launch::async, [t, signal] { return t->KillExec("", signal, true); }));
  Status first;
  for (auto& k : kills) {
    Status st = k.get();
    if (first.ok() && !st.ok()) first = st;
  }
  return first;
}

Status PodImpl::DeleteTask(std::string_view tid) {
  ASSIGN_OR_RETURN(auto t, GetTask(tid));
  ASSIGN_OR_RETURN(auto init, t->GetExec(""));
  if (init->state() == exec::State::kRunning) {
    return FailedPreconditionError("cannot delete task with running exec: '{}'", tid);
  }
  if (tid == id_) return OkStatus();
  MutexLock l(&mu_);
  auto it = workloads_.find(tid);
  if (it != workloads_.end()) workloads_.erase(it);
  return OkStatus();
}

}  // namespace runhcs::pod
