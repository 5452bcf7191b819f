// The exit and delete events of an exec, built from its status, so every
// task publishes them the same way.
#pragma once

#include <string>

#include "containerd/events/task.pb.h"
#include "exec/exec.h"
#include "proto/timestamp.h"

namespace runhcs::exec {

// TaskExit{container_id, id, pid, exit_status, exited_at}. `id` is the exec
// id, or the container id for init.
inline containerd::events::TaskExit ExitEvent(const ExecStatus& st, const std::string& id) {
  containerd::events::TaskExit ev;
  ev.set_container_id(st.task_id);
  ev.set_id(id);
  ev.set_pid(st.pid);
  ev.set_exit_status(st.exit_status);
  if (st.exited_at) *ev.mutable_exited_at() = ToTimestamp(*st.exited_at);
  return ev;
}

// TaskDelete{container_id, pid, exit_status, exited_at, id = exec id}.
inline containerd::events::TaskDelete DeleteEvent(const ExecStatus& st) {
  containerd::events::TaskDelete ev;
  ev.set_container_id(st.task_id);
  ev.set_id(st.exec_id);
  ev.set_pid(st.pid);
  ev.set_exit_status(st.exit_status);
  if (st.exited_at) *ev.mutable_exited_at() = ToTimestamp(*st.exited_at);
  return ev;
}

}  // namespace runhcs::exec
