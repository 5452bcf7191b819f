#include "tests/subprocess.h"

#include <fmt/format.h>

#include "base/sha256.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace runhcs::testing {

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + ".XXXXXX";
  char* d = ::mkdtemp(tmpl.data());
  return d ? std::string(d) : std::string();
}

std::string ReadFileOr(const std::string& path, const std::string& fallback) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fallback;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

RunResult RunCommand(const std::vector<std::string>& argv, const RunOptions& opts) {
  RunResult r;
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC)) return r;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(opts.combined ? out[1] : err[1], 2);
    if (!opts.cwd.empty() && ::chdir(opts.cwd.c_str()) != 0) ::_exit(126);
    for (const auto& [k, v] : opts.env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  std::thread writer([fd = in[1], data = opts.stdin_data] {
    // A child that exits before reading all of its stdin (nc refused a
    // connection) must not SIGPIPE the test: the signal a write raises is
    // the writing thread's, so blocked here it stays here and is taken.
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n <= 0) {
        timespec now{};
        if (errno == EPIPE) ::sigtimedwait(&pipe, nullptr, &now);
        break;
      }
      off += static_cast<size_t>(n);
    }
    ::close(fd);
  });
  auto deadline = std::chrono::steady_clock::now() + opts.timeout;
  bool out_open = true, err_open = true;
  char buf[8192];
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      r.timed_out = true;
      // Before the kill: what it waited for (a shim, a guest) may still be
      // hanging now, and a test's assertion comes only after.
      if (opts.report_on_timeout) {
        FailureReport::PrintOnce(fmt::format("`{}` ran past its {} ms limit", fmt::join(argv, " "),
                                             opts.timeout.count()));
      }
      ::kill(-pid, SIGKILL);
      break;
    }
    pollfd p[2] = {{out_open ? out[0] : -1, POLLIN, 0}, {err_open ? err[0] : -1, POLLIN, 0}};
    if (::poll(p, 2, static_cast<int>(left)) < 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(p[i].fd, buf, sizeof buf);
      if (n <= 0) {
        (i == 0 ? out_open : err_open) = false;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  ::close(out[0]);
  ::close(err[0]);
  int ws = 0;
  if (r.timed_out) ::kill(-pid, SIGKILL);
  ::waitpid(pid, &ws, 0);
  writer.join();
  if (!r.timed_out && WIFEXITED(ws)) r.exit_code = WEXITSTATUS(ws);
  return r;
}

Containerd::Containerd(Options opts)
    : extra_path_(std::move(opts.extra_path)),
      env_(std::move(opts.env)),
      netns_(std::move(opts.netns)) {
  dir_ = MakeTempDir("runhcs-ctrd");
  std::ofstream cfg(dir_ + "/config.toml");
  cfg << "version = 2\n"
      << "root = \"" << dir_ << "/root\"\n"
      << "state = \"" << dir_ << "/state\"\n"
      << "[grpc]\n  address = \"" << grpc_address() << "\"\n"
      << "[ttrpc]\n  address = \"" << ttrpc_address() << "\"\n"
      << "[debug]\n  level = \"debug\"\n"
      << opts.extra_toml;
  cfg.close();
  report_ = testing::FailureReport::Add("containerd " + dir_, [this] { return FailureReport(); });
  StartDaemon();
}

std::string Containerd::FailureReport() const {
  constexpr size_t kLogLines = 300;
  std::string out;
  std::string log = ReadFileOr(dir_ + "/containerd.log");
  size_t from = log.size();
  for (size_t n = 0; n <= kLogLines && from > 0; ++n) from = log.rfind('\n', from - 1);
  out += "--- the last " + std::to_string(kLogLines) + " lines of containerd.log\n";
  out += log.substr(from == std::string::npos ? 0 : from + 1);
  out += "--- processes\n";
  RunOptions quick;
  quick.timeout = std::chrono::seconds(10);
  std::stringstream ps(
      RunCommand({"ps", "-e", "--forest", "-o", "pid,ppid,stat,wchan:24,etimes,args"}, quick).out);
  for (std::string line; std::getline(ps, line);) {
    std::stringstream cols(line);
    std::string pid, ppid;
    cols >> pid >> ppid;
    if (pid == "2" || ppid == "2") continue;  // kernel threads
    out += line.substr(0, 240) + "\n";
  }
  // This containerd's shims (their command line names its socket): stacks.
  const std::string shimdiag = extra_path_.empty() ? "" : extra_path_ + "/shimdiag";
  if (shimdiag.empty() || ::access(shimdiag.c_str(), X_OK) != 0) return out;
  std::stringstream rows(RunCommand({shimdiag, "list", "--pids"}, quick).out);
  std::string row;
  std::getline(rows, row);  // header
  while (std::getline(rows, row)) {
    std::stringstream cols(row);
    std::string name, pid;
    cols >> name >> pid;
    std::string cmdline = ReadFileOr("/proc/" + pid + "/cmdline");
    if (name.empty() || cmdline.find(dir_) == std::string::npos) continue;
    RunResult r = RunCommand({shimdiag, "stacks", name}, quick);
    out += "--- shimdiag stacks " + name + " (pid " + pid + ")\n" + r.out + r.err;
  }
  return out;
}

bool Containerd::StartDaemon() {
  const std::string& extra_path = extra_path_;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    int devnull = ::open("/dev/null", O_RDONLY);
    // Appended: a restarted containerd keeps what the one before it said.
    int log = ::open((dir_ + "/containerd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(devnull, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    if (!extra_path.empty()) {
      const char* path = std::getenv("PATH");
      ::setenv("PATH", (extra_path + ":" + (path ? path : "/usr/bin:/bin")).c_str(), 1);
    }
    for (const auto& [k, v] : env_) ::setenv(k.c_str(), v.c_str(), 1);
    if (!netns_.empty()) {
      int ns = ::open(netns_.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) ::_exit(126);
    }
    ::execlp("containerd", "containerd", "--config", (dir_ + "/config.toml").c_str(), nullptr);
    ::_exit(127);
  }
  pid_ = pid;
  for (int i = 0; i < 200; ++i) {
    RunOptions ro;
    ro.timeout = std::chrono::milliseconds(2000);
    ro.report_on_timeout = false;
    if (Ctr({"version"}, ro).exit_code == 0) return true;
    // A containerd that exited (a bad config) will not answer: say so now.
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  return false;
}

bool Containerd::KillAndDelete(const std::string& id) {
  bool killed = Ctr({"task", "kill", "-s", "SIGKILL", id}).exit_code == 0;
  bool stopped = WaitFor(
      [&] {
        std::string st = TaskStatus(id);
        return st == "STOPPED" || st.empty();
      },
      std::chrono::seconds(15));
  bool deleted = Ctr({"task", "delete", id}).exit_code == 0;
  return Ctr({"container", "delete", id}).exit_code == 0 && killed && stopped && deleted;
}

int CountProcesses(const std::string& pattern) {
  std::string out = RunCommand({"pgrep", "-f", pattern}).out;
  return static_cast<int>(std::count(out.begin(), out.end(), '\n'));
}

int CountEntries(const std::string& dir) {
  int n = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

bool Containerd::CrashAndRestart() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  return StartDaemon();
}

bool Containerd::Restart() {
  Stop();
  return StartDaemon();
}

Containerd::~Containerd() {
  // Leave no task behind: kill and delete whatever is left.
  if (pid_ > 0) {
    RunResult ls = Ctr({"task", "ls", "-q"});
    std::stringstream ss(ls.out);
    for (std::string id; std::getline(ss, id);) {
      if (id.empty()) continue;
      Ctr({"task", "kill", "-s", "SIGKILL", id});
      Ctr({"task", "delete", "-f", id});
    }
    RunResult cs = Ctr({"container", "ls", "-q"});
    std::stringstream cs_ss(cs.out);
    for (std::string id; std::getline(cs_ss, id);) {
      if (!id.empty()) Ctr({"container", "delete", id});
    }
  }
  Stop();
  if (!dir_.empty() && std::getenv("RUNHCS_KEEP_TEST_DIRS") == nullptr) {
    RunCommand({"rm", "-rf", dir_});
  }
}

void Containerd::Stop() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }
}

