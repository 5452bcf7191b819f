#include "base/command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include "base/fd.h"
#include "base/reaper.h"

namespace runhcs {

namespace {

std::string LastLine(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  size_t nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

std::string Joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace

StatusOr<std::string> RunCommand(const std::vector<std::string>& argv,
                                 std::chrono::milliseconds timeout) {
  if (argv.empty()) return InvalidArgumentError("run: no command");
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  UniqueFd out_r(out[0]), out_w(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  UniqueFd err_r(err[0]), err_w(err[1]);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  SpawnOptions so;
  so.argv = argv;
  so.fds = {{0, devnull.get()}, {1, out_w.get()}, {2, err_w.get()}};
  ASSIGN_OR_RETURN(pid_t pid, Reaper::Get().Spawn(so));
  out_w.reset();
  err_w.reset();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string text[2];
  pollfd p[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
  bool timed_out = false;
  while (p[0].fd >= 0 || p[1].fd >= 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    int n = ::poll(p, 2, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < 2 && n > 0; ++i) {
      if (p[i].fd < 0 || p[i].revents == 0) continue;
      char buf[4096];
      ssize_t r = ::read(p[i].fd, buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        p[i].fd = -1;
        continue;
      }
      text[i].append(buf, static_cast<size_t>(r));
    }
  }
  if (timed_out) {
    ::kill(pid, SIGKILL);
    (void)Reaper::Get().Wait(pid);
    return DeadlineExceededError("{} did not finish within {} ms", Joined(argv), timeout.count());
  }
  auto waited = Reaper::Get().Wait(pid, deadline);
  if (!waited.ok()) {
    ::kill(pid, SIGKILL);
    (void)Reaper::Get().Wait(pid);
    return waited.status().Wrap(Joined(argv));
  }
  if (*waited != 0) {
    return UnknownError("{} failed with exit status {}: {}", Joined(argv), *waited,
                        LastLine(text[1]));
  }
  return std::move(text[0]);
}

}  // namespace runhcs
