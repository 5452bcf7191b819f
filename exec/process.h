// Process: the seam under an exec. It does the work that differs between an
// OCI runtime on the host, the guest agent in a utility VM and the pod
// sandbox's fake init; ProcessExec keeps the state machine and the events.
//
// ProcessExec calls these without holding its lock, never concurrently for the
// same method, and:
//   Start       at most once;
//   Signal, ResizePty only after a successful Start;
//   CloseStdin  at most once;
//   Terminate   at most once, only after a successful Start;
//   ReleaseIo   exactly once, when the exec exits (however it exits).
#pragma once

#include <cstdint>
#include <functional>

#include "base/status.h"

namespace runhcs::exec {

class Process {
 public:
  virtual ~Process() = default;

  // Called once with the exit status (exit code, or 128+signal), from the
  // event loop or any thread of the implementation's, never from inside
  // Start. It does not block.
  using ExitCallback = std::function<void(uint32_t status)>;

  // Starts the process and returns its pid. `on_exit` must be reported
  // exactly once if Start succeeds, and never if it fails.
  virtual StatusOr<uint32_t> Start(ExitCallback on_exit) = 0;
  // Delivers `signal`. NotFound if the process is already gone.
  virtual Status Signal(uint32_t signal) = 0;
  virtual Status ResizePty(uint32_t width, uint32_t height) = 0;
  virtual void CloseStdin() = 0;
  // Kills the process (SIGKILL or the equivalent); best effort.
  virtual void Terminate() = 0;
  // Flushes what is left of stdout/stderr (bounded in time) and closes every
  // stdio stream, so a client waiting for EOF sees it; then calls `done`,
  // exactly once, on the event loop or on this thread. Never blocks.
  virtual void ReleaseIo(std::function<void()> done) = 0;
};

}  // namespace runhcs::exec
