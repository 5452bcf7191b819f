#include "stdio/console.h"

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/io.h"

namespace runhcs::stdio {

StatusOr<std::unique_ptr<ConsoleSocket>> ConsoleSocket::Create(const std::string& tmp_dir) {
  std::string tmpl = tmp_dir + "/runhcs-pty-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return ErrnoError(errno, "mkdtemp");
  std::unique_ptr<ConsoleSocket> c(new ConsoleSocket());
  c->dir_ = tmpl;
  c->path_ = tmpl + "/pty.sock";
  ASSIGN_OR_RETURN(c->listener_, ListenUnix({c->path_, false}));
  return c;
}

ConsoleSocket::~ConsoleSocket() {
  listener_.reset();
  ::unlink(path_.c_str());
  ::rmdir(dir_.c_str());
}

namespace {

// Waits until `fd` is readable (a listener: a connection is queued), up to
// `deadline`.
Status AwaitReadable(int fd, std::chrono::steady_clock::time_point deadline, const char* what) {
  for (;;) {
    auto now = std::chrono::steady_clock::now();
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (n > 0) return OkStatus();
    if (n < 0 && errno != EINTR) return ErrnoError(errno, what);
    if (n == 0 && std::chrono::steady_clock::now() >= deadline) {
      return DeadlineExceededError("the runtime sent no terminal: {}", what);
    }
  }
}

}  // namespace

StatusOr<UniqueFd> ConsoleSocket::ReceiveMaster(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  RETURN_IF_ERROR(AwaitReadable(listener_.get(), deadline, "no connection on the console socket"));
  UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn) return ErrnoError(errno, "accept console socket");
  RETURN_IF_ERROR(AwaitReadable(conn.get(), deadline, "nothing sent on the console socket"));
  char data[256];
  iovec iov{data, sizeof data};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  if (::recvmsg(conn.get(), &msg, MSG_CMSG_CLOEXEC) < 0)
    return ErrnoError(errno, "receive pty master");
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (!c || c->cmsg_type != SCM_RIGHTS) return InternalError("console socket sent no fd");
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return UniqueFd(fd);
}

Status SendFd(int sock, int fd) {
  char data[] = "pty";
  iovec iov{data, sizeof data};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  if (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) return ErrnoError(errno, "send fd");
  return OkStatus();
}

}  // namespace runhcs::stdio
