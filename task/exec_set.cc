#include "task/exec_set.h"

namespace runhcs::task {

Status ValidateNewExecId(std::string_view id) {
  if (id.empty()) return AlreadyExistsError("exec id must not be empty");
  if (id.size() > 128 || id.find('/') != std::string_view::npos || id == "." || id == "..") {
    return InvalidArgumentError("invalid exec id {:?}", id);
  }
  return OkStatus();
}

containerd::events::TaskCreate CreateEvent(const CreateRequest& req, uint32_t pid) {
  containerd::events::TaskCreate ev;
  ev.set_container_id(req.id);
  ev.set_bundle(req.bundle);
  for (const auto& m : req.rootfs) {
    auto* pm = ev.add_rootfs();
    pm->set_type(m.type);
    pm->set_source(m.source);
    pm->set_target(m.target);
    for (const auto& o : m.options) pm->add_options(o);
  }
  ev.mutable_io()->set_stdin(req.stdio.stdin_path);
  ev.mutable_io()->set_stdout(req.stdio.stdout_path);
  ev.mutable_io()->set_stderr(req.stdio.stderr_path);
  ev.mutable_io()->set_terminal(req.stdio.terminal);
  ev.set_pid(pid);
  return ev;
}

containerd::events::TaskExecAdded ExecAddedEvent(const std::string& task_id,
                                                 const std::string& exec_id) {
  containerd::events::TaskExecAdded ev;
  ev.set_container_id(task_id);
  ev.set_exec_id(exec_id);
  return ev;
}

namespace {
template <typename Event>
Event ForTask(const std::string& task_id) {
  Event ev;
  ev.set_container_id(task_id);
  return ev;
}
}  // namespace

containerd::events::TaskPaused PausedEvent(const std::string& task_id) {
  return ForTask<containerd::events::TaskPaused>(task_id);
}
containerd::events::TaskResumed ResumedEvent(const std::string& task_id) {
  return ForTask<containerd::events::TaskResumed>(task_id);
}
containerd::events::TaskOOM OomEvent(const std::string& task_id) {
  return ForTask<containerd::events::TaskOOM>(task_id);
}

Status ExecSet::Add(const std::string& exec_id, std::shared_ptr<exec::ProcessExec> e) {
  MutexLock l(&mu_);
  if (execs_.count(exec_id)) {
    return AlreadyExistsError("exec: '{}' in task: '{}' already exists", exec_id, task_id_);
  }
  execs_[exec_id] = std::move(e);
  return OkStatus();
}

StatusOr<std::shared_ptr<exec::ProcessExec>> ExecSet::Get(std::string_view exec_id) {
  MutexLock l(&mu_);
  auto it = execs_.find(exec_id);
  if (it == execs_.end())
    return NotFoundError("exec: '{}' in task: '{}' not found", exec_id, task_id_);
  return it->second;
}

std::vector<std::shared_ptr<exec::ProcessExec>> ExecSet::List() {
  MutexLock l(&mu_);
  std::vector<std::shared_ptr<exec::ProcessExec>> out;
  for (auto& [id, e] : execs_) out.push_back(e);
  return out;
}

std::vector<std::shared_ptr<exec::ProcessExec>> ExecSet::InState(exec::State state) {
  MutexLock l(&mu_);
  std::vector<std::shared_ptr<exec::ProcessExec>> out;
  for (auto& [id, e] : execs_) {
    if (e->state() == state) out.push_back(e);
  }
  return out;
}

void ExecSet::Remove(std::string_view exec_id) {
  MutexLock l(&mu_);
  if (auto it = execs_.find(exec_id); it != execs_.end()) execs_.erase(it);
}

}  // namespace runhcs::task
