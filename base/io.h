// Small syscall helpers: EINTR-safe full reads/writes and unix sockets.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "base/fd.h"
#include "base/status.h"

namespace runhcs {

// Writes all of `data`. MSG_NOSIGNAL semantics are the caller's business:
// the shim ignores SIGPIPE process-wide.
Status WriteAll(int fd, std::string_view data);
// Sends all of `data` on a socket with MSG_NOSIGNAL: a peer that went away
// is Unavailable ("<what>: the peer closed its socket"), never SIGPIPE, in
// any process (the tests and benches link the library that sends).
Status SendAll(int fd, std::string_view data, std::string_view what);
// Reads exactly `n` bytes. Returns OutOfRange ("eof") on a clean EOF before
// the first byte and DataLoss ("truncated") on EOF in the middle.
Status ReadFull(int fd, char* buf, size_t n);
// Reads until EOF.
StatusOr<std::string> ReadAll(int fd);
StatusOr<std::string> ReadFile(const std::string& path);
// mkdir -p: every missing component of `path` with `mode`.
Status MkdirAll(const std::string& path, mode_t mode);
// Writes `data` to `path` atomically (temp file in the same directory, then
// rename), with `mode`.
Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode);
// Writes `data` to the existing file `path` in place, as `echo > path` does:
// for the kernel's files (procfs, sysfs, cgroupfs), which are never created.
// NotFound ("open <path>") if there is no such file.
Status WriteExistingFile(const std::string& path, std::string_view data);
// Removes `dir` and what is in it, never crossing into another filesystem (a
// mount left there by accident keeps its contents, and `dir` stays: an
// error). A `dir` that does not exist is OK.
Status RemoveTree(const std::string& dir);
// The pid an OCI runtime wrote to its --pid-file: NotFound if the file is
// missing, Internal ("<what>: the runtime wrote no pid") if it holds no
// positive number.
StatusOr<pid_t> ReadPidFile(const std::string& path, std::string_view what);

// A unix socket address: "unix:///abs/path" or "/abs/path" is a filesystem
// socket; anything else names an abstract socket ("\0" + name), as containerd's
// shim dialer does.
struct UnixAddress {
  std::string path;
  bool abstract = false;
  static UnixAddress Parse(std::string_view address);
};

// Listens (SOCK_STREAM | SOCK_CLOEXEC). Mode 0600 for filesystem sockets.
StatusOr<UniqueFd> ListenUnix(const UnixAddress& addr);
StatusOr<UniqueFd> ConnectUnix(const UnixAddress& addr);

}  // namespace runhcs
