#include "task/task_base.h"

#include <nlohmann/json.hpp>

#include "base/event_loop.h"
#include "base/log.h"
#include "base/thread_group.h"
#include "exec/exec_events.h"

namespace runhcs::task {

TaskBase::TaskBase(std::string id, std::string bundle, std::string ns, events::Publisher* publisher)
    : id_(std::move(id)), bundle_(std::move(bundle)), ns_(std::move(ns)), publisher_(publisher) {}

void TaskBase::SetInit(exec::ProcessExec::Config cfg, std::unique_ptr<exec::Process> process) {
  std::weak_ptr<TaskBase> weak = weak_from_this();
  std::string name = "exit-" + id_;
  auto hook = [weak, name](const exec::ExecStatus&, std::function<void()> done) {
    // OnInitExit waits for the execs and runs the runtime's delete. Off the
    // event loop (an RPC, the VM watcher) it runs here, as the caller waits
    // for it anyway; whoever drops the task last then finds it closed.
    if (!EventLoop::Get().InLoop()) {
      if (auto t = weak.lock()) t->OnInitExit();
      return done();
    }
    // On the loop it gets a thread of its own, which holds the task until
    // its TaskExit is out.
    std::shared_ptr<TaskBase> t = weak.lock();
    if (!t) return done();
    auto run = [t, done] {
      t->OnInitExit();
      done();
    };
    if (Status st = ThreadGroup::Get().Spawn(name, run); !st.ok()) {
      spdlog::error("{}; closing the task on the event loop", st.ToString());
      run();
    }
  };
  init_ =
      exec::ProcessExec::Create(std::move(cfg), std::move(process), publisher_, std::move(hook));
}

void TaskBase::OnInitExit() {
  std::vector<std::shared_ptr<exec::ProcessExec>> all;
  {
    MutexLock l(&mu_);
    closing_ = true;
    // Every TaskExecAdded out before anything of the exit.
    while (adding_ > 0) added_cv_.Wait(&mu_);
    all = execs_.List();
  }
  std::vector<std::shared_ptr<exec::ProcessExec>> live;
  for (auto& e : all) {
    bool starting = e->BlockStart();
    if (starting || e->state() == exec::State::kRunning) live.push_back(e);
  }
  if (!live.empty()) {
    KillAll();
    auto deadline = std::chrono::steady_clock::now() + kExecsDieWithInit;
    for (auto& e : live) {
      if (!e->Wait(deadline).ok()) e->ForceExit(kKilledStatus);
    }
  }
  for (auto& e : all) {
    if (e->state() == exec::State::kCreated) e->ForceExit(kNeverStartedStatus);
  }
  Teardown();
  publisher_->Publish(exec::ExitEvent(init_->status(), id_));
  closed_.Open();
}

Status TaskBase::CreateExec(const ExecRequest& req) {
  RETURN_IF_ERROR(ValidateNewExecId(req.exec_id));
  try {
    auto j = nlohmann::json::parse(req.process_json);
    if (!j.is_object() || !j.contains("args") || !j["args"].is_array() || j["args"].empty()) {
      return InvalidArgumentError("exec {:?}: process spec has no args", req.exec_id);
    }
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError("exec {:?}: process spec is not JSON: {}", req.exec_id, e.what());
  }
  ASSIGN_OR_RETURN(std::unique_ptr<exec::Process> process, NewExecProcess(req));
  auto e = exec::ProcessExec::Create({id_, req.exec_id, bundle_, req.stdio, 0}, std::move(process),
                                     publisher_);
  {
    MutexLock l(&mu_);
    if (closing_ || init_->state() != exec::State::kRunning) {
      return FailedPreconditionError("cannot exec in task '{}': its init is not running", id_);
    }
    RETURN_IF_ERROR(execs_.Add(req.exec_id, e));
    ++adding_;
  }
  publisher_->Publish(ExecAddedEvent(id_, req.exec_id));
  MutexLock l(&mu_);
  if (--adding_ == 0) added_cv_.SignalAll();
  return OkStatus();
}

StatusOr<std::shared_ptr<exec::Exec>> TaskBase::GetExec(std::string_view exec_id) {
  if (exec_id.empty()) return std::shared_ptr<exec::Exec>(init_);
  ASSIGN_OR_RETURN(auto e, execs_.Get(exec_id));
  return std::shared_ptr<exec::Exec>(std::move(e));
}

std::vector<std::shared_ptr<exec::Exec>> TaskBase::ListExecs() {
  std::vector<std::shared_ptr<exec::Exec>> out;
  for (auto& e : execs_.List()) out.push_back(e);
  return out;
}

StatusOr<exec::ExecStatus> TaskBase::DeleteExec(std::string_view exec_id) {
  ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
  exec::State st = e->state();
  if (st == exec::State::kRunning)
    return exec::InvalidStateError(e->id(), id_, exec::StateName(st), "delete");
  if (exec_id.empty()) {
    PrepareDelete();
    if (st == exec::State::kCreated) e->ForceExit(0);
    if (!closed_.Wait(std::chrono::steady_clock::now() + kDeleteWaitForClose)) {
      return DeadlineExceededError("task '{}' did not finish exiting within {}s", id_,
                                   kDeleteWaitForClose.count());
    }
    FinishDelete();
  } else {
    if (st == exec::State::kCreated) e->ForceExit(0);
    execs_.Remove(exec_id);
  }
  exec::ExecStatus status = e->status();
  publisher_->Publish(exec::DeleteEvent(status));
  return status;
}

StatusOr<exec::ExecStatus> TaskBase::Wait(exec::Deadline deadline) {
  if (!closed_.Wait(deadline)) return DeadlineExceededError("wait for task '{}'", id_);
  return init_->status();
}

void TaskBase::NotifyClosed(std::function<void(const exec::ExecStatus&)> done,
                            std::function<bool()> wanted) {
  // `this` outlives the waiter: only closed_.Open() runs it.
  closed_.Notify({[this, done = std::move(done)] { done(init_->status()); }, std::move(wanted)});
}

}  // namespace runhcs::task
