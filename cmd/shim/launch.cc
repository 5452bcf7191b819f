#include "cmd/shim/launch.h"

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "base/event_loop.h"
#include "base/io.h"
#include "base/latch.h"
#include "base/log.h"
#include "base/reaper.h"
#include "base/sha256.h"
#include "base/stacks.h"
#include "base/thread_group.h"
#include "containerd/task/v2/shim.ttrpc.h"
#include "events/forwarder.h"
#include "oci/mounts.h"
#include "oci/spec.h"
#include "pod/pod.h"
#include "pod/sandbox_task.h"
#include "proctask/process_task.h"
#include "proto/timestamp.h"
#include "runhcs/diag.ttrpc.h"
#include "service/options.h"
#include "service/shim_registry.h"
#include "service/task_service.h"
#include "stats/oom_watcher.h"
#include "task/exec_set.h"
#include "ttrpc/client.h"
#include "ttrpc/server.h"
#include "uvm/live_agents.h"
#include "vmtask/pod_vm.h"
#include "vmtask/vm_task.h"

namespace runhcs::shim {

namespace {

constexpr char kSocketDir[] = "/run/containerd/s";
constexpr int kListenerFd = 3;

int Fail(const Status& st) {
  // containerd shows this text in "start failed: <output>".
  std::fprintf(stderr, "%s\n", st.WireMessage().c_str());
  return 1;
}

std::string Cwd() {
  char buf[PATH_MAX];
  return ::getcwd(buf, sizeof buf) ? std::string(buf) : std::string(".");
}

// Builds tasks and pods for Create: process isolation through the OCI
// runtime, hypervisor isolation in a utility VM, chosen per container.
class ShimTaskFactory : public service::TaskFactory {
 public:
  ShimTaskFactory(service::ShimOptions opts, std::string ns, events::Publisher* publisher)
      : opts_(std::move(opts)), ns_(std::move(ns)), publisher_(publisher) {}

  StatusOr<std::shared_ptr<task::Task>> CreateTask(const task::CreateRequest& req,
                                                   const oci::Spec& spec) override {
    ASSIGN_OR_RETURN(auto opts, OptionsFor(req));
    RETURN_IF_ERROR(ApplyAnnotations(spec, &opts));
    if (opts.isolation == service::ShimOptions::Isolation::kHypervisor) {
      vmtask::VmTask::Config cfg{ns_, VmConfig(opts)};
      ASSIGN_OR_RETURN(auto t, vmtask::VmTask::Create(req, cfg, publisher_));
      return std::shared_ptr<task::Task>(std::move(t));
    }
    proctask::ProcessTask::Config cfg{ns_, {opts.oci_runtime, opts.oci_runtime_root}};
    ASSIGN_OR_RETURN(auto t, proctask::ProcessTask::Create(req, cfg, publisher_));
    return std::shared_ptr<task::Task>(std::move(t));
  }
  // A hypervisor-isolated pod: the fake sandbox task owns the pod's VM and
  // every workload runs in it. A process-isolated pod: the sandbox and the
  // workloads are ordinary containers. Either way, one shim.
  StatusOr<std::shared_ptr<pod::Pod>> CreatePod(const task::CreateRequest& req,
                                                const oci::Spec& spec) override {
    ASSIGN_OR_RETURN(auto opts, OptionsFor(req));
    RETURN_IF_ERROR(ApplyAnnotations(spec, &opts));
    events::Publisher* pub = publisher_;
    const std::string ns = ns_;
    if (opts.isolation == service::ShimOptions::Isolation::kProcess) {
      proctask::ProcessTask::Config cfg{ns_, {opts.oci_runtime, opts.oci_runtime_root}};
      ASSIGN_OR_RETURN(auto sandbox, proctask::ProcessTask::Create(req, cfg, pub));
      return std::shared_ptr<pod::Pod>(std::make_shared<pod::PodImpl>(
          req.id, sandbox, nullptr,
          [cfg, pub](const task::CreateRequest& r, const oci::Spec&,
                     std::shared_ptr<uvm::UtilityVm>) -> StatusOr<std::shared_ptr<task::Task>> {
            ASSIGN_OR_RETURN(auto t, proctask::ProcessTask::Create(r, cfg, pub));
            return std::shared_ptr<task::Task>(std::move(t));
          }));
    }
    ASSIGN_OR_RETURN(vmtask::PodVm pod_vm, vmtask::BootPodVm(spec, VmConfig(opts), ns_, req.id));
    std::shared_ptr<uvm::UtilityVm> vm = pod_vm.vm;
    std::shared_ptr<pod::SandboxTask> sandbox = pod::SandboxTask::Create(
        pub, req.id, req.bundle, vm, std::shared_ptr<net::PodNetwork>(std::move(pod_vm.network)));
    pub->Publish(task::CreateEvent(req, 0));
    auto p = std::make_shared<pod::PodImpl>(
        req.id, sandbox, vm,
        [ns, pub](const task::CreateRequest& r, const oci::Spec&,
                  std::shared_ptr<uvm::UtilityVm> host) -> StatusOr<std::shared_ptr<task::Task>> {
          ASSIGN_OR_RETURN(auto t, vmtask::VmTask::CreateIn(r, ns, std::move(host), pub));
          return std::shared_ptr<task::Task>(std::move(t));
        });
    // Workloads' TaskExits before the sandbox's (they end with the VM).
    std::weak_ptr<pod::PodImpl> weak = p;
    sandbox->SetBeforeExit([weak, id = req.id] {
      auto pod = weak.lock();
      if (!pod) return;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      for (auto& t : pod->ListTasks()) {
        if (t->id() != id) (void)t->Wait(deadline);
      }
    });
    return std::shared_ptr<pod::Pod>(p);
  }

