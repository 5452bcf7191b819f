// TaskBase: the skeleton every Task shares (ProcessTask, VmTask and the pod's
// SandboxTask): the init exec and the table of the others, the exec-id and
// exec-spec rules, Wait, DeleteExec, and the one init-exit path. What differs
// is in the hooks below.
//
// Init exit, always in this order (on the thread that finished init's exit):
//   1. the task is closing: CreateExec refuses, no exec can start any more;
//   2. every exec running or still starting is killed (KillAll) and waited
//      for, at most kExecsDieWithInit, then force-exited (137): their
//      TaskExits all precede init's;
//   3. execs never started are force-exited (1), so their Waits return;
//   4. Teardown() (the container, the VM, mounts);
//   5. init's TaskExit; Wait()/NotifyClosed() return.
// DeleteExec(""): init Running is FailedPrecondition; PrepareDelete(); a
// Created init is force-exited (0); waits (kDeleteWaitForClose) for 5;
// FinishDelete(); TaskDelete.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "base/latch.h"
#include "base/thread_annotations.h"
#include "events/publisher.h"
#include "exec/process_exec.h"
#include "task/exec_set.h"
#include "task/task.h"

namespace runhcs::task {

// The task's timeouts, in one place.
inline constexpr auto kExecsDieWithInit = std::chrono::seconds(5);
inline constexpr auto kDeleteWaitForClose = std::chrono::seconds(60);
// The status of an exec that did not die in time after init.
inline constexpr uint32_t kKilledStatus = 128 + 9;
// The status of an exec never started when its task closed (hcsshim's).
inline constexpr uint32_t kNeverStartedStatus = 1;

class TaskBase : public Task, public std::enable_shared_from_this<TaskBase> {
 public:
  const std::string& id() const override { return id_; }
  Status CreateExec(const ExecRequest& req) override;
  StatusOr<std::shared_ptr<exec::Exec>> GetExec(std::string_view exec_id) override;
  std::vector<std::shared_ptr<exec::Exec>> ListExecs() override;
  StatusOr<exec::ExecStatus> DeleteExec(std::string_view exec_id) override;
  StatusOr<exec::ExecStatus> Wait(exec::Deadline deadline) override;
  void NotifyClosed(std::function<void(const exec::ExecStatus&)> done,
                    std::function<bool()> wanted = nullptr) override;

 protected:
  TaskBase(std::string id, std::string bundle, std::string ns, events::Publisher* publisher);

  // Makes the init exec (once, at create) with the hook that runs the
  // init-exit path. Must be called on a task owned by a shared_ptr.
  void SetInit(exec::ProcessExec::Config cfg, std::unique_ptr<exec::Process> process);
  const std::shared_ptr<exec::ProcessExec>& init() const { return init_; }
  ExecSet& execs() { return execs_; }
  events::Publisher* publisher() const { return publisher_; }
  const std::string& bundle() const { return bundle_; }
  const std::string& ns() const { return ns_; }

  // The process of a new exec (its spec already checked).
  virtual StatusOr<std::unique_ptr<exec::Process>> NewExecProcess(const ExecRequest& req) = 0;
  // SIGKILLs every process of the container (step 2). Best effort.
  virtual void KillAll() = 0;
  // Releases what the container held (step 4). Must not wait for init.
  virtual void Teardown() {}
  // DeleteExec("") before and after waiting for the close.
  virtual void PrepareDelete() {}
  virtual void FinishDelete() {}

 private:
  void OnInitExit();

  const std::string id_;
  const std::string bundle_;
  const std::string ns_;
  events::Publisher* const publisher_;
  std::shared_ptr<exec::ProcessExec> init_;  // set once by SetInit
  Latch closed_;                             // step 5 done
  Mutex mu_;                                 // orders CreateExec with step 1
  CondVar added_cv_;
  bool closing_ GUARDED_BY(mu_) = false;
  int adding_ GUARDED_BY(mu_) = 0;  // CreateExecs publishing TaskExecAdded
  ExecSet execs_{id_};
};

}  // namespace runhcs::task
