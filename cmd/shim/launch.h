// The shim v2 launch protocol of containerd 1.6, as containerd drives it:
//
//   <shim> -namespace NS -address GRPC -publish-binary BIN -id ID [-debug] start
//     cwd = bundle, stdin = an optional options Any, stdout+stderr = one pipe.
//     Prints ONLY the socket address and exits; the daemon it spawns has its
//     stdio on /dev/null (containerd reads the pipe to EOF).
//   <shim> -namespace NS -address GRPC -publish-binary BIN -id ID -bundle B delete
//     Cleans up after a shim that is gone; prints ONLY a serialized
//     containerd.task.v2.DeleteResponse. Idempotent.
//   <shim> -namespace NS -id ID -address GRPC [-debug] [-is-sandbox] serve
//     (internal) the daemon: TTRPC on the listener inherited as fd 3,
//     options on stdin.
#pragma once

#include <string>

#include "base/status.h"

namespace runhcs::shim {

struct Flags {
  std::string ns;
  std::string address;         // containerd's gRPC socket path
  std::string publish_binary;  // unused: events go over TTRPC
  std::string id;
  std::string bundle;
  bool debug = false;
  bool is_sandbox = false;
  std::string action;  // start | delete | serve | symbolize (the last two internal)
};

// "unix:///run/containerd/s/<sha256(address/ns/group)>", the socket naming of
// containerd's shim helpers, so one group (a pod) maps to one shim.
std::string SocketAddress(const std::string& containerd_address, const std::string& ns,
                          const std::string& group);

// Each returns the process exit code.
int Start(const Flags& flags);
int Delete(const Flags& flags);
int Serve(const Flags& flags);
// Internal: the daemon's symbolizer helper (base/stacks.h SymbolizeMain on
// stdin/stdout).
int Symbolize();

}  // namespace runhcs::shim
