#include "task/task.h"

namespace runhcs::task {

Status NotIsolatedError(std::string_view task_id) {
  return FailedPreconditionError("task '{}' is not isolated: it has no utility VM", task_id);
}

}  // namespace runhcs::task