 private:
  // Create's own options win over the shim's.
  StatusOr<service::ShimOptions> OptionsFor(const task::CreateRequest& req) {
    if (req.options.type_url().empty()) return opts_;
    return service::DecodeOptions(req.options);
  }
  // Per-container annotations override the options (service/options.h).
  static Status ApplyAnnotations(const oci::Spec& spec, service::ShimOptions* o) {
    return service::ApplyAnnotations(spec.annotations(), o);
  }
  static uvm::VmConfig VmConfig(const service::ShimOptions& o) {
    uvm::VmConfig c;
    c.boot_dir = o.boot_files_path.empty() ? DefaultBootDir() : o.boot_files_path;
    c.cpus = o.vm_processors > 0 ? o.vm_processors : 0;  // 0: by accelerator
    c.memory_mb = o.vm_memory_mb > 0 ? o.vm_memory_mb : uvm::kDefaultVmMemoryMb;
    c.tcg_cache_mb = o.vm_tcg_cache_mb;
    c.template_dir = o.vm_template_path;
    switch (o.accelerator) {
      case service::ShimOptions::Accelerator::kKvm:
        c.accel = uvm::VmConfig::Accel::kKvm;
        break;
      case service::ShimOptions::Accelerator::kTcg:
        c.accel = uvm::VmConfig::Accel::kTcg;
        break;
      default:
        c.accel = uvm::VmConfig::Accel::kAuto;
        break;
    }
    return c;
  }
  // <dir of this binary>/../lib/runhcs/boot: the install layout, and the
  // build tree's (bin/ and lib/ side by side). lib, not share: a kernel and
  // images of x86 binaries are architecture-dependent.
  static std::string DefaultBootDir() {
    char self[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    std::string exe = n > 0 ? std::string(self, static_cast<size_t>(n)) : "";
    std::string dir = exe.substr(0, exe.rfind('/'));
    return dir.substr(0, dir.rfind('/')) + "/lib/runhcs/boot";
  }
  const service::ShimOptions opts_;
  const std::string ns_;
  events::Publisher* const publisher_;
};

// The socket path behind fd, for removal at exit.
std::string SocketPathOf(int fd) {
  sockaddr_un sa{};
  socklen_t len = sizeof sa;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0 || sa.sun_path[0] == '\0') {
    return "";
  }
  return sa.sun_path;
}

// Symbolizes in a child running this executable's `symbolize` action, so the
// daemon never holds the executable's debug information.
std::vector<std::vector<Frame>> SymbolizeWithHelper(const std::vector<uintptr_t>& pcs) {
  auto r = SymbolizeInChild({"/proc/self/exe", "symbolize"}, pcs);
  if (r.ok()) return *r;
  spdlog::warn("stacks: {}", r.status().ToString());
  return std::vector<std::vector<Frame>>(pcs.size());
}

}  // namespace

int Symbolize() { return SymbolizeMain(STDIN_FILENO, STDOUT_FILENO); }

std::string SocketAddress(const std::string& containerd_address, const std::string& ns,
                          const std::string& group) {
  return fmt::format("unix://{}/{}", kSocketDir,
                     Sha256Hex(containerd_address + "/" + ns + "/" + group));
}

int Start(const Flags& f) {
  if (f.ns.empty() || f.id.empty() || f.address.empty()) {
    return Fail(InvalidArgumentError("start needs -namespace, -id and -address"));
  }
  auto opts_bytes = ReadAll(STDIN_FILENO);
  if (!opts_bytes.ok()) return Fail(opts_bytes.status().Wrap("read options"));
  auto opts = service::DecodeOptionsBytes(*opts_bytes);
  if (!opts.ok()) return Fail(opts.status());
  std::string bundle = Cwd();
  auto spec = oci::Spec::Load(bundle);
  if (!spec.ok()) return Fail(spec.status());
  auto role = oci::PodRoleOf(*spec, f.id);
  if (!role.ok()) return Fail(role.status());
  std::string group = role->kind == oci::PodRole::kStandalone ? f.id : role->sandbox_id;
  std::string address = SocketAddress(f.address, f.ns, group);
  UnixAddress ua = UnixAddress::Parse(address);

  if (role->kind == oci::PodRole::kWorkload) {
    // The pod's shim serves this container too: connect, spawn nothing.
    auto client = ttrpc::Client::Dial(ua);
    std::string what =
        fmt::format("failed to connect to hosting shim of pod '{}'", role->sandbox_id);
    if (!client.ok()) return Fail(client.status().Wrap(what));
    containerd::task::v2::ConnectRequest req;
    req.set_id(role->sandbox_id);
    containerd::task::v2::ConnectResponse resp;
    ttrpc::CallOptions co;
    co.timeout = std::chrono::seconds(10);
    Status st = containerd::task::v2::TaskClient(client->get()).Connect(req, &resp, co);
    if (!st.ok()) return Fail(st.Wrap(what));
  } else {
    Status st = MkdirAll(kSocketDir, 0711);
    if (!st.ok()) return Fail(st);
    if (::access(ua.path.c_str(), F_OK) == 0) {
      if (ConnectUnix(ua).ok()) {
        return Fail(AlreadyExistsError("a shim for '{}' already listens at {}", group, address));
      }
      ::unlink(ua.path.c_str());  // stale, from a shim that died
    }
    auto listener = ListenUnix(ua);
    if (!listener.ok()) return Fail(listener.status());

    int opt_pipe[2], status_pipe[2];
    if (::pipe2(opt_pipe, O_CLOEXEC) != 0 || ::pipe2(status_pipe, O_CLOEXEC) != 0) {
      ::unlink(ua.path.c_str());
      return Fail(ErrnoError(errno, "pipe"));
    }
    // argv[0] is the real path so `ps` shows what runs; exec goes through
    // /proc/self/exe so an upgrade of the file in between cannot mix versions.
    char self[PATH_MAX];
    ssize_t self_len = ::readlink("/proc/self/exe", self, sizeof self - 1);
    std::string argv0 = self_len > 0 ? std::string(self, static_cast<size_t>(self_len))
                                     : std::string("containerd-shim-runhcs-v1");
    std::vector<std::string> args = {argv0, "-namespace", f.ns, "-id", f.id, "-address", f.address};
    if (f.debug) args.push_back("-debug");
    if (role->kind == oci::PodRole::kSandbox) args.push_back("-is-sandbox");
    args.push_back("serve");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    // The daemon starts with these blocked (the mask survives exec), so a
    // signal that arrives before it sets up its signalfd waits for it
    // instead of killing it without cleanup.
    sigset_t block;
    sigemptyset(&block);
    for (int s : {SIGCHLD, SIGTERM, SIGINT}) sigaddset(&block, s);
    sigset_t old;
    ::sigprocmask(SIG_BLOCK, &block, &old);
    pid_t pid = ::fork();
    if (pid != 0) ::sigprocmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) {
      ::unlink(ua.path.c_str());
      return Fail(ErrnoError(errno, "fork"));
    }
    if (pid == 0) {
      // The daemon: own session, stdio off containerd's pipe (or containerd
      // waits for EOF forever), listener on fd 3, options on stdin.
      ::setsid();
      int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
      ::dup2(opt_pipe[0], STDIN_FILENO);
      ::dup2(devnull, STDOUT_FILENO);
      ::dup2(devnull, STDERR_FILENO);
      if (listener->get() == kListenerFd) {
        ::fcntl(kListenerFd, F_SETFD, 0);  // dup2 onto itself would keep CLOEXEC
      } else {
        ::dup2(listener->get(), kListenerFd);  // dup2 clears FD_CLOEXEC
      }
      ::execv("/proc/self/exe", argv.data());
      int err = errno;
      (void)!::write(status_pipe[1], &err, sizeof err);
      ::_exit(127);
    }
    ::close(opt_pipe[0]);
    ::close(status_pipe[1]);
    listener->reset();
    Status ws = WriteAll(opt_pipe[1], *opts_bytes);
    ::close(opt_pipe[1]);
    int child_err = 0;
    ssize_t n;
    do {
      n = ::read(status_pipe[0], &child_err, sizeof child_err);
    } while (n < 0 && errno == EINTR);
    ::close(status_pipe[0]);
    if (n > 0) {
      ::waitpid(pid, nullptr, 0);
      ::unlink(ua.path.c_str());
      return Fail(ErrnoError(child_err, "exec shim daemon"));
    }
    if (!ws.ok()) spdlog::warn("passing options to the daemon: {}", ws.ToString());
    Status ps = WriteFileAtomic(bundle + "/shim.pid", std::to_string(pid), 0644);
    if (!ps.ok()) spdlog::warn("{}", ps.ToString());
  }
  Status as = WriteFileAtomic(bundle + "/address", address, 0644);
  if (!as.ok()) return Fail(as);
  std::fputs(address.c_str(), stdout);
  return 0;
}

