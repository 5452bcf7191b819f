// RunCommand: runs a helper program to completion and returns what it wrote
// to stdout (for tools such as ip(8) and tc(8), whose JSON or exit status is
// the interface).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "base/status.h"

namespace runhcs {

// Runs argv (argv[0] looked up in PATH) with stdin /dev/null and returns its
// stdout once it exits with status 0. Errors: NotFound if argv[0] cannot be
// run; Unknown naming the command, its exit status and the last line of its
// stderr if it fails; DeadlineExceeded if it runs past `timeout` (it is then
// killed and collected). The child is always collected.
StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace runhcs
