#include "exec/process_exec.h"

#include <cstdlib>

#include "base/event_loop.h"
#include "base/log.h"
#include "containerd/events/task.pb.h"
#include "exec/exec_events.h"

namespace runhcs::exec {

std::string_view StateName(State s) {
  switch (s) {
    case State::kCreated:
      return "created";
    case State::kRunning:
      return "running";
    case State::kExited:
      return "exited";
  }
  return "unknown";
}

// One stateless object per state. Each answers what an operation may do in
// its state; OK means "go ahead".
class ExecStateOps {
 public:
  virtual ~ExecStateOps() = default;
  virtual State id() const = 0;
  virtual bool MayStart() const { return false; }
  // OK, or the error Kill MUST return in this state (without the context).
  virtual Status MayKill() const = 0;
  virtual bool AppliesResize() const { return false; }
  virtual bool MayTransitionTo(State to) const = 0;
};

namespace {

class CreatedState final : public ExecStateOps {
 public:
  State id() const override { return State::kCreated; }
  bool MayStart() const override { return true; }
  Status MayKill() const override { return FailedPreconditionError("not running"); }
  bool MayTransitionTo(State to) const override {
    return to == State::kRunning || to == State::kExited;
  }
};

class RunningState final : public ExecStateOps {
 public:
  State id() const override { return State::kRunning; }
  Status MayKill() const override { return OkStatus(); }
  bool AppliesResize() const override { return true; }
  bool MayTransitionTo(State to) const override { return to == State::kExited; }
};

class ExitedState final : public ExecStateOps {
 public:
  State id() const override { return State::kExited; }
  Status MayKill() const override { return NotFoundError("process already exited"); }
  bool MayTransitionTo(State) const override { return false; }
};

const CreatedState kCreated;
const RunningState kRunning;
const ExitedState kExited;

const ExecStateOps* OpsFor(State s) {
  switch (s) {
    case State::kCreated:
      return &kCreated;
    case State::kRunning:
      return &kRunning;
    case State::kExited:
      return &kExited;
  }
  return &kExited;
}

}  // namespace

std::shared_ptr<ProcessExec> ProcessExec::Create(Config cfg, std::unique_ptr<Process> process,
                                                 events::Publisher* publisher,
                                                 ExitedHook on_exited) {
  return std::make_shared<ProcessExec>(std::move(cfg), std::move(process), publisher,
                                       std::move(on_exited));
}

ProcessExec::ProcessExec(Config cfg, std::unique_ptr<Process> process, events::Publisher* publisher,
                         ExitedHook on_exited)
    : cfg_(std::move(cfg)),
      id_(cfg_.exec_id.empty() ? cfg_.task_id : cfg_.exec_id),
      publisher_(publisher),
      on_exited_(std::move(on_exited)),
      process_(std::move(process)),
      state_(&kCreated),
      pid_(cfg_.pid) {}

const std::string& ProcessExec::id() const { return id_; }

uint32_t ProcessExec::pid() const {
  MutexLock l(&mu_);
  return pid_;
}

State ProcessExec::state() const {
  MutexLock l(&mu_);
  return state_->id();
}

ExecStatus ProcessExec::status() const {
  MutexLock l(&mu_);
  return StatusLocked();
}

ExecStatus ProcessExec::StatusLocked() const {
  ExecStatus s;
  s.task_id = cfg_.task_id;
  s.exec_id = cfg_.exec_id;
  s.bundle = cfg_.bundle;
  s.pid = pid_;
  s.state = state_->id();
  s.stdio = cfg_.stdio;
  s.exit_status = exit_status_;
  s.exited_at = exited_at_;
  return s;
}

Status InvalidStateError(std::string_view exec_id, std::string_view task_id, std::string_view state,
                         std::string_view op) {
  return FailedPreconditionError("exec: '{}' in task: '{}' is in invalid state: '{}' for {}",
                                 exec_id, task_id, state, op);
}

Status ProcessExec::InvalidState(std::string_view op) const {
  return InvalidStateError(id_, cfg_.task_id, starting_ ? "starting" : StateName(state_->id()), op);
}

void ProcessExec::TransitionLocked(State to) {
  if (!state_->MayTransitionTo(to)) {
    spdlog::critical("exec {}/{}: invalid state transition {} -> {}", cfg_.task_id, id_,
                     StateName(state_->id()), StateName(to));
    std::abort();
  }
  state_ = OpsFor(to);
}

Status ProcessExec::Start() {
  {
    MutexLock l(&mu_);
    if (!state_->MayStart() || starting_) return InvalidState("start");
    if (start_blocked_) {
      return FailedPreconditionError(
          "exec: '{}' in task: '{}' cannot start: the task's init has exited", id_, cfg_.task_id);
    }
    starting_ = true;
  }
  std::weak_ptr<ProcessExec> weak = weak_from_this();
  StatusOr<uint32_t> pid = process_->Start([weak](uint32_t status) {
    if (auto self = weak.lock()) self->OnProcessExit(status);
  });
  std::optional<uint32_t> early, forced;
  ExecStatus snapshot;
  bool failed_claimed = false;
  {
    MutexLock l(&mu_);
    starting_ = false;
    if (!pid.ok()) {
      failed_claimed = ClaimExitLocked();
    } else {
      pid_ = *pid;
      started_ = true;
      TransitionLocked(State::kRunning);
      early = early_exit_;
      forced = forced_exit_;
      snapshot = StatusLocked();
    }
  }
  if (!pid.ok()) {
    // Like hcsshim's exitFromCreatedL(1): Exited(1), and no exit event since
    // no start event went out.
    if (failed_claimed) FinishExit(1);
    return pid.status().Wrap(fmt::format("start exec '{}' in task '{}'", id_, cfg_.task_id));
  }
  if (is_init()) {
    containerd::events::TaskStart ev;
    ev.set_container_id(cfg_.task_id);
    ev.set_pid(snapshot.pid);
    publisher_->Publish(ev);
  } else {
    containerd::events::TaskExecStarted ev;
    ev.set_container_id(cfg_.task_id);
    ev.set_exec_id(cfg_.exec_id);
    ev.set_pid(snapshot.pid);
    publisher_->Publish(ev);
  }
  bool publish_exit;
  {
    MutexLock l(&mu_);
    start_published_ = true;
    publish_exit = exit_publish_pending_;
    exit_publish_pending_ = false;
    if (publish_exit) snapshot = StatusLocked();
  }
  if (publish_exit) CompleteExit(snapshot, /*publish=*/true);
  // An exit that came while starting completes in the background: a client
  // reads the exec's output only once Start has returned (CRI's ExecSync
  // attaches then), so Start must not wait for that output to drain.
  if (forced || early) {
    bool claimed;
    {
      MutexLock l(&mu_);
      claimed = ClaimExitLocked();
    }
    if (claimed) {
      // Claimed, the exec is still the Running one this Start made.
      if (forced) process_->Terminate();
      FinishExitInBackground(forced ? *forced : *early);
    }
  }
  return OkStatus();
}

bool ProcessExec::BlockStart() {
  MutexLock l(&mu_);
  start_blocked_ = true;
  return starting_;
}

Status ProcessExec::Kill(uint32_t signal) {
  {
    MutexLock l(&mu_);
    if (starting_) return InvalidState("kill");
    Status st = state_->MayKill();
    if (!st.ok()) {
      return st.code() == Code::kNotFound ? NotFoundError(
                                                "exec: '{}' in task: '{}' not found "
                                                "(already exited)",
                                                id_, cfg_.task_id)
                                          : InvalidState("kill");
    }
  }
  Status st = process_->Signal(signal);
  if (!st.ok())
    return st.Wrap(fmt::format("signal {} to exec '{}' in task '{}'", signal, id_, cfg_.task_id));
  return OkStatus();
}

Status ProcessExec::ResizePty(uint32_t width, uint32_t height) {
  if (!cfg_.stdio.terminal) {
    return FailedPreconditionError("exec: '{}' in task: '{}' is not a tty", id_, cfg_.task_id);
  }
  {
    MutexLock l(&mu_);
    if (!state_->AppliesResize()) return OkStatus();
  }
  return process_->ResizePty(width, height);
}

Status ProcessExec::CloseIO(bool /*stdin*/) {
  {
    MutexLock l(&mu_);
    if (stdin_closed_) return OkStatus();
    stdin_closed_ = true;
  }
  process_->CloseStdin();
  return OkStatus();
}

StatusOr<ExecStatus> ProcessExec::Wait(Deadline deadline) {
  if (!exited_.Wait(deadline)) {
    return DeadlineExceededError("wait for exec '{}' in task '{}'", id_, cfg_.task_id);
  }
  return status();
}

void ProcessExec::NotifyExit(std::function<void(const ExecStatus&)> done,
                             std::function<bool()> wanted) {
  // `this` outlives the waiter: only exited_.Open() runs it.
  exited_.Notify({[this, done = std::move(done)] { done(status()); }, std::move(wanted)});
}

void ProcessExec::ForceExit(uint32_t status) {
  bool running;
  {
    MutexLock l(&mu_);
    if (starting_) {
      // Start is in flight: it finishes the job once the process exists.
      if (!forced_exit_) forced_exit_ = status;
      return;
    }
    if (!ClaimExitLocked()) return;
    running = state_->id() == State::kRunning;
  }
  if (running) process_->Terminate();
  FinishExit(status);
}

void ProcessExec::OnProcessExit(uint32_t status) {
  {
    MutexLock l(&mu_);
    if (starting_) {
      early_exit_ = status;
      return;
    }
    if (!ClaimExitLocked()) return;  // ForceExit got there first
  }
  FinishExit(status);
}

bool ProcessExec::ClaimExitLocked() {
  if (exiting_ || state_->id() == State::kExited) return false;
  exiting_ = true;
  return true;
}

void ProcessExec::FinishExitInBackground(uint32_t status) {
  auto self = shared_from_this();
  process_->ReleaseIo([self, status] { self->AfterIoReleased(status); });
}

void ProcessExec::FinishExit(uint32_t status) {
  // An exit reported on the loop: nothing here may block it.
  if (EventLoop::Get().InLoop()) return FinishExitInBackground(status);
  // Off the loop the caller waits: ForceExit promises Exited on return.
  Latch released;
  process_->ReleaseIo([&released] { released.Open(); });
  released.Wait();
  if (AfterIoReleased(status)) exited_.Wait();
}

bool ProcessExec::AfterIoReleased(uint32_t status) {
  ExecStatus snapshot;
  bool publish;
  {
    MutexLock l(&mu_);
    TransitionLocked(State::kExited);
    exit_status_ = status;
    exited_at_ = std::chrono::system_clock::now();
    snapshot = StatusLocked();
    if (started_ && !start_published_) {
      exit_publish_pending_ = true;  // Start completes the exit after its start event
      return false;
    }
    publish = started_;  // no exit event for an exec that never started
  }
  CompleteExit(snapshot, publish);
  return true;
}

void ProcessExec::CompleteExit(const ExecStatus& snapshot, bool publish) {
  if (publish) PublishExit(snapshot);
  if (!on_exited_) return exited_.Open();
  auto self = shared_from_this();
  on_exited_(snapshot, [self] { self->exited_.Open(); });
}

void ProcessExec::PublishExit(const ExecStatus& st) {
  if (is_init()) return;  // the task publishes init's exit, after every exec's
  publisher_->Publish(ExitEvent(st, cfg_.exec_id));
}

}  // namespace runhcs::exec
