// Test helpers: run a program and capture its output; a private containerd.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tests/failure_report.h"

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
  // Running out of time prints the FailureReport before the kill. Off for
  // polls, whose timeouts are expected.
  bool report_on_timeout = true;
};

// Runs argv[0] (searched in PATH) and waits for it AND for EOF on its output
// pipes, like Go's CombinedOutput: a grandchild holding the pipe delays it.
RunResult RunCommand(const std::vector<std::string>& argv, const RunOptions& opts = {});

// A private containerd 1.6 under a temp dir: own root, state and sockets.
class Containerd {
 public:
  struct Options {
    // Prepended to containerd's PATH (where it finds shims).
    std::string extra_path;
    // Added to containerd's environment (and so its shims').
    std::vector<std::pair<std::string, std::string>> env;
    // Appended to config.toml (CRI plugin settings, runtimes).
    std::string extra_toml;
    // A network namespace (a bind-mounted nsfs path) containerd runs in, so
    // that what CNI sets up stays out of the host's.
    std::string netns;
  };
  explicit Containerd(const std::string& extra_path = "",
                      std::vector<std::pair<std::string, std::string>> env = {})
      : Containerd(Options{extra_path, std::move(env), "", ""}) {}
  explicit Containerd(Options opts);
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
  // The STATUS column of `ctr task ls` for task `id` (RUNNING, STOPPED,
  // ...), or "" when there is no such task.
  std::string TaskStatus(const std::string& id);
  // SIGKILLs task `id`, waits (15 s) until it has stopped, then deletes the
  // task and the container. True when each step succeeded.
  bool KillAndDelete(const std::string& id);
  // Stops containerd (SIGTERM) and starts it again on the same dirs.
  bool Restart();
  // Kills containerd with SIGKILL (no cleanup of its own) and starts it again.
  bool CrashAndRestart();
  void Stop();

 private:
  bool StartDaemon();
  // ctr's argv for `args`, its stdio fifos under dir_.
  std::vector<std::string> CtrArgv(const std::vector<std::string>& args,
                                   const std::string& ns) const;
  std::string dir_;
  std::string extra_path_;
  std::vector<std::pair<std::string, std::string>> env_;
  std::string netns_;
  pid_t pid_ = -1;
  // On a test's failure: this containerd's log tail, its shims' stacks and
  // the processes around them.
  std::string FailureReport() const;
  testing::FailureReport::Registration report_;
};

// GET http://ip:port/path from inside network namespace `netns_path`
// (busybox nc speaking HTTP/1.0: busybox-static's wget crashes resolving);
// the raw response, headers included, "" on failure.
std::string HttpGetIn(const std::string& netns_path, const std::string& ip, int port,
                      const std::string& path);

// A busybox rootfs (busybox-static and its applets) under `dir`.
bool MakeBusyboxRootfs(const std::string& dir);
// Polls `pred` every 50 ms until true or `limit`.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds limit);
// Moves this process into a private mount namespace where
// /sys/fs/cgroup/unified/cgroup.controllers reads empty, so crun 1.8 accepts
// a cgroup hybrid host. Everything started afterwards (containerd, shims,
// runtimes) inherits it; the rest of the machine does not see it.
bool MaskUnifiedControllersForCrun(const std::string& scratch_dir);
bool Alive(pid_t pid);
// Processes whose command line matches `pattern` (pgrep -f).
int CountProcesses(const std::string& pattern);
// Entries of directory `dir` but . and .. (0 if it cannot be read): a
// process's fds or threads under /proc.
int CountEntries(const std::string& dir);

std::string MakeTempDir(const std::string& prefix);
// `n` pseudo-random bytes (every value 0..255 occurs), the same for a seed.
std::string TestBytes(size_t n, uint32_t seed = 1);
// `n` bytes of letters in lines of 64 (the last may be short), for a
// terminal's line discipline.
std::string TestText(size_t n);
// The command that prints, for what arrives on stdin, "<bytes> <sha256>\n":
// the byte count as `wc -c` counts it inside the container.
std::vector<std::string> CountStdinCommand();
// "<size> <sha256 of data>\n", what CountStdinCommand prints for `data`.
std::string CountStdinExpected(const std::string& data);
// "/a/b/c" -> "/a/b".
std::string DirName(const std::string& path);
// `s` without its trailing newlines (and carriage returns).
std::string TrimNewlines(std::string s);
std::string ReadFileOr(const std::string& path, const std::string& fallback = "");

}  // namespace runhcs::testing
