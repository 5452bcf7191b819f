// Pod: a sandbox task and the workload tasks that joined it, served by one
// shim (hcsshim's shimPod). For a hypervisor-isolated pod the sandbox task
// owns the utility VM and every workload runs inside it.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/thread_annotations.h"
#include "oci/spec.h"
#include "task/task.h"
#include "uvm/utility_vm.h"

namespace runhcs::pod {

class Pod {
 public:
  virtual ~Pod() = default;

  virtual const std::string& id() const = 0;
  // Adds a workload task. An id equal to the pod's or already in use MUST
  // return AlreadyExists. If the sandbox's init is not Running it MUST return
  // FailedPrecondition, as it MUST when the spec's CRI annotations do not
  // name this pod as a "container".
  virtual Status CreateTask(const task::CreateRequest& req, const oci::Spec& spec) = 0;
  // The sandbox (id == pod id) or a workload. Unknown MUST return NotFound.
  virtual StatusOr<std::shared_ptr<task::Task>> GetTask(std::string_view tid) = 0;
  // Every task, the sandbox first.
  virtual std::vector<std::shared_ptr<task::Task>> ListTasks() = 0;
  // Signals a task's exec. Unknown tid MUST return NotFound; `all` with a
  // non-empty exec id MUST return FailedPrecondition. `all` on the sandbox
  // signals every workload (in parallel) and then the sandbox; the first
  // error is returned.
  virtual Status KillTask(std::string_view tid, std::string_view exec_id, uint32_t signal,
                          bool all) = 0;
  // Forgets a workload whose init has exited. Running init MUST return
  // FailedPrecondition; unknown NotFound. Deleting the sandbox is a no-op
  // (it stays, so the shim can still answer for it).
  virtual Status DeleteTask(std::string_view tid) = 0;
};

// Makes a workload task, given the pod's VM (null for process isolation).
using WorkloadFactory = std::function<StatusOr<std::shared_ptr<task::Task>>(
    const task::CreateRequest&, const oci::Spec&, std::shared_ptr<uvm::UtilityVm> host)>;

class PodImpl : public Pod {
 public:
  PodImpl(std::string id, std::shared_ptr<task::Task> sandbox, std::shared_ptr<uvm::UtilityVm> host,
          WorkloadFactory factory);

  const std::string& id() const override { return id_; }
  Status CreateTask(const task::CreateRequest& req, const oci::Spec& spec) override;
  StatusOr<std::shared_ptr<task::Task>> GetTask(std::string_view tid) override;
  std::vector<std::shared_ptr<task::Task>> ListTasks() override;
  Status KillTask(std::string_view tid, std::string_view exec_id, uint32_t signal,
                  bool all) override;
  Status DeleteTask(std::string_view tid) override;

 private:
  // Read-only after construction.
  const std::string id_;
  const std::shared_ptr<task::Task> sandbox_;
  const std::shared_ptr<uvm::UtilityVm> host_;
  const WorkloadFactory factory_;

  Mutex mu_;
  std::map<std::string, std::shared_ptr<task::Task>, std::less<>> workloads_ GUARDED_BY(mu_);
  // Ids being created, so a duplicate is refused without holding mu_
  // across the (slow) factory call.
  std::map<std::string, bool, std::less<>> creating_ GUARDED_BY(mu_);
};

}  // namespace runhcs::pod