std::vector<std::string> Containerd::CtrArgv(const std::vector<std::string>& args,
                                             const std::string& ns) const {
  std::vector<std::string> argv = {"ctr", "--address", grpc_address(), "-n", ns};
  argv.insert(argv.end(), args.begin(), args.end());
  // ctr makes a task's stdio fifos in /run/containerd/fifo and removes them
  // only when it deletes the task with its I/O attached: tasks run with -d
  // and deleted later, or by this class's teardown, left them behind on the
  // host. They go in this containerd's directory instead, removed with it.
  size_t at = 5;
  while (at < argv.size() && (argv[at] == "--timeout" || argv[at] == "--connect-timeout")) at += 2;
  size_t insert = 0;
  if (at < argv.size() && argv[at] == "run") insert = at + 1;
  if (at + 1 < argv.size() && argv[at] == "task" &&
      (argv[at + 1] == "start" || argv[at + 1] == "exec" || argv[at + 1] == "attach")) {
    insert = at + 2;
  }
  if (insert > 0) argv.insert(argv.begin() + insert, {"--fifo-dir", dir_ + "/fifo"});
  return argv;
}

RunResult Containerd::Ctr(const std::vector<std::string>& args, const RunOptions& opts,
                          const std::string& ns) {
  return RunCommand(CtrArgv(args, ns), opts);
}

