// TaskService: containerd.task.v2.Task (17 RPCs) and
// containerd.runhcs.v1.diag.ShimDiag, routed to the pod/task/exec model.
//
// Every handler is a thin wrapper: decode, call the model, encode. Errors are
// Status values with errdefs codes; the TTRPC layer maps them to the wire
// once. Namespaces come from the -namespace flag, never from metadata
// (containerd 1.6 sends none on task calls).
//
// What a shim serves (the reference shim's rules):
//  - A task shim (its own id, no pod) serves one task. A pod shim
//    (is_sandbox) first creates the pod from the sandbox's Create and then
//    adds each workload Create to it.
//  - An id this shim does not serve is NotFound, including before Create.
//  - After Delete of a task's init, the task is gone (NotFound); Shutdown
//    exits the shim only when no task remains, and only for its own id.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/stacks.h"
#include "base/thread_annotations.h"
#include "events/publisher.h"
#include "oci/spec.h"
#include "pod/pod.h"
#include "task/task.h"
#include "ttrpc/server.h"

namespace runhcs::service {

// Builds tasks and pods for Create. The process-isolation and utility-VM
// implementations plug in here.
class TaskFactory {
 public:
  virtual ~TaskFactory() = default;
  // A task in a shim of its own. Publishes TaskCreate on success.
  virtual StatusOr<std::shared_ptr<task::Task>> CreateTask(const task::CreateRequest& req,
                                                           const oci::Spec& spec) = 0;
  // A pod whose sandbox is `req`. Publishes the sandbox's TaskCreate.
  virtual StatusOr<std::shared_ptr<pod::Pod>> CreatePod(const task::CreateRequest& req,
                                                        const oci::Spec& spec) = 0;
};

class TaskService {
 public:
  struct Config {
    std::string id;  // the shim's -id (the sandbox id for a pod shim)
    std::string ns;
    bool is_sandbox = false;
    TaskFactory* factory = nullptr;
    events::Publisher* publisher = nullptr;
    // Called once Shutdown decides the shim should exit; the daemon stops
    // after the reply is sent.
    std::function<void()> on_shutdown;
    // Names the pcs of DiagStacks; unset: symbolized in this process.
    Symbolizer symbolize;
  };

  explicit TaskService(Config cfg);

  // Registers both services' handlers.
  void Register(ttrpc::Server* server);

  // Number of tasks still served (a deleted task no longer counts).
  size_t task_count();

 private:
  StatusOr<std::shared_ptr<task::Task>> GetTask(std::string_view id);
  StatusOr<std::shared_ptr<exec::Exec>> GetExec(std::string_view id, std::string_view exec_id);

  const Config cfg_;

  Mutex mu_;
  // Create of the first task or pod is serialized by create_mu_ (held
  // across the factory call; never taken by other RPCs).
  Mutex create_mu_;
  std::shared_ptr<task::Task> task_ GUARDED_BY(mu_);  // task shim
  std::shared_ptr<pod::Pod> pod_ GUARDED_BY(mu_);     // pod shim
  bool task_deleted_ GUARDED_BY(mu_) = false;
  bool shutdown_called_ GUARDED_BY(mu_) = false;
};

}  // namespace runhcs::service
