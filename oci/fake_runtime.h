// A stand-in OCI runtime for unit tests (header only): a shell script that,
// for `exec`, starts `exec_command` in the background (stdio on /dev/null)
// and writes its pid to the --pid-file, and to `also_pid_file` when one is
// given; every other verb succeeds doing nothing. It never connects to a
// --console-socket.
#pragma once

#include <string>

#include "base/io.h"

namespace runhcs::oci {

inline Status WriteFakeRuntime(const std::string& path, const std::string& exec_command,
                               const std::string& also_pid_file = "") {
  std::string also = also_pid_file.empty() ? "" : "; echo $! >\"" + also_pid_file + "\"";
  return WriteFileAtomic(
      path,
      "#!/bin/sh\n"
      "verb=; pidfile=\n"
      "while [ $# -gt 0 ]; do case \"$1\" in --pid-file) pidfile=$2; shift;;"
      " exec|kill|start|delete) [ -z \"$verb\" ] && verb=$1;; esac; shift; done\n"
      "if [ \"$verb\" = exec ]; then " +
          exec_command + " </dev/null >/dev/null 2>&1 & echo $! >\"$pidfile\"" + also + "; fi\n",
      0755);
}

}  // namespace runhcs::oci
