// The --console-socket protocol of OCI runtimes: the caller listens on a
// unix socket, the runtime connects and sends the pty master of the
// container's terminal as SCM_RIGHTS.
#pragma once

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
  // Accepts one connection and returns the fd it carries. Blocks until the
  // runtime connects; call once the runtime's create/exec has returned.
  StatusOr<UniqueFd> ReceiveMaster();

 private:
  ConsoleSocket() = default;
  std::string dir_, path_;
  UniqueFd listener_;
};

// Sends `fd` over the connected unix socket `sock` (the runtime's side).
Status SendFd(int sock, int fd);

}  // namespace runhcs::stdio
