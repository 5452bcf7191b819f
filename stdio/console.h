// The --console-socket protocol of OCI runtimes: the caller listens on a
// unix socket, the runtime connects and sends the pty master of the
// container's terminal as SCM_RIGHTS.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "base/fd.h"
#include "base/status.h"

namespace runhcs::stdio {

class ConsoleSocket {
 public:
  // A socket in a fresh private directory under `tmp_dir`.
  static StatusOr<std::unique_ptr<ConsoleSocket>> Create(const std::string& tmp_dir = "/tmp");
  // Removes the socket and its directory.
  ~ConsoleSocket();
  ConsoleSocket(const ConsoleSocket&) = delete;
  ConsoleSocket& operator=(const ConsoleSocket&) = delete;

  const std::string& path() const { return path_; }
  // Accepts one connection and returns the fd it carries. Call once the
  // runtime's create/exec has returned: a runtime sends the master before
  // it returns, so the connection is already queued. Waits at most
  // `timeout` for it and for the fd (a runtime that returned without
  // sending one never will): then DeadlineExceeded, and the caller's
  // process is not left waiting on a terminal nobody holds.
  StatusOr<UniqueFd> ReceiveMaster(std::chrono::milliseconds timeout = kReceiveTimeout);
  static constexpr std::chrono::milliseconds kReceiveTimeout{10000};

 private:
  ConsoleSocket() = default;
  std::string dir_, path_;
  UniqueFd listener_;
};

// Sends `fd` over the connected unix socket `sock` (the runtime's side).
Status SendFd(int sock, int fd);

}  // namespace runhcs::stdio
