// What every Task implementation does the same way: the table of its
// non-init execs, the exec-id rules of the contract, and the TaskCreate /
// TaskExecAdded events.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/thread_annotations.h"
#include "containerd/events/task.pb.h"
#include "exec/process_exec.h"
#include "task/task.h"

namespace runhcs::task {

// The id of a new exec: empty is AlreadyExists (task.h's contract), one that
// cannot name a file (it names the exec's files) is InvalidArgument.
Status ValidateNewExecId(std::string_view exec_id);

// TaskCreate for `req`, with the init pid known at create (0: from Start on).
containerd::events::TaskCreate CreateEvent(const CreateRequest& req, uint32_t pid);
containerd::events::TaskExecAdded ExecAddedEvent(const std::string& task_id,
                                                 const std::string& exec_id);
// Task-wide events: {container_id} only.
containerd::events::TaskPaused PausedEvent(const std::string& task_id);
containerd::events::TaskResumed ResumedEvent(const std::string& task_id);
containerd::events::TaskOOM OomEvent(const std::string& task_id);

// The non-init execs of one task, by id. Thread-safe.
class ExecSet {
 public:
  explicit ExecSet(std::string task_id) : task_id_(std::move(task_id)) {}

  // AlreadyExists if the id is taken.
  Status Add(const std::string& exec_id, std::shared_ptr<exec::ProcessExec> e);
  // NotFound if unknown.
  StatusOr<std::shared_ptr<exec::ProcessExec>> Get(std::string_view exec_id);
  std::vector<std::shared_ptr<exec::ProcessExec>> List();
  std::vector<std::shared_ptr<exec::ProcessExec>> InState(exec::State state);
  void Remove(std::string_view exec_id);

 private:
  const std::string task_id_;
  Mutex mu_;
  std::map<std::string, std::shared_ptr<exec::ProcessExec>, std::less<>> execs_ GUARDED_BY(mu_);
};

}  // namespace runhcs::task
