#include "oci/crun_state.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "base/io.h"

namespace runhcs::oci::crun {

StatusOr<bool> ReleaseCreated(const std::string& root, const std::string& id) {
  if (root.empty() || id.empty() || id.find('/') != std::string::npos) return false;
  const std::string fifo = root + "/" + id + "/exec.fifo";
  struct stat sb;
  if (::lstat(fifo.c_str(), &sb) != 0 || !S_ISFIFO(sb.st_mode)) return false;
  UniqueFd fd(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENXIO) {
      return FailedPreconditionError("container {:?} is not running: its init is gone", id);
    }
    if (errno == ENOENT) return false;  // a concurrent start took it
    return ErrnoError(errno, "open " + fifo);
  }
  if (::unlink(fifo.c_str()) != 0) {
    if (errno == ENOENT) return false;
    return ErrnoError(errno, "unlink " + fifo);
  }
  const char byte = 0;
  while (::write(fd.get(), &byte, 1) != 1) {
    if (errno == EINTR) continue;
    // EPIPE: the init died between the open and the write.
    if (errno == EPIPE) {
      return FailedPreconditionError("container {:?} is not running: its init is gone", id);
    }
    return ErrnoError(errno, "write " + fifo);
  }
  return true;
}

StatusOr<bool> RemoveExited(const std::string& root, const std::string& id,
                            const std::string& cgroup_dir) {
  if (root.empty() || id.empty() || id.find('/') != std::string::npos) return false;
  if (cgroup_dir.empty()) return false;
  if (auto events = ReadFile(cgroup_dir + "/cgroup.events"); events.ok()) {
    if (events->find("populated 0") == std::string::npos) return false;
    if (::rmdir(cgroup_dir.c_str()) != 0 && errno != ENOENT) {
      if (errno == EBUSY || errno == ENOTEMPTY) return false;
      return ErrnoError(errno, "remove cgroup " + cgroup_dir);
    }
  } else if (events.status().code() != Code::kNotFound) {
    return events.status();
  } else if (::access(cgroup_dir.c_str(), F_OK) == 0) {
    return false;  // a directory, but not a cgroup v2 one
  }
  if (!RemoveTree(root + "/" + id).ok()) return false;
  return true;
}

StatusOr<bool> KillAll(const std::string& cgroup_dir, int signal) {
  if (signal != SIGKILL || cgroup_dir.empty()) return false;
  Status st = WriteExistingFile(cgroup_dir + "/cgroup.kill", "1");
  if (st.code() == Code::kNotFound) return false;
  RETURN_IF_ERROR(st);
  return true;
}

}  // namespace runhcs::oci::crun