namespace {

// Whether a shim serves at `ua`: it accepts AND answers. A socket that only
// accepts is not proof: the listener of a shim killed a moment ago can
// still be held by a process it was forking, and then `delete` would leave
// its VM, socket and registry entry behind.
bool ShimAnswers(const UnixAddress& ua) {
  if (ua.abstract) return false;
  auto client = ttrpc::Client::Dial(ua);
  if (!client.ok()) return false;
  ttrpc::CallOptions co;
  co.timeout = std::chrono::seconds(2);
  containerd::runhcs::v1::diag::PidResponse resp;
  return containerd::runhcs::v1::diag::ShimDiagClient(client->get())
      .DiagPid(containerd::runhcs::v1::diag::PidRequest(), &resp, co)
      .ok();
}

}  // namespace

int Delete(const Flags& f) {
  std::string bundle = f.bundle.empty() ? Cwd() : f.bundle;
  // The container of a shim that is gone: kill it and drop the runtime's
  // state, then the rootfs mount. Errors go to stderr, which containerd
  // logs as cleanup warnings.
  uint32_t pid = 0;
  if (auto read_pid = ReadPidFile(bundle + "/init.pid", "the container"); read_pid.ok()) {
    pid = static_cast<uint32_t>(*read_pid);
  }
  if (auto rc = proctask::ProcessTask::ReadRuntimeFile(bundle); rc.ok()) {
    oci::Runtime runtime(*rc, bundle);
    Status st = runtime.Delete(f.id, /*force=*/true);
    if (!st.ok()) std::fprintf(stderr, "%s\n", st.ToString().c_str());
    ::unlink((bundle + "/runtime").c_str());
  }
  // A VM of a shim that died (its hypervisor processes die with the shim;
  // the mounts and files stay).
  auto address = ReadFile(bundle + "/address");
  std::optional<UnixAddress> ua;
  if (address.ok()) ua = UnixAddress::Parse(*address);
  const bool shim_gone = !ua || !ShimAnswers(*ua);
  if (shim_gone) uvm::CleanupVmStateDir(vmtask::VmTask::VmStateDir(f.ns, f.id));
  Status us = oci::UnmountAll(bundle + "/rootfs");
  if (!us.ok()) std::fprintf(stderr, "%s\n", us.ToString().c_str());
  // A shim that died leaves its socket behind; a live one (a pod's, serving
  // other tasks) keeps it.
  if (shim_gone && ua && !ua->abstract) {
    ::unlink(ua->path.c_str());
    service::ShimRegistry().Unregister(service::ShimRegistry::NameOf(f.ns, f.id), ua->path);
  }
  containerd::task::v2::DeleteResponse resp;
  resp.set_pid(pid);
  resp.set_exit_status(128 + SIGKILL);
  *resp.mutable_exited_at() = ToTimestamp(std::chrono::system_clock::now());
  std::string out = resp.SerializeAsString();
  return WriteAll(STDOUT_FILENO, out).ok() ? 0 : 1;
}

