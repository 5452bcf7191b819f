// ProcessExec: the Exec state machine over a Process seam.
//
// States are explicit objects (CreatedState, RunningState, ExitedState in
// process_exec.cc), each deciding what an operation may do in that state;
// TransitionLocked() checks every move against the states' whitelists and
// aborts on an impossible one (a bug, not an input error).
//
// Events (through the Publisher, never with mu_ held):
//   init:  TaskStart{container_id, pid} on Start. Its TaskExit belongs to the
//          task, which publishes it after every exec's exit.
//   exec:  TaskExecStarted{container_id, exec_id, pid} on Start, then
//          TaskExit{container_id, exec_id, pid, status, exited_at} on exit.
//   The start event always precedes the exit event; an exec that never
//   started publishes no exit.
//
// Exit order: ReleaseIo() (drain and close stdio), then the state becomes
// Exited, then TaskExit, then the on_exited hook, then waiters wake. So when
// Wait returns, everything about the exit has happened. An exit reported on
// the event loop (the Reaper's, the agent's) runs this sequence without
// blocking the loop: each step continues from the one before's callback.
#pragma once

#include <functional>
#include <memory>

#include "base/latch.h"
#include "base/thread_annotations.h"
#include "events/publisher.h"
#include "exec/exec.h"
#include "exec/process.h"

namespace runhcs::exec {

class ExecStateOps;

class ProcessExec : public Exec, public std::enable_shared_from_this<ProcessExec> {
 public:
  struct Config {
    std::string task_id;
    std::string exec_id;  // "" = the init exec
    std::string bundle;
    Stdio stdio;
    uint32_t pid = 0;  // known before Start (an init the runtime created)
  };
  // Runs (without locks) once the exec is Exited and its exit event is out;
  // waiters wake when it calls `done` (once, from any thread). It may run on
  // the event loop, so it must not block: blocking work goes to a thread of
  // its own, which calls `done` at its end. It must not wait for this exec.
  using ExitedHook = std::function<void(const ExecStatus&, std::function<void()> done)>;

  static std::shared_ptr<ProcessExec> Create(Config cfg, std::unique_ptr<Process> process,
                                             events::Publisher* publisher,
                                             ExitedHook on_exited = nullptr);

  const std::string& id() const override;
  uint32_t pid() const override;
  State state() const override;
  ExecStatus status() const override;
  Status Start() override;
  Status Kill(uint32_t signal) override;
  Status ResizePty(uint32_t width, uint32_t height) override;
  Status CloseIO(bool stdin) override;
  StatusOr<ExecStatus> Wait(Deadline deadline = std::nullopt) override;
  void NotifyExit(std::function<void(const ExecStatus&)> done,
                  std::function<bool()> wanted = nullptr) override;
  void ForceExit(uint32_t status) override;

  bool is_init() const { return cfg_.exec_id.empty(); }

  // Every later Start fails with FailedPrecondition (its task's init has
  // exited). True if a Start is in flight now: it completes, and the caller
  // waits for that exec like a running one.
  bool BlockStart();

  // Use Create(); public for make_shared only.
  ProcessExec(Config cfg, std::unique_ptr<Process> process, events::Publisher* publisher,
              ExitedHook on_exited);

 private:
  void OnProcessExit(uint32_t status);
  // Claims the right to finish the exit; false if another path has it.
  bool ClaimExitLocked() REQUIRES(mu_);
  // Runs the exit sequence for a claimed exit. On the event loop it
  // returns at once and the sequence continues when the stdio is released;
  // elsewhere it returns when the exit is complete.
  void FinishExit(uint32_t status) EXCLUDES(mu_);
  // The same, always returning at once.
  void FinishExitInBackground(uint32_t status) EXCLUDES(mu_);
  // The rest of it, once the stdio is released. False if Start completes it.
  bool AfterIoReleased(uint32_t status) EXCLUDES(mu_);
  // Exit event, hook, then wakes waiters.
  void CompleteExit(const ExecStatus& snapshot, bool publish) EXCLUDES(mu_);
  void TransitionLocked(State to) REQUIRES(mu_);
  ExecStatus StatusLocked() const REQUIRES(mu_);
  Status InvalidState(std::string_view op) const REQUIRES(mu_);
  void PublishExit(const ExecStatus& st);

  // Read-only after construction.
  const Config cfg_;
  const std::string id_;  // exec id, or the task id for init
  events::Publisher* const publisher_;
  const ExitedHook on_exited_;
  // The seam; its calls follow the rules in process.h.
  const std::unique_ptr<Process> process_;

  // mu_ guards everything below.
  Latch exited_;  // opened when the exit is complete: Wait may return

  mutable Mutex mu_;
  const ExecStateOps* state_ GUARDED_BY(mu_);
  bool starting_ GUARDED_BY(mu_) = false;  // Process::Start in flight
  bool start_blocked_ GUARDED_BY(mu_) = false;
  bool started_ GUARDED_BY(mu_) = false;  // Process::Start succeeded
  bool exiting_ GUARDED_BY(mu_) = false;  // an exit has been claimed
  bool stdin_closed_ GUARDED_BY(mu_) = false;
  bool start_published_ GUARDED_BY(mu_) = false;
  bool exit_publish_pending_ GUARDED_BY(mu_) = false;    // exit seen before start event
  std::optional<uint32_t> early_exit_ GUARDED_BY(mu_);   // exit reported while starting
  std::optional<uint32_t> forced_exit_ GUARDED_BY(mu_);  // ForceExit while starting
  uint32_t pid_ GUARDED_BY(mu_) = 0;
  uint32_t exit_status_ GUARDED_BY(mu_) = kUnexitedStatus;
  std::optional<SystemTime> exited_at_ GUARDED_BY(mu_);
};

}  // namespace runhcs::exec
