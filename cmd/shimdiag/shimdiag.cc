#include "cmd/shimdiag/shimdiag.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/fd.h"
#include "base/io.h"
#include "base/status.h"
#include "base/version.h"
#include "runhcs/diag.ttrpc.h"
#include "service/shim_registry.h"
#include "ttrpc/client.h"

namespace runhcs::shimdiag {
namespace {

namespace diag = containerd::runhcs::v1::diag;
constexpr auto kCallTimeout = std::chrono::seconds(30);
// Symbolizing a large binary and asking the guest take a few seconds.
constexpr auto kStacksTimeout = std::chrono::seconds(90);

constexpr char kUsage[] =
    "usage: shimdiag COMMAND [OPTIONS] ...\n"
    "runhcs shim diagnostic tool\n"
    "\n"
    "commands:\n"
    "  list [--pids] [--json]                    running shims (<namespace>-<id>)\n"
    "  version                                   this tool's version and git commit\n"
    "  exec [-t|--tty] SHIM CMD [ARGS...]        run a process in the shim's utility VM\n"
    "  share [--ro|--readonly] SHIM HOST_PATH VM_PATH\n"
    "                                            make a host path appear in the VM\n"
    "  stacks SHIM                               the shim's threads' stacks, then the guest's\n"
    "  tasks [--execs] [--json] SHIM             the shim's tasks (and their execs)\n"
    "  pid SHIM                                  the shim's process id\n"
    "\n"
    "SHIM is a name from `list` or any prefix naming exactly one shim.\n";

// Like ASSIGN_OR_RETURN, in a function returning an exit code.
#define ASSIGN_OR_FAIL(var, expr)                     \
  auto var##_or = (expr);                             \
  if (!var##_or.ok()) return Fail(var##_or.status()); \
  auto var = std::move(*var##_or)

class Cli {
 public:
  explicit Cli(const Env& env) : env_(env), registry_(env.registry_dir) {}

  void Print(std::string_view s) { (void)WriteAll(env_.out, s); }
  int Fail(const Status& st) {
    (void)WriteAll(env_.err, fmt::format("shimdiag: {}\n", st.message()));
    return 1;
  }
  int Usage(std::string_view why) {
    (void)WriteAll(env_.err, fmt::format("shimdiag: {}\n{}", why, kUsage));
    return 2;
  }

  struct Shim {
    service::ShimEntry entry;
    std::unique_ptr<ttrpc::Client> client;
  };
  StatusOr<Shim> Connect(const std::string& name) {
    ASSIGN_OR_RETURN(auto entry, registry_.Resolve(name));
    auto client = ttrpc::Client::Dial(UnixAddress{entry.socket_path, false});
    if (!client.ok()) {
      return UnavailableError("shim {} is not answering at {}: {}", entry.name, entry.socket_path,
                              client.status().message());
    }
    return Shim{std::move(entry), std::move(*client)};
  }

  // One RPC of the shim's diag service, bounded by `timeout` (0: none).
  template <typename Req, typename Resp>
  Status Call(Shim& shim,
              Status (diag::ShimDiagClient::*rpc)(const Req&, Resp*, const ttrpc::CallOptions&)
                  const,
              const Req& req, Resp* resp, std::chrono::nanoseconds timeout) {
    ttrpc::CallOptions co;
    co.timeout = timeout;
    return (diag::ShimDiagClient(shim.client.get()).*rpc)(req, resp, co);
  }

  int List(bool pids, bool json) {
    auto entries = registry_.List();
    nlohmann::json out = nlohmann::json::array();
    std::vector<std::pair<std::string, std::string>> rows;
    for (const auto& e : entries) {
      nlohmann::json j = {{"name", e.name}, {"socket", e.socket_path}};
      std::string pid_text;
      if (pids) {
        diag::PidResponse resp;
        auto shim = Connect(e.name);
        Status st = shim.ok() ? Call(*shim, &diag::ShimDiagClient::DiagPid, diag::PidRequest(),
                                     &resp, kCallTimeout)
                              : shim.status();
        if (st.ok()) {
          j["pid"] = resp.pid();
          pid_text = std::to_string(resp.pid());
        } else {
          j["error"] = st.message();
          pid_text = "?";
        }
      }
      out.push_back(std::move(j));
      rows.emplace_back(e.name, pid_text);
    }
    if (json) {
      Print(out.dump(2) + "\n");
      return 0;
    }
    if (!pids) {
      for (const auto& r : rows) Print(r.first + "\n");
      return 0;
    }
    size_t w = 4;
    for (const auto& r : rows) w = std::max(w, r.first.size());
    Print(fmt::format("{:<{}}  {}\n", "Shim", w, "Pid"));
    for (const auto& r : rows) Print(fmt::format("{:<{}}  {}\n", r.first, w, r.second));
    return 0;
  }

  int Pid(const std::string& name) {
    ASSIGN_OR_FAIL(shim, Connect(name));
    diag::PidResponse resp;
    if (Status st =
            Call(shim, &diag::ShimDiagClient::DiagPid, diag::PidRequest(), &resp, kCallTimeout);
        !st.ok())
      return Fail(st);
    Print(fmt::format("{}\n", resp.pid()));
    return 0;
  }

  int Tasks(const std::string& name, bool execs, bool json) {
    ASSIGN_OR_FAIL(shim, Connect(name));
    diag::TasksRequest req;
    req.set_execs(execs);
    diag::TasksResponse resp;
    if (Status st = Call(shim, &diag::ShimDiagClient::DiagTasks, req, &resp, kCallTimeout);
        !st.ok())
      return Fail(st);
    if (json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& t : resp.tasks()) {
        nlohmann::json j = {{"id", t.id()}};
        if (execs) {
          j["execs"] = nlohmann::json::array();
          for (const auto& e : t.execs())
            j["execs"].push_back({{"id", e.id()}, {"state", e.state()}});
        }
        out.push_back(std::move(j));
      }
      Print(out.dump(2) + "\n");
      return 0;
    }
    for (const auto& t : resp.tasks()) {
      Print(t.id() + "\n");
      for (const auto& e : t.execs()) Print(fmt::format("|----> \t{}: {}\n", e.state(), e.id()));
    }
    return 0;
  }

  int Stacks(const std::string& name) {
    ASSIGN_OR_FAIL(shim, Connect(name));
    diag::StacksResponse resp;
    if (Status st = Call(shim, &diag::ShimDiagClient::DiagStacks, diag::StacksRequest(), &resp,
                         kStacksTimeout);
        !st.ok()) {
      return Fail(st);
    }
    Print("Stacks:\n" + resp.stacks());
    if (!resp.guest_stacks().empty()) Print("\nGuest Stacks:\n" + resp.guest_stacks());
    return 0;
  }

  int Share(const std::string& name, const std::string& host_path, const std::string& vm_path,
            bool ro) {
    ASSIGN_OR_FAIL(shim, Connect(name));
    diag::ShareRequest req;
    req.set_host_path(host_path);
    req.set_uvm_path(vm_path);
    req.set_read_only(ro);
    diag::ShareResponse resp;
    if (Status st = Call(shim, &diag::ShimDiagClient::DiagShare, req, &resp, kCallTimeout);
        !st.ok())
      return Fail(st);
    Print(fmt::format("Shared {} into {} at {}{}\n", host_path, shim.entry.name, vm_path,
                      ro ? " (read-only)" : ""));
    return 0;
  }

  int Exec(const std::string& name, const std::vector<std::string>& cmd, bool tty);

 private:
  const Env& env_;
  service::ShimRegistry registry_;
};

// --- exec ---

// The fifos of one exec; removed on every way out, Ctrl-C included.
char g_fifo_dir[256];
void RemoveFifos() {
  if (g_fifo_dir[0] == '\0') return;
  char path[320];
  for (const char* n : {"/stdin", "/stdout", "/stderr"}) {
    std::snprintf(path, sizeof path, "%s%s", g_fifo_dir, n);
    ::unlink(path);
  }
  ::rmdir(g_fifo_dir);
  g_fifo_dir[0] = '\0';
}
void OnInterrupt(int sig) {
  RemoveFifos();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Restores the terminal's mode when the exec ends.
class RawTerminal {
 public:
  explicit RawTerminal(int fd) : fd_(fd) {
    if (::tcgetattr(fd, &saved_) != 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    if (::tcsetattr(fd, TCSANOW, &raw) == 0) active_ = true;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
  }

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

// Copies from src to dst until EOF on src or a byte on stop_fd.
void Copy(int src, int dst, int stop_fd) {
  char buf[32 * 1024];
  for (;;) {
    pollfd p[2] = {{src, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    int n = ::poll(p, stop_fd >= 0 ? 2 : 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (stop_fd >= 0 && p[1].revents) return;
    ssize_t r = ::read(src, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    if (!WriteAll(dst, std::string_view(buf, static_cast<size_t>(r))).ok()) return;
  }
}

// One side of a fifo served on a thread: opening blocks until the shim
// opens the other side; Unblock() releases an open the shim never matched.
class FifoPump {
 public:
  // reading: the shim writes, we copy to `local`; else we copy `local` in.
  FifoPump(std::string path, bool reading, int local, int stop_fd)
      : path_(std::move(path)), reading_(reading) {
    thread_ = std::thread([this, local, stop_fd] {
      UniqueFd f(::open(path_.c_str(), (reading_ ? O_RDONLY : O_WRONLY) | O_CLOEXEC));
      if (f) {
        if (reading_) {
          Copy(f.get(), local, -1);
        } else {
          Copy(local, f.get(), stop_fd);
        }
      }
      done_ = true;
    });
  }
  void Finish() {
    while (!done_) {
      UniqueFd other(
          ::open(path_.c_str(), (reading_ ? O_WRONLY : O_RDONLY) | O_NONBLOCK | O_CLOEXEC));
      if (done_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    thread_.join();
  }

 private:
  std::string path_;
  bool reading_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

int Cli::Exec(const std::string& name, const std::vector<std::string>& cmd, bool tty) {
  ASSIGN_OR_FAIL(shim, Connect(name));
  std::string tmpl = env_.tmp_dir + "/shimdiag-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr || tmpl.size() >= sizeof g_fifo_dir) {
    return Fail(ErrnoError(errno, "fifo directory"));
  }
  std::snprintf(g_fifo_dir, sizeof g_fifo_dir, "%s", tmpl.c_str());
  struct sigaction sa = {}, old_int = {}, old_term = {}, old_hup = {};
  sa.sa_handler = OnInterrupt;
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  ::sigaction(SIGHUP, &sa, &old_hup);
  auto restore = [&] {
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGTERM, &old_term, nullptr);
    ::sigaction(SIGHUP, &old_hup, nullptr);
    RemoveFifos();
  };

  diag::ExecProcessRequest req;
  for (const auto& a : cmd) req.add_args(a);
  req.set_terminal(tty);
  std::vector<std::string> names = {"stdin", "stdout"};
  if (!tty) names.push_back("stderr");
  for (const auto& n : names) {
    std::string p = tmpl + "/" + n;
    if (::mkfifo(p.c_str(), 0600) != 0) {
      int err = errno;
      restore();
      return Fail(ErrnoError(err, "mkfifo " + p));
    }
  }
  req.set_stdin(tmpl + "/stdin");
  req.set_stdout(tmpl + "/stdout");
  if (!tty) req.set_stderr(tmpl + "/stderr");

  std::optional<RawTerminal> raw;
  if (tty && ::isatty(env_.in)) raw.emplace(env_.in);
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
  std::vector<std::unique_ptr<FifoPump>> pumps;
  pumps.push_back(std::make_unique<FifoPump>(req.stdin(), false, env_.in, stop.get()));
  pumps.push_back(std::make_unique<FifoPump>(req.stdout(), true, env_.out, -1));
  if (!tty) pumps.push_back(std::make_unique<FifoPump>(req.stderr(), true, env_.err, -1));

  diag::ExecProcessResponse resp;
  Status st =
      Call(shim, &diag::ShimDiagClient::DiagExecInHost, req, &resp, std::chrono::nanoseconds(0));
  uint64_t one = 1;
  (void)!::write(stop.get(), &one, sizeof one);
  // Output first: it ends with the shim's side, and must be complete.
  for (size_t i = pumps.size(); i-- > 0;) pumps[i]->Finish();
  raw.reset();
  restore();
  if (!st.ok()) return Fail(st);
  return resp.exit_code();
}

}  // namespace

int Run(const std::vector<std::string>& args, const Env& env) {
  Cli cli(env);
  if (args.empty()) return cli.Usage("no command");
  const std::string& command = args[0];
  if (command == "help" || command == "-h" || command == "--help") {
    cli.Print(kUsage);
    return 0;
  }
  if (command == "version" || command == "-v" || command == "--version") {
    cli.Print(fmt::format("shimdiag {} (commit {})\n", Version(), GitCommit()));
    return 0;
  }
  // Options come before the positional arguments; exec stops at its
  // command, whose own flags are not ours.
  bool pids = false, json = false, execs = false, tty = false, ro = false;
  std::vector<std::string> pos;
  size_t i = 1;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;
    if (command == "list" && a == "--pids") {
      pids = true;
    } else if ((command == "list" || command == "tasks") && a == "--json") {
      json = true;
    } else if (command == "tasks" && a == "--execs") {
      execs = true;
    } else if (command == "exec" && (a == "-t" || a == "--tty")) {
      tty = true;
    } else if (command == "share" && (a == "--ro" || a == "--readonly")) {
      ro = true;
    } else {
      return cli.Usage(fmt::format("{}: unknown option {}", command, a));
    }
  }
  pos.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());

  auto want = [&](size_t n, bool at_least = false) {
    return at_least ? pos.size() >= n : pos.size() == n;
  };
  if (command == "list") {
    if (!want(0)) return cli.Usage("list takes no arguments");
    return cli.List(pids, json);
  }
  if (command == "pid") {
    if (!want(1)) return cli.Usage("pid: want SHIM");
    return cli.Pid(pos[0]);
  }
  if (command == "tasks") {
    if (!want(1)) return cli.Usage("tasks: want SHIM");
    return cli.Tasks(pos[0], execs, json);
  }
  if (command == "stacks") {
    if (!want(1)) return cli.Usage("stacks: want SHIM");
    return cli.Stacks(pos[0]);
  }
  if (command == "share") {
    if (!want(3)) return cli.Usage("share: want SHIM HOST_PATH VM_PATH");
    return cli.Share(pos[0], pos[1], pos[2], ro);
  }
  if (command == "exec") {
    if (!want(2, true)) return cli.Usage("exec: want SHIM CMD [ARGS...]");
    return cli.Exec(pos[0], std::vector<std::string>(pos.begin() + 1, pos.end()), tty);
  }
  return cli.Usage(fmt::format("unknown command {:?}", command));
}

}  // namespace runhcs::shimdiag
