#include "base/io.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace runhcs {

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return OkStatus();
}

Status SendAll(int fd, std::string_view data, std::string_view what) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) {
        return UnavailableError("{}: the peer closed its socket", what);
      }
      return ErrnoError(errno, std::string(what));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return OkStatus();
}

Status ReadFull(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read");
    }
    if (r == 0) {
      return got == 0
                 ? Status(Code::kOutOfRange, "eof")
                 : Status(Code::kDataLoss, fmt::format("truncated after {} of {} bytes", got, n));
    }
    got += static_cast<size_t>(r);
  }
  return OkStatus();
}

StatusOr<std::string> ReadAll(int fd) {
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read");
    }
    if (r == 0) return out;
    out.append(buf, static_cast<size_t>(r));
  }
}

StatusOr<std::string> ReadFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoError(errno, fmt::format("open {}", path));
  return ReadAll(fd.get());
}

Status MkdirAll(const std::string& path, mode_t mode) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) {
      return ErrnoError(errno, fmt::format("mkdir {}", part));
    }
  }
  return OkStatus();
}

Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode) {
  std::string tmp;
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    tmp = "." + path;
  } else {
    tmp = path.substr(0, slash + 1) + "." + path.substr(slash + 1);
  }
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return ErrnoError(errno, fmt::format("create {}", tmp));
  Status st = WriteAll(fd.get(), data);
  if (st.ok() && ::fchmod(fd.get(), mode) != 0) st = ErrnoError(errno, "fchmod");
  fd.reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    st = ErrnoError(errno, fmt::format("rename {}", path));
  }
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

Status WriteExistingFile(const std::string& path, std::string_view data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (!fd) return ErrnoError(errno, fmt::format("open {}", path));
  return WriteAll(fd.get(), data);
}

Status RemoveTree(const std::string& dir) {
  if (::access(dir.c_str(), F_OK) != 0) return OkStatus();
  auto rm = [](const char* path, const struct stat*, int, struct FTW*) {
    return ::remove(path) == 0 || errno == ENOENT ? 0 : -1;
  };
  if (::nftw(dir.c_str(), rm, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0) {
    return ErrnoError(errno, "remove " + dir);
  }
  return OkStatus();
}

StatusOr<pid_t> ReadPidFile(const std::string& path, std::string_view what) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  pid_t pid = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc() || pid <= 0) {
    return InternalError("{}: the runtime wrote no pid ({:?} in {})", what, text, path);
  }
  return pid;
}

UnixAddress UnixAddress::Parse(std::string_view address) {
  constexpr std::string_view kScheme = "unix://";
  if (address.starts_with(kScheme)) return {std::string(address.substr(kScheme.size())), false};
  if (address.starts_with("/")) return {std::string(address), false};
  return {std::string(address), true};
}

namespace {

StatusOr<socklen_t> FillSockaddr(const UnixAddress& addr, sockaddr_un* sa) {
  std::memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  size_t off = addr.abstract ? 1 : 0;
  // Filesystem paths need room for the terminating NUL.
  size_t limit = sizeof(sa->sun_path) - (addr.abstract ? 0 : 1);
  if (addr.path.empty() || addr.path.size() + off > limit) {
    return InvalidArgumentError("unix socket address {:?} is empty or longer than {} bytes",
                                addr.path, limit - off);
  }
  std::memcpy(sa->sun_path + off, addr.path.data(), addr.path.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + off + addr.path.size() +
                                (addr.abstract ? 0 : 1));
}

}  // namespace

StatusOr<UniqueFd> ListenUnix(const UnixAddress& addr) {
  sockaddr_un sa;
  ASSIGN_OR_RETURN(socklen_t len, FillSockaddr(addr, &sa));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoError(errno, "socket");
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) != 0) {
    return ErrnoError(errno, fmt::format("bind {}", addr.path));
  }
  if (!addr.abstract && ::chmod(addr.path.c_str(), 0600) != 0) {
    Status st = ErrnoError(errno, fmt::format("chmod {}", addr.path));
    ::unlink(addr.path.c_str());
    return st;
  }
  if (::listen(fd.get(), 128) != 0) return ErrnoError(errno, "listen");
  return fd;
}

StatusOr<UniqueFd> ConnectUnix(const UnixAddress& addr) {
  sockaddr_un sa;
  ASSIGN_OR_RETURN(socklen_t len, FillSockaddr(addr, &sa));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoError(errno, "socket");
  for (;;) {
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) == 0) return fd;
    if (errno == EINTR) continue;
    int err = errno;
    Status st = ErrnoError(err, fmt::format("connect {}", addr.path));
    if (err == ECONNREFUSED || err == ENOENT) return Status(Code::kUnavailable, st.message());
    return st;
  }
}

}  // namespace runhcs
