// Where a process's stdio goes, as containerd names it: fifo paths, file://,
// binary:// URIs or "" for none (stdio/uri.h parses them). A plain value
// shared by the exec model (exec::Stdio) and ProcessIo.
#pragma once

#include <string>

namespace runhcs::stdio {

struct Paths {
  std::string stdin_path, stdout_path, stderr_path;
  bool terminal = false;
};

}  // namespace runhcs::stdio
