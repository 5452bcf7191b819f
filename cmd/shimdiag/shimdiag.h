// shimdiag: the operator's window into running runhcs shims.
//
//   shimdiag list [--pids] [--json]
//   shimdiag exec [-t|--tty] SHIM CMD [ARGS...]
//   shimdiag share [--ro|--readonly] SHIM HOST_PATH VM_PATH
//   shimdiag stacks SHIM
//   shimdiag tasks [--execs] [--json] SHIM
//   shimdiag pid SHIM
//
// Shims are found through the registry every shim daemon publishes
// (service/shim_registry.h), not through containerd; SHIM is
// `<namespace>-<id>` or any prefix naming exactly one shim. Every command
// but `list` talks to containerd.runhcs.v1.diag.ShimDiag on the shim's
// socket.
//
// Exit code: `exec` exits with the remote process's exit code; the others 0
// on success, 1 on an error (printed as "shimdiag: <message>"), 2 on a usage
// error.
#pragma once

#include <string>
#include <vector>

namespace runhcs::shimdiag {

struct Env {
  std::string registry_dir;  // where shims register
  int in = 0, out = 1, err = 2;
  std::string tmp_dir = "/tmp";  // exec's fifos are made under it
};

// args excludes the program name.
int Run(const std::vector<std::string>& args, const Env& env);

}  // namespace runhcs::shimdiag