pid_t Containerd::CtrBackground(const std::vector<std::string>& args, const std::string& out_file,
                                const std::string& ns) {
  // Built before the fork: the child of a threaded process only execs.
  std::vector<std::string> argv = CtrArgv(args, ns);
  std::vector<char*> a;
  for (auto& s : argv) a.push_back(s.data());
  a.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execvp(a[0], a.data());
    ::_exit(127);
  }
  return pid;
}

std::string Containerd::log() { return ReadFileOr(dir_ + "/containerd.log"); }

std::string HttpGetIn(const std::string& netns_path, const std::string& ip, int port,
                      const std::string& path) {
  RunOptions o;
  o.stdin_data = "GET " + path + " HTTP/1.0\r\n\r\n";
  o.timeout = std::chrono::seconds(5);
  o.report_on_timeout = false;
  return RunCommand({"nsenter", "--net=" + netns_path, "busybox", "nc", ip, std::to_string(port)},
                    o)
      .out;
}

bool MakeBusyboxRootfs(const std::string& dir) {
  for (const char* d : {"", "/bin", "/proc", "/sys", "/dev", "/tmp", "/etc"}) {
    ::mkdir((dir + d).c_str(), 0755);
  }
  if (RunCommand({"cp", "/bin/busybox", dir + "/bin/busybox"}).exit_code != 0) return false;
  for (const char* a : {"sh", "echo", "cat", "sleep", "true", "head", "stty", "uname", "ps", "trap",
                        "wc", "sha256sum", "cut", "rm", "nc", "kill"}) {
    std::string link = dir + "/bin/" + a;
    ::symlink("busybox", link.c_str());
  }
  return true;
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

bool MaskUnifiedControllersForCrun(const std::string& scratch_dir) {
  const std::string controllers = "/sys/fs/cgroup/unified/cgroup.controllers";
  if (ReadFileOr(controllers).empty()) return true;  // nothing to hide
  if (::unshare(CLONE_NEWNS) != 0) return false;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  std::string empty = scratch_dir + "/empty-controllers";
  std::ofstream(empty).close();
  return ::mount(empty.c_str(), controllers.c_str(), nullptr, MS_BIND, nullptr) == 0;
}

std::string DirName(const std::string& path) { return path.substr(0, path.rfind('/')); }

std::string TrimNewlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

bool Alive(pid_t pid) {
  std::string stat = ReadFileOr("/proc/" + std::to_string(pid) + "/stat");
  if (stat.empty()) return false;
  auto close = stat.rfind(')');
  return close != std::string::npos && stat.substr(close + 2, 1) != "Z";
}

std::string Containerd::TaskStatus(const std::string& id) {
  std::stringstream ss(Ctr({"task", "ls"}).out);
  for (std::string line; std::getline(ss, line);) {
    std::stringstream ls(line);
    std::string tid, pid, status;
    ls >> tid >> pid >> status;
    if (tid == id) return status;
  }
  return "";
}

std::string TestBytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

std::string TestText(size_t n) {
  std::string s(n, 'a');
  for (size_t i = 0; i < n; ++i)
    s[i] = (i % 64 == 63) ? '\n' : static_cast<char>('a' + (i * 7) % 26);
  return s;
}

std::vector<std::string> CountStdinCommand() {
  return {"/bin/sh", "-c",
          "cat >/tmp/stdin.$$; echo $(wc -c </tmp/stdin.$$) $(sha256sum </tmp/stdin.$$ | cut -d' ' "
          "-f1); rm /tmp/stdin.$$"};
}

std::string CountStdinExpected(const std::string& data) {
  return std::to_string(data.size()) + " " + Sha256Hex(data) + "\n";
}

}  // namespace runhcs::testing