int Serve(const Flags& f) {
  // One malloc arena: the shim allocates little, and a per-thread arena for
  // each short-lived I/O or exit thread would only grow the resident heap.
  ::mallopt(M_ARENA_MAX, 1);
  // Exec'd through /proc/self/exe, the kernel named us "exe"; take the name
  // `ps` and `pgrep` show for any containerd shim.
  ::prctl(PR_SET_NAME, "containerd-shim");
  // Signals are taken synchronously by the main loop; every thread started
  // below inherits the mask (`start` already blocked them across exec).
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGCHLD, SIGTERM, SIGINT}) sigaddset(&mask, s);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto opts_bytes = ReadAll(STDIN_FILENO);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ::dup2(devnull, STDIN_FILENO);
  ::close(devnull);
  std::string bundle = Cwd();
  // containerd's `log` fifo, when it made one, becomes our stderr.
  int logfd = ::open((bundle + "/log").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (logfd >= 0) {
    ::fcntl(logfd, F_SETFL, ::fcntl(logfd, F_GETFL) & ~O_NONBLOCK);
    ::dup2(logfd, STDERR_FILENO);
    ::close(logfd);
  }
  auto opts = service::DecodeOptionsBytes(opts_bytes.ok() ? *opts_bytes : "");
  InitLogging(f.debug ? "debug" : (opts.ok() ? opts->log_level : "info"),
              {{"id", f.id}, {"namespace", f.ns}, {"runtime", "io.containerd.runhcs.v1"}});
  if (!opts.ok()) spdlog::error("options: {}; using defaults", opts.status().ToString());

  UniqueFd sfd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) spdlog::warn("subreaper: {}", std::strerror(errno));
  Reaper::Get().Enable();
  if (Status hs = InstallStackHandler(); !hs.ok()) spdlog::warn("stack dumps: {}", hs.ToString());
  ::fcntl(kListenerFd, F_SETFD, FD_CLOEXEC);  // not for our children

  // Threads of the daemon, each owned and joined at shutdown:
  //  - this one: waits for the shutdown request, then shuts down;
  //  - the event loop: signals (SIGCHLD -> the Reaper, SIGTERM/SIGINT ->
  //    shutdown), exit dispatch, every stdio copy, timers;
  //  - the TTRPC server: an acceptor, a reader per connection, workers;
  //  - the event forwarder's sender;
  //  - the ThreadGroup: blocking work that cannot wait on the loop (a task's
  //    close: the runtime's delete; a VM's tied helpers; agent relays).
  // Shutdown, in this order: stop serving (in-flight RPCs finish, bounded);
  // leave the registry; destroy the tasks (their stdio closes on the loop);
  // join the ThreadGroup (bounded); unwatch the OOM watcher's cgroups; stop
  // the loop; flush the forwarder (bounded).
  Latch shutdown;
  auto signals = EventLoop::Get().Watch(sfd.get(), EPOLLIN, [&sfd, &shutdown](uint32_t) {
    signalfd_siginfo si;
    while (::read(sfd.get(), &si, sizeof si) == sizeof si) {
      switch (si.ssi_signo) {
        case SIGCHLD:
          // Every exit, ours or reparented to us, goes through the Reaper.
          Reaper::Get().ReapAll();
          break;
        case SIGTERM:
        case SIGINT:
          spdlog::info("signal {}: shutting down", si.ssi_signo);
          shutdown.Open();
          break;
      }
    }
  });
  if (!signals.ok()) {
    spdlog::error("event loop: {}", signals.status().ToString());
    return 1;
  }

  const char* ttrpc_env = std::getenv("TTRPC_ADDRESS");
  std::string ttrpc_address = ttrpc_env && *ttrpc_env ? ttrpc_env : f.address + ".ttrpc";
  std::string socket_path = SocketPathOf(kListenerFd);
  {
    events::Forwarder forwarder({.address = ttrpc_address, .ns = f.ns});
    {
      ShimTaskFactory factory(opts.ok() ? *opts : service::ShimOptions{}, f.ns, &forwarder);
      service::TaskService svc({f.id, f.ns, f.is_sandbox, &factory, &forwarder,
                                [&shutdown] {
                                  spdlog::info("shutdown requested");
                                  shutdown.Open();
                                },
                                SymbolizeWithHelper, [] { return uvm::DumpLiveGuestStacks(); }});
      ttrpc::Server::Options server_opts;
      // Quiet again after a burst: give the freed heap back, so a long-lived
      // shim's RSS follows its live state, not its busiest moment; and say
      // what is live (once per quiet period: a leak shows as a rising line).
      server_opts.on_idle = [] {
        ::malloc_trim(0);
        struct mallinfo2 mi = ::mallinfo2();
        spdlog::info("idle: heap {} B in use, {} B free", mi.uordblks, mi.fordblks);
      };
      ttrpc::Server server(server_opts);
      svc.Register(&server);
      server.ServeListener(UniqueFd(kListenerFd));
      spdlog::info("serving {} for {}/{} (pid {})", socket_path, f.ns, f.id, ::getpid());
      // For shimdiag, which finds shims without containerd.
      service::ShimRegistry registry;
      std::string shim_name = service::ShimRegistry::NameOf(f.ns, f.id);
      if (!socket_path.empty()) {
        Status rs = registry.Register(shim_name, socket_path);
        if (!rs.ok()) spdlog::warn("{}", rs.ToString());
      }

      shutdown.Wait();
      server.Shutdown(std::chrono::seconds(3));
      if (!socket_path.empty()) {
        registry.Unregister(shim_name, socket_path);
        ::unlink(socket_path.c_str());
      }
    }  // the tasks go here
    ThreadGroup::Get().JoinAll(std::chrono::steady_clock::now() + std::chrono::seconds(5));
    stats::OomWatcher::Get().Stop();
    EventLoop::Get().Stop();
  }  // the forwarder flushes here (bounded)
  spdlog::info("exited");
  return 0;
}

}  // namespace runhcs::shim
