// Task: a container and its execs, the C++ form of hcsshim's shimTask.
//
// A task always has an init exec (GetExec("")); its state is the task's.
// Thread-safety: every method may be called from any thread.
#pragma once

#include "runhcs/wkt/any.pb.h"

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "exec/exec.h"
#include "oci/mounts.h"
#include "runhcs/diag.pb.h"

namespace runhcs::task {

// What an Exec RPC asks for.
struct ExecRequest {
  std::string exec_id;
  exec::Stdio stdio;
  std::string process_json;  // the OCI Process (the Any's JSON value)
};

using Mount = oci::Mount;

// What a Create RPC asks for.
struct CreateRequest {
  std::string id;
  std::string bundle;
  std::vector<Mount> rootfs;
  exec::Stdio stdio;
  runhcs::wkt::Any options;
};

struct ProcessDetails {
  uint32_t pid = 0;
  std::string exec_id;
};

// The error for VM-only operations on a task without a utility VM.
Status NotIsolatedError(std::string_view task_id);

// Update's resources: an OCI LinuxResources in JSON under containerd's type
// URL. Returns the JSON; InvalidArgument for another type or text that is
// not JSON.
StatusOr<std::string> LinuxResourcesJson(std::string_view task_id,
                                         const runhcs::wkt::Any& resources);

// Where a diagnostic share (shimdiag share) may land in the VM: an absolute,
// clean path (no ".", "..", "//" or trailing "/") that is not "/" and not at
// or under what the VM itself runs on: /proc, /sys, /dev, /run and the
// agent's files (/init, /bin, /sbin, /usr, /lib, /lib64). InvalidArgument,
// naming the path, otherwise.
Status ValidateShareTarget(std::string_view vm_path);

class Task {
 public:
  virtual ~Task() = default;

  virtual const std::string& id() const = 0;

  // Adds an exec in Created state and publishes TaskExecAdded. An empty or
  // already used exec id MUST return AlreadyExists; an init that is not
  // Running MUST return FailedPrecondition.
  virtual Status CreateExec(const ExecRequest& req) = 0;
  // "" is the init exec. An unknown id MUST return NotFound.
  virtual StatusOr<std::shared_ptr<exec::Exec>> GetExec(std::string_view exec_id) = 0;
  // The execs other than init (the fake sandbox task lists its init).
  virtual std::vector<std::shared_ptr<exec::Exec>> ListExecs() = 0;
  // Signals one exec. `all` with a non-empty exec id MUST return
  // FailedPrecondition; `all` signals every process of the task. Errors as
  // Exec::Kill; an unknown exec id is NotFound.
  virtual Status KillExec(std::string_view exec_id, uint32_t signal, bool all) = 0;
  // Removes an exec and publishes TaskDelete. Created: it is force-exited
  // with status 0 first. Running MUST return FailedPrecondition. Returns the
  // exec's final status. For init ("") it waits (bounded) until the task is
  // closed, so TaskExit always precedes TaskDelete.
  virtual StatusOr<exec::ExecStatus> DeleteExec(std::string_view exec_id) = 0;
  virtual StatusOr<std::vector<ProcessDetails>> Pids() = 0;
  // Blocks until the whole task is closed (init exited, resources released,
  // init's TaskExit published) and returns init's status.
  virtual StatusOr<exec::ExecStatus> Wait(exec::Deadline deadline) = 0;
  // Wait without a thread: `done` gets init's status once the task is
  // closed, at once if it is. `wanted` as in Exec::NotifyExit.
  virtual void NotifyClosed(std::function<void(const exec::ExecStatus&)> done,
                            std::function<bool()> wanted = nullptr) = 0;

  // Pause/Resume publish TaskPaused/TaskResumed. Paused() is true between
  // them; the init exec stays Running meanwhile.
  virtual Status Pause() = 0;
  virtual Status Resume() = 0;
  virtual bool Paused() { return false; }
  // `resources` is an Any as sent by Update (LinuxResources JSON, ...).
  virtual Status Update(const runhcs::wkt::Any& resources) = 0;
  // An Any ready for StatsResponse.
  virtual StatusOr<runhcs::wkt::Any> Stats() = 0;

  // Diagnostics; without a utility VM these return NotIsolatedError.
  virtual StatusOr<int32_t> ExecInHost(
      const containerd::runhcs::v1::diag::ExecProcessRequest& req) = 0;
  virtual std::string DumpGuestStacks() = 0;
  // `vm_path` passed ValidateShareTarget.
  virtual Status Share(const std::string& host_path, const std::string& vm_path,
                       bool read_only) = 0;
};

}  // namespace runhcs::task
