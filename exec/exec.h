// Exec: one process of a task (the init process, or one added by Exec), the
// C++ form of hcsshim's shimExec. Its contract below is the law for every
// implementation; exec_contract_test.cc checks each MUST line.
//
// States: Created -> Running -> Exited, and Created -> Exited. Nothing leaves
// Exited. ExitStatus is 255 and ExitedAt is unset until the exec exits.
//
// Thread-safety: every method may be called from any thread at any time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"
#include "stdio/paths.h"

namespace runhcs::exec {

enum class State { kCreated, kRunning, kExited };
std::string_view StateName(State s);  // "created", "running", "exited"

// The FailedPrecondition for `op` on an exec in the wrong state, worded as
// hcsshim's newExecInvalidStateError. `exec_id` is the task id for init.
Status InvalidStateError(std::string_view exec_id, std::string_view task_id, std::string_view state,
                         std::string_view op);

using SystemTime = std::chrono::system_clock::time_point;
using Deadline = std::optional<std::chrono::steady_clock::time_point>;

inline constexpr uint32_t kUnexitedStatus = 255;

using Stdio = stdio::Paths;

// A snapshot of an exec: what the task API's State returns.
struct ExecStatus {
  std::string task_id;
  std::string exec_id;  // "" for the init exec
  std::string bundle;
  uint32_t pid = 0;
  State state = State::kCreated;
  Stdio stdio;
  uint32_t exit_status = kUnexitedStatus;
  std::optional<SystemTime> exited_at;  // unset = Go's zero time
};

class Exec {
 public:
  virtual ~Exec() = default;

  // The exec id; for the init exec, the task id (hcsshim's convention).
  virtual const std::string& id() const = 0;
  // 0 until started. Valid in any state.
  virtual uint32_t pid() const = 0;
  // Valid in any state.
  virtual State state() const = 0;
  // Valid in any state. While not Exited it MUST report exit_status 255 and
  // no exited_at.
  virtual ExecStatus status() const = 0;

  // Starts the process. If the exec was already started (or is starting, or
  // has exited) it MUST return FailedPrecondition. On success the start event
  // (TaskStart for init, TaskExecStarted otherwise) is published before any
  // exit event of this exec.
  virtual Status Start() = 0;

  // Sends `signal`. If state() != Running it MUST return FailedPrecondition,
  // except that in Exited it MUST return NotFound. A signal that cannot be
  // delivered because the process is gone is NotFound.
  //
  // Note: hcsshim's hcsExec moves a Created exec to Exited(1) here; we follow
  // its interface comment (FailedPrecondition) instead.
  virtual Status Kill(uint32_t signal) = 0;

  // Resizes the terminal. If the exec has no terminal it MUST return
  // FailedPrecondition (in any state). If state() != Running the resize MUST
  // be ignored and return OK.
  virtual Status ResizePty(uint32_t width, uint32_t height) = 0;

  // Closes the process's stdin if open. Valid in any state; duplicate calls
  // MUST NOT return an error. `stdin` is accepted for the API's sake: as in
  // runc-v2 and hcsshim, stdin is the only stream CloseIO can close.
  virtual Status CloseIO(bool stdin) = 0;

  // Blocks until the exec has exited and returns its status. Valid in any
  // state; in Exited it MUST return at once with the original exit status.
  // With a deadline, returns DeadlineExceeded if it passes first.
  virtual StatusOr<ExecStatus> Wait(Deadline deadline = std::nullopt) = 0;

  // Wait without a thread: `done` gets what Wait would return once the exec
  // has exited, at once (on this thread) if it has, else on the thread that
  // finished the exit, with no lock held. `wanted` (optional) lets the exec
  // drop a waiter whose caller has gone (an abandoned Wait call).
  virtual void NotifyExit(std::function<void(const ExecStatus&)> done,
                          std::function<bool()> wanted = nullptr) = 0;

  // Forcibly ends the exec: terminates the process if running, records
  // `status` as the exit status and unblocks every waiter. Idempotent: on an
  // Exited exec it does nothing. Valid in any state.
  //
  // Note: hcsshim's hcsExec only kills a Running process here and records
  // whatever status the platform reports, and its fake sandbox exec always
  // records 1; we follow the interface comment and record `status`.
  virtual void ForceExit(uint32_t status) = 0;
};

}  // namespace runhcs::exec
