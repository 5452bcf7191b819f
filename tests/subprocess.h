// Test helpers: run a program and capture its output; a private containerd.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace runhcs::testing {

struct RunResult {
  int exit_code = -1;  // -1: killed by a signal or timed out
  bool timed_out = false;
  std::string out, err;
};

struct RunOptions {
  std::string cwd;
  std::string stdin_data;
  std::map<std::string, std::string> env;  // added to the environment
  // stdout and stderr on one pipe (as containerd runs `start`).
  bool combined = false;
  std::chrono::milliseconds timeout{20000};
};

// Runs argv[0] (searched in PATH) and waits for it AND for EOF on its output
// pipes, like Go's CombinedOutput: a grandchild holding the pipe delays it.
RunResult RunCommand(const std::vector<std::string>& argv, const RunOptions& opts = {});

// A private containerd 1.6 under a temp dir: own root, state and sockets.
class Containerd {
 public:
  // `extra_path` is prepended to containerd's PATH (where it finds shims).
  explicit Containerd(const std::string& extra_path = "");
  ~Containerd();
  bool ok() const { return pid_ > 0; }
  const std::string& dir() const { return dir_; }
  std::string grpc_address() const { return dir_ + "/containerd.sock"; }
  std::string ttrpc_address() const { return dir_ + "/containerd.sock.ttrpc"; }
  // `ctr --address ... -n ns ARGS...`
  RunResult Ctr(const std::vector<std::string>& args, const RunOptions& opts = {},
                const std::string& ns = "default");
  // Starts `ctr ... ARGS` in the background with stdout to a file.
  pid_t CtrBackground(const std::vector<std::string>& args, const std::string& out_file,
                      const std::string& ns = "default");
  std::string log();

 private:
  std::string dir_;
  pid_t pid_ = -1;
};

std::string MakeTempDir(const std::string& prefix);
std::string ReadFileOr(const std::string& path, const std::string& fallback = "");

}  // namespace runhcs::testing
