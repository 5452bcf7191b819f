#include "guest/agent_service.h"

#include "guest/pod.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/random.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/event_loop.h"
#include "base/io.h"
#include "base/log.h"
#include "base/reaper.h"
#include "base/thread_group.h"
#include "stats/cgroup.h"
#include "stats/oom_watcher.h"
#include "stdio/console.h"

namespace runhcs::guest {

namespace {

constexpr uint32_t kDefaultChunk = 32 * 1024;
constexpr uint32_t kMaxChunk = 1024 * 1024;
constexpr char kDefaultPath[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

int64_t BootNs() {
  timespec ts;
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

bool ValidId(const std::string& id) {
  return !id.empty() && id.size() <= 128 && id.find('/') == std::string::npos && id != "." &&
         id != "..";
}

// A relative path that stays below its root.
bool ValidSubPath(const std::string& p) {
  if (p.empty()) return true;
  if (p.front() == '/') return false;
  std::stringstream ss(p);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part == "..") return false;
  }
  return true;
}

struct Pipe {
  UniqueFd r, w;
  static StatusOr<Pipe> Make() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
    return Pipe{UniqueFd(p[0]), UniqueFd(p[1])};
  }
};

// The entries of `dir` named by a positive number (pids, tids), ascending.
std::vector<int> NumericEntries(const std::string& dir) {
  std::vector<int> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (int n = std::atoi(e->d_name); n > 0) out.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Removes a container's bundle: the files the agent and the runtime put
// there (config, log, pid files), then the directory. Never recursive: a
// directory or mount found there stays, with a warning.
void RemoveBundle(const std::string& dir) {
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_type == DT_DIR) continue;
      ::unlinkat(::dirfd(d), e->d_name, 0);
    }
    ::closedir(d);
  }
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) {
    spdlog::warn("bundle {} left: {}", dir, std::strerror(errno));
  }
}

using SharedFd = std::shared_ptr<UniqueFd>;
SharedFd Share(UniqueFd fd) { return fd ? std::make_shared<UniqueFd>(std::move(fd)) : nullptr; }

}  // namespace

struct AgentService::Process {
  pid_t pid = 0;
  SharedFd master;  // pty master, for resize

  Mutex mu;
  CondVar cv;
  SharedFd in GUARDED_BY(mu);   // stdin write end; null once closed
  SharedFd out GUARDED_BY(mu);  // stdout read end; null at eof
  SharedFd err GUARDED_BY(mu);
  std::optional<int> status GUARDED_BY(mu);
  bool waited GUARDED_BY(mu) = false;

  void SetExit(int st) {
    MutexLock l(&mu);
    status = st;
    cv.SignalAll();
  }
  bool DoneLocked() REQUIRES(mu) { return status && waited && !out && !err; }
};

// The stdio of a process the OCI runtime starts: pipes, or with a terminal
// the console socket the runtime sends the pty master to.
class AgentService::RuntimeIo {
 public:
  static StatusOr<RuntimeIo> Make(bool terminal, bool with_stdin) {
    RuntimeIo io;
    if (terminal) {
      ASSIGN_OR_RETURN(io.console_, stdio::ConsoleSocket::Create("/tmp"));
      return io;
    }
    ASSIGN_OR_RETURN(io.out_, Pipe::Make());
    ASSIGN_OR_RETURN(io.err_, Pipe::Make());
    if (with_stdin) {
      ASSIGN_OR_RETURN(io.in_, Pipe::Make());
    }
    return io;
  }
  const std::string& console_path() const {
    static const std::string none;
    return console_ ? console_->path() : none;
  }
  // For the runtime's own stdin/stdout/stderr (-1: /dev/null).
  oci::Runtime::Stdio child() const {
    if (console_) return {};
    return {in_.r ? in_.r.get() : -1, out_.w.get(), err_.w.get()};
  }
  // After the runtime returned: take the pty master, drop the child ends.
  Status Started() {
    if (console_) {
      ASSIGN_OR_RETURN(master_, console_->ReceiveMaster());
      console_.reset();
    }
    in_.r.reset();
    out_.w.reset();
    err_.w.reset();
    return OkStatus();
  }
  void MoveTo(Process* p) {
    MutexLock l(&p->mu);
    if (master_) {
      p->in = Share(UniqueFd(::fcntl(master_.get(), F_DUPFD_CLOEXEC, 0)));
      p->out = Share(UniqueFd(::fcntl(master_.get(), F_DUPFD_CLOEXEC, 0)));
      p->master = Share(std::move(master_));
      return;
    }
    p->in = Share(std::move(in_.w));
    p->out = Share(std::move(out_.r));
    p->err = Share(std::move(err_.r));
  }

 private:
  std::unique_ptr<stdio::ConsoleSocket> console_;
  UniqueFd master_;
  Pipe in_, out_, err_;
};

struct AgentService::Container {
  std::string id;
  std::string bundle;
  std::unique_ptr<oci::Runtime> rt;
  ProcessPtr init;
  // Held from `runtime create` until init is watched (an init that dies
  // before Start is still seen).
  Reaper::Expectation init_expect;
  bool started = false;
  std::map<std::string, ProcessPtr> execs;
  std::string cgroup_dir;  // "" when unknown
  // No pid namespace of its own (the pod's, or the VM's): init's exit does
  // not end its other processes, which may hold its stdio open, so the
  // agent kills them before reporting the exit (runc-v2's rule).
  bool kill_all_on_exit = false;
  // OOM kills: guarded by the agent's mu_.
  uint64_t oom_total = 0;
  uint32_t oom_pending = 0;
  bool init_exited = false;
  bool removed = false;
};

namespace {

// When a call that waits for the VM's own state (its setup, the warm-up,
// restored devices) gives up: a little before the caller's deadline, so that
// the caller gets the reason, not its own timeout with nothing said.
ttrpc::Clock::time_point GiveUpBy(const ttrpc::CallContext& ctx,
                                  ttrpc::Clock::duration without_deadline) {
  auto now = ttrpc::Clock::now();
  if (!ctx.deadline) return now + without_deadline;
  auto left = std::max<ttrpc::Clock::duration>(*ctx.deadline - now, ttrpc::Clock::duration(0));
  return *ctx.deadline - std::min<ttrpc::Clock::duration>(left / 10, std::chrono::seconds(1));
}

}  // namespace

AgentService::AgentService(AgentConfig cfg) : cfg_(std::move(cfg)), started_boot_ns_(BootNs()) {}

AgentService::~AgentService() {
  MutexLock l(&mu_);
  while (warming_) warm_cv_.Wait(&mu_);
}

void AgentService::StartWarmUp() {
  if (!cfg_.warm_up) return;
  const long cpus = cfg_.online_cpus > 0 ? cfg_.online_cpus : ::sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus < 2) return;
  {
    MutexLock l(&mu_);
    if (warming_) return;
    warming_ = true;
  }
  auto run = [this] {
    // Idle priority, inherited by the runtime it starts: a real call that
    // arrives meanwhile gets the vCPU first.
    sched_param idle{};
    (void)::sched_setscheduler(0, SCHED_IDLE, &idle);
    auto t0 = std::chrono::steady_clock::now();
    Status st = cfg_.warm_up();
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    if (st.ok()) {
      spdlog::info("runtime warm-up done in {} ms", ms);
    } else {
      spdlog::warn("runtime warm-up failed after {} ms: {}", ms, st.ToString());
    }
    MutexLock l(&mu_);
    warming_ = false;
    warm_cv_.SignalAll();
  };
  if (Status st = ThreadGroup::Get().Spawn("warm-up", run); !st.ok()) {
    spdlog::warn("runtime warm-up not started: {}", st.ToString());
    MutexLock l(&mu_);
    warming_ = false;
    warm_cv_.SignalAll();
  }
}

void AgentService::Register(ttrpc::Server* server) { pb::RegisterAgentServer(server, this); }

Status AgentService::Shutdown(const ttrpc::CallContext&, const pb::Empty&, pb::Empty*) {
  if (cfg_.on_shutdown) {
    // After the answer has gone out.
    EventLoop::Get().After(std::chrono::milliseconds(50), cfg_.on_shutdown);
  }
  return OkStatus();
}

Status AgentService::Ping(const ttrpc::CallContext&, const pb::PingRequest&,
                          pb::PingResponse* out) {
  pb::PingResponse r;
  utsname u;
  if (::uname(&u) == 0) r.set_kernel_release(u.release);
  r.set_agent_version(cfg_.agent_version);
  r.set_boot_ns(started_boot_ns_);
  *out = std::move(r);
  return OkStatus();
}

Status AgentService::PrepareTemplate(const ttrpc::CallContext& ctx, const pb::Empty&, pb::Empty*) {
  RETURN_IF_ERROR(WaitForSetup(ctx));
  {
    // Saved mid-way, every restored VM would hold its half-made container.
    constexpr auto kWarmUpWait = std::chrono::seconds(30);
    auto deadline = GiveUpBy(ctx, kWarmUpWait);
    MutexLock l(&mu_);
    while (warming_) {
      if (!warm_cv_.WaitUntil(&mu_, deadline) && warming_) {
        return UnavailableError("the runtime warm-up is still running");
      }
    }
  }
  ::sync();
  // Clean page cache, dentries and inodes: what every restored VM would
  // otherwise carry from the template's boot.
  RETURN_IF_ERROR(WriteExistingFile(cfg_.proc_sys + "/vm/drop_caches", "3"));
  // The console (the serial port) drained before the host saves the VM: a
  // line still in its buffer then (the warm-up's, just before) would come
  // out again from every VM restored from the template.
  if (::isatty(STDERR_FILENO)) ::tcdrain(STDERR_FILENO);
  return OkStatus();
}

namespace {

Status AddEntropy(const std::string& bytes) {
  UniqueFd fd(::open("/dev/urandom", O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoError(errno, "open /dev/urandom");
  std::string buf(sizeof(rand_pool_info) + bytes.size(), '\0');
  auto* info = reinterpret_cast<rand_pool_info*>(buf.data());
  info->entropy_count = static_cast<int>(bytes.size() * 8);
  info->buf_size = static_cast<int>(bytes.size());
  std::memcpy(info->buf, bytes.data(), bytes.size());
  if (::ioctl(fd.get(), RNDADDENTROPY, info) != 0) return ErrnoError(errno, "RNDADDENTROPY");
  if (::ioctl(fd.get(), RNDRESEEDCRNG) != 0) return ErrnoError(errno, "RNDRESEEDCRNG");
  return OkStatus();
}

Status SetRealtime(int64_t ns) {
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  if (::clock_settime(CLOCK_REALTIME, &ts) != 0) return ErrnoError(errno, "clock_settime");
  return OkStatus();
}

}  // namespace

Status AgentService::Restored(const ttrpc::CallContext& ctx, const pb::RestoredRequest& req,
                              pb::Empty*) {
  constexpr auto kDevicesWait = std::chrono::seconds(10);
  if (req.entropy().size() < 32) {
    return InvalidArgumentError("restored: {} bytes of entropy, need at least 32",
                                req.entropy().size());
  }
  RETURN_IF_ERROR((cfg_.add_entropy ? cfg_.add_entropy : AddEntropy)(req.entropy()));
  if (req.realtime_ns() > 0) {
    RETURN_IF_ERROR((cfg_.set_realtime ? cfg_.set_realtime : SetRealtime)(req.realtime_ns()));
  }
  auto deadline = GiveUpBy(ctx, kDevicesWait);
  std::vector<std::string> tags(req.virtiofs_tags().begin(), req.virtiofs_tags().end());
  for (;;) {
    // A plugged virtiofs device serves once its tag mounts (its driver
    // link shows in sysfs before the tag is registered).
    std::string missing;
    for (auto it = tags.begin(); it != tags.end();) {
      auto m = MountTagRoot(*it);
      if (m.ok()) {
        it = tags.erase(it);
      } else {
        missing += (missing.empty() ? "" : ", ") + ("share " + *it + ": " + m.status().message());
        ++it;
      }
    }
    auto nics = InterfacesByMac(cfg_.sys_class_net);
    for (const std::string& m : req.macs()) {
      std::string mac = MacKey(m);
      if (!nics.count(mac)) missing += (missing.empty() ? "" : ", ") + ("no NIC " + mac);
    }
    if (missing.empty()) {
      StartWarmUp();
      return OkStatus();
    }
    if (ttrpc::Clock::now() >= deadline) {
      return DeadlineExceededError("restored: the plugged devices did not appear: {}", missing);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

StatusOr<AgentService::ProcessPtr> AgentService::Find(const pb::ProcessId& id) {
  MutexLock l(&mu_);
  if (id.container_id().empty()) {
    auto it = vm_processes_.find(id.exec_id());
    if (it == vm_processes_.end())
      return NotFoundError("process {:?} in the VM not found", id.exec_id());
    return it->second;
  }
  auto c = containers_.find(id.container_id());
  if (c == containers_.end()) return NotFoundError("container {:?} not found", id.container_id());
  if (id.exec_id().empty()) return c->second->init;
  auto e = c->second->execs.find(id.exec_id());
  if (e == c->second->execs.end()) {
    return NotFoundError("exec {:?} in container {:?} not found", id.exec_id(), id.container_id());
  }
  return e->second;
}

StatusOr<std::shared_ptr<AgentService::Container>> AgentService::FindContainer(
    const std::string& id) {
  MutexLock l(&mu_);
  auto c = containers_.find(id);
  if (c == containers_.end()) return NotFoundError("container {:?} not found", id);
  return c->second;
}

Status AgentService::ExecProcess(const ttrpc::CallContext& ctx, const pb::ExecProcessRequest& req,
                                 pb::StartResponse* out) {
  if (!ValidId(req.id().exec_id()))
    return InvalidArgumentError("invalid exec id {:?}", req.id().exec_id());
  // The VM's own programs (sh, ...) are on the system disk.
  if (req.id().container_id().empty()) RETURN_IF_ERROR(WaitForSetup(ctx));
  ASSIGN_OR_RETURN(*out, req.id().container_id().empty() ? ExecInVm(req) : ExecInContainer(req));
  return OkStatus();
}

StatusOr<pb::StartResponse> AgentService::ExecInVm(const pb::ExecProcessRequest& req) {
  if (req.args().empty()) return InvalidArgumentError("exec in the VM: no args");
  {
    MutexLock l(&mu_);
    if (vm_processes_.count(req.id().exec_id())) {
      return AlreadyExistsError("process {:?} in the VM already exists", req.id().exec_id());
    }
  }
  auto p = std::make_shared<Process>();
  SpawnOptions so;
  so.argv = {req.args().begin(), req.args().end()};
  std::vector<std::string> env = {req.env().begin(), req.env().end()};
  bool has_path = false;
  for (const auto& e : env) has_path |= e.rfind("PATH=", 0) == 0;
  if (!has_path) env.push_back(kDefaultPath);
  so.env = env;
  so.cwd = req.cwd().empty() ? "/" : req.cwd();
  so.new_session = true;
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  UniqueFd child_in, child_out, child_err;
  SharedFd in, out, err;
  if (req.terminal()) {
    UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master || ::grantpt(master.get()) != 0 || ::unlockpt(master.get()) != 0) {
      return ErrnoError(errno, "pty");
    }
    char name[128];
    if (::ptsname_r(master.get(), name, sizeof name) != 0) return ErrnoError(errno, "ptsname");
    UniqueFd slave(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!slave) return ErrnoError(errno, fmt::format("open {}", name));
    so.fds = {{0, slave.get()}, {1, slave.get()}, {2, slave.get()}};
    so.controlling_tty = true;
    in = Share(UniqueFd(::fcntl(master.get(), F_DUPFD_CLOEXEC, 0)));
    out = Share(UniqueFd(::fcntl(master.get(), F_DUPFD_CLOEXEC, 0)));
    p->master = Share(std::move(master));
    child_in = std::move(slave);
  } else {
    ASSIGN_OR_RETURN(Pipe o, Pipe::Make());
    ASSIGN_OR_RETURN(Pipe e, Pipe::Make());
    if (req.stdin()) {
      ASSIGN_OR_RETURN(Pipe i, Pipe::Make());
      child_in = std::move(i.r);
      in = Share(std::move(i.w));
    }
    child_out = std::move(o.w);
    child_err = std::move(e.w);
    out = Share(std::move(o.r));
    err = Share(std::move(e.r));
    so.fds = {
        {0, child_in ? child_in.get() : devnull.get()}, {1, child_out.get()}, {2, child_err.get()}};
  }
  auto pid = Reaper::Get().Spawn(so);
  if (!pid.ok()) return pid.status();
  p->pid = *pid;
  {
    MutexLock l(&p->mu);
    p->in = std::move(in);
    p->out = std::move(out);
    p->err = std::move(err);
  }
  {
    MutexLock l(&mu_);
    vm_processes_[req.id().exec_id()] = p;
  }
  Reaper::Get().WhenExits(p->pid, [p](int status) { p->SetExit(status); });
  pb::StartResponse r;
  r.set_pid(static_cast<uint32_t>(p->pid));
  return r;
}

Status AgentService::WaitForSetup(const ttrpc::CallContext& ctx) {
  constexpr auto kSetupWait = std::chrono::seconds(30);
  if (!cfg_.setup) return OkStatus();
  auto deadline = GiveUpBy(ctx, kSetupWait);
  if (!cfg_.setup->done.Wait(deadline)) {
    return UnavailableError("the VM's system disk and kernel modules are still being set up");
  }
  if (!cfg_.setup->status.ok()) {
    return FailedPreconditionError("the VM's setup failed: {}", cfg_.setup->status.ToString());
  }
  return OkStatus();
}

Status AgentService::CreatePod(const ttrpc::CallContext& ctx, const pb::CreatePodRequest& req,
                               pb::CreatePodResponse* resp) {
  RETURN_IF_ERROR(WaitForSetup(ctx));
  {
    MutexLock l(&mu_);
    if (pod_holder_ != 0) return AlreadyExistsError("this VM already is a pod's");
    pod_holder_ = -1;
  }
  auto fail = [this](Status st) {
    MutexLock l(&mu_);
    pod_holder_ = 0;
    return st;
  };
  auto steps = NetworkSteps(req, InterfacesByMac(cfg_.sys_class_net));
  if (!steps.ok()) return fail(steps.status());
  if (Status st = ApplyNetworkSteps(*steps); !st.ok()) return fail(st.Wrap("pod network"));
  auto expect = Reaper::Get().Expect();
  auto pid = StartNamespaceHolder(req.hostname());
  if (!pid.ok()) return fail(pid.status());
  Reaper::Get().Watch(*pid, [this, p = *pid](int status) {
    spdlog::warn("pod namespace holder {} exited ({})", p, status);
    MutexLock l(&mu_);
    if (pod_holder_ == p) pod_holder_ = 0;
  });
  expect.Release();
  Status sysctls =
      ApplyPodSysctls({req.sysctls().begin(), req.sysctls().end()}, *pid, cfg_.proc_sys);
  if (!sysctls.ok()) {
    ::kill(*pid, SIGKILL);  // reaped by the Watch above
    return fail(sysctls);
  }
  MutexLock l(&mu_);
  pod_holder_ = *pid;
  resp->set_holder_pid(static_cast<uint32_t>(*pid));
  spdlog::info("pod: holder {}, hostname {:?}, {} interface(s)", *pid, req.hostname(),
               req.interfaces_size());
  return OkStatus();
}

Status AgentService::CreateContainer(const ttrpc::CallContext& ctx,
                                     const pb::CreateContainerRequest& req, pb::Empty*) {
  if (!ValidId(req.container_id()))
    return InvalidArgumentError("invalid container id {:?}", req.container_id());
  RETURN_IF_ERROR(WaitForSetup(ctx));
  nlohmann::json spec;
  try {
    spec = nlohmann::json::parse(req.spec_json());
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError("container {:?}: spec is not JSON: {}", req.container_id(),
                                e.what());
  }
  if (!spec.is_object())
    return InvalidArgumentError("container {:?}: spec is not an object", req.container_id());
  for (const char* member : {"linux", "root", "process"}) {
    if (spec.contains(member) && !spec[member].is_object())
      return InvalidArgumentError("container {:?}: spec's {} is not an object", req.container_id(),
                                  member);
  }
  if (req.pod_namespaces_size() > 0) {
    pid_t holder;
    {
      MutexLock l(&mu_);
      holder = pod_holder_;
    }
    if (holder <= 0) {
      return FailedPreconditionError("container {:?} joins pod namespaces, but this VM has no pod",
                                     req.container_id());
    }
    std::vector<std::string> types(req.pod_namespaces().begin(), req.pod_namespaces().end());
    RETURN_IF_ERROR(JoinPodNamespaces(&spec, types, holder));
  }
  {
    MutexLock l(&mu_);
    if (containers_.count(req.container_id())) {
      return AlreadyExistsError("container {:?} already exists", req.container_id());
    }
  }
  auto c = std::make_shared<Container>();
  c->id = req.container_id();
  c->kill_all_on_exit = !HasOwnPidNamespace(spec);
  c->bundle = cfg_.state_dir + "/c/" + c->id;
  RETURN_IF_ERROR(MkdirAll(c->bundle, 0700));
  // The bundle goes with a container that is not created.
  struct BundleGuard {
    std::string dir;
    bool keep = false;
    ~BundleGuard() {
      if (!keep) RemoveBundle(dir);
    }
  } bundle_guard{c->bundle};
  spec["root"]["path"] = req.rootfs_path();
  if (spec.contains("process")) {
    spec["process"]["terminal"] = req.terminal();
    // The guest kernel has no LSM policy loaded; the VM is the boundary.
    spec["process"].erase("apparmorProfile");
    spec["process"].erase("selinuxLabel");
  }
  if (!spec.contains("linux")) spec["linux"] = nlohmann::json::object();
  spec["linux"].erase("mountLabel");
  // The runtime runs with a fixed address layout (cheap under TCG), which
  // its children inherit; a personality resets the flags at the container's
  // exec, so its processes (and its execs') are randomized again. A
  // personality the spec names does that too, and is kept.
  if (!spec["linux"].contains("personality")) {
    spec["linux"]["personality"] = {{"domain", "LINUX"}};
  }
  RETURN_IF_ERROR(WriteFileAtomic(c->bundle + "/config.json", spec.dump(), 0600));
  // The initramfs root cannot be pivoted away from. crun's start, delete
  // and kill-all SIGKILL are taken in-process (start and delete only where
  // no hook of theirs has to run): each crun process costs tens of ms
  // under TCG.
  auto has_hooks = [&spec](const char* kind) {
    return spec.contains("hooks") && spec["hooks"].is_object() && spec["hooks"].contains(kind) &&
           !spec["hooks"][kind].empty();
  };
  c->rt = std::make_unique<oci::Runtime>(
      oci::Runtime::Config{.binary = cfg_.oci_runtime,
                           .root = cfg_.oci_root,
                           .no_pivot = true,
                           .fixed_address_layout = true,
                           .in_process_start = !has_hooks("poststart"),
                           .in_process_delete = !has_hooks("poststop"),
                           .in_process_kill_all = true},
      c->bundle);
  RuntimeIo io;
  ASSIGN_OR_RETURN(io, RuntimeIo::Make(req.terminal(), req.stdin()));
  c->init_expect = Reaper::Get().Expect();
  std::string pid_file = c->bundle + "/init.pid";
  Status st = c->rt->Create(c->id, pid_file, io.console_path(), io.child());
  if (st.ok()) st = io.Started();
  if (!st.ok()) {
    (void)c->rt->Delete(c->id, /*force=*/true);
    return st;
  }
  auto read_pid = ReadPidFile(pid_file, fmt::format("container {:?}", c->id));
  if (!read_pid.ok()) {
    (void)c->rt->Delete(c->id, /*force=*/true);
    return read_pid.status();
  }
  pid_t pid = *read_pid;
  c->init = std::make_shared<Process>();
  c->init->pid = pid;
  io.MoveTo(c->init.get());
  if (auto cg = stats::CgroupsOf(pid); cg.ok() && cg->has_v2)
    c->cgroup_dir = cfg_.cgroup_root + cg->v2;
  {
    MutexLock l(&mu_);
    containers_[c->id] = c;
  }
  bundle_guard.keep = true;
  WatchOom(c);
  return OkStatus();
}

void AgentService::WatchOom(const std::shared_ptr<Container>& c) {
  if (c->cgroup_dir.empty()) return;
  std::weak_ptr<Container> weak = c;
  Status st = stats::OomWatcher::Get().Add(c->id, c->cgroup_dir, /*unified=*/true, [this, weak] {
    auto c = weak.lock();
    if (!c) return;
    MutexLock l(&mu_);
    ++c->oom_total;
    ++c->oom_pending;
    oom_cv_.SignalAll();
  });
  if (!st.ok()) spdlog::info("container {}: no OOM events: {}", c->id, st.ToString());
}

Status AgentService::StartContainer(const ttrpc::CallContext&, const pb::StartContainerRequest& req,
                                    pb::StartResponse* out) {
  ASSIGN_OR_RETURN(auto c, FindContainer(req.container_id()));
  {
    MutexLock l(&mu_);
    if (c->started) return FailedPreconditionError("container {:?} already started", c->id);
    c->started = true;
  }
  ProcessPtr init = c->init;
  std::weak_ptr<Container> weak = c;
  auto exited = [this, init, weak](int status, bool may_block) {
    if (auto c = weak.lock(); c && c->kill_all_on_exit && may_block) {
      (void)c->rt->KillAll(c->id, SIGKILL, c->cgroup_dir);
    }
    init->SetExit(status);
    if (auto c = weak.lock()) {
      MutexLock l(&mu_);
      c->init_exited = true;
      oom_cv_.SignalAll();
    }
  };
  Reaper::Get().Watch(init->pid, [exited, id = c->id, kill_all = c->kill_all_on_exit](int status) {
    if (!kill_all) return exited(status, false);  // nothing to wait for: inline
    // The runtime call waits for a child of its own: not on the reaper's
    // thread.
    Status st = ThreadGroup::Get().Spawn("exit-" + id, [exited, status] { exited(status, true); });
    if (!st.ok()) {
      spdlog::error("{}; container {}: exit reported without killing the rest", st.ToString(), id);
      exited(status, false);
    }
  });
  c->init_expect.Release();
  RETURN_IF_ERROR(c->rt->Start(c->id));
  pb::StartResponse r;
  r.set_pid(static_cast<uint32_t>(init->pid));
  *out = std::move(r);
  return OkStatus();
}

StatusOr<pb::StartResponse> AgentService::ExecInContainer(const pb::ExecProcessRequest& req) {
  ASSIGN_OR_RETURN(auto c, FindContainer(req.id().container_id()));
  {
    MutexLock l(&mu_);
    // An exited exec's id may be taken again (its output may still be
    // held open by a process it left behind).
    if (auto old = c->execs.find(req.id().exec_id()); old != c->execs.end()) {
      MutexLock pl(&old->second->mu);
      if (!old->second->status) {
        return AlreadyExistsError("exec {:?} in container {:?} already exists", req.id().exec_id(),
                                  c->id);
      }
    }
  }
  std::string spec_path = c->bundle + "/.exec-" + req.id().exec_id() + ".json";
  std::string pid_path = c->bundle + "/.exec-" + req.id().exec_id() + ".pid";
  RETURN_IF_ERROR(WriteFileAtomic(spec_path, req.process_json(), 0600));
  RuntimeIo io;
  ASSIGN_OR_RETURN(io, RuntimeIo::Make(req.terminal(), req.stdin()));
  auto expect = Reaper::Get().Expect();
  Status st = c->rt->Exec(c->id, spec_path, pid_path, io.console_path(), io.child());
  if (st.ok()) st = io.Started();
  ::unlink(spec_path.c_str());
  auto read_pid = ReadPidFile(pid_path, fmt::format("exec {:?}", req.id().exec_id()));
  ::unlink(pid_path.c_str());
  if (!st.ok() && read_pid.ok()) {
    // The process runs but its stdio could not be had (no terminal came):
    // nobody could reach it, so it goes, and is reaped.
    ::kill(*read_pid, SIGKILL);
    Reaper::Get().Watch(*read_pid, [](int) {});
  }
  RETURN_IF_ERROR(st);
  ASSIGN_OR_RETURN(pid_t pid, std::move(read_pid));
  auto p = std::make_shared<Process>();
  p->pid = pid;
  io.MoveTo(p.get());
  {
    MutexLock l(&mu_);
    c->execs[req.id().exec_id()] = p;
  }
  Reaper::Get().Watch(pid, [p](int status) { p->SetExit(status); });
  pb::StartResponse r;
  r.set_pid(static_cast<uint32_t>(pid));
  return r;
}

Status AgentService::SignalProcess(const ttrpc::CallContext&, const pb::SignalProcessRequest& req,
                                   pb::Empty*) {
  if (req.all()) {
    ASSIGN_OR_RETURN(auto c, FindContainer(req.id().container_id()));
    return c->rt->KillAll(c->id, static_cast<int>(req.signal()), c->cgroup_dir);
  }
  ASSIGN_OR_RETURN(auto p, Find(req.id()));
  {
    MutexLock l(&p->mu);
    if (p->status) return NotFoundError("process {} already exited", p->pid);
  }
  if (::kill(p->pid, static_cast<int>(req.signal())) != 0) {
    if (errno == ESRCH) return NotFoundError("process {} already exited", p->pid);
    return ErrnoError(errno, fmt::format("signal {} to {}", req.signal(), p->pid));
  }
  return OkStatus();
}

Status AgentService::WaitProcess(const ttrpc::CallContext& ctx, const pb::WaitProcessRequest& req,
                                 pb::WaitProcessResponse* out) {
  const std::optional<ttrpc::Clock::time_point>& deadline = ctx.deadline;
  ASSIGN_OR_RETURN(auto p, Find(req.id()));
  pb::WaitProcessResponse r;
  {
    MutexLock l(&p->mu);
    while (!p->status) {
      if (deadline) {
        if (!p->cv.WaitUntil(&p->mu, *deadline) && !p->status) {
          return DeadlineExceededError("process {} still running", p->pid);
        }
      } else {
        p->cv.Wait(&p->mu);
      }
    }
    r.set_exit_status(*p->status);
    p->waited = true;
  }
  MaybeForget(req.id());
  *out = std::move(r);
  return OkStatus();
}

void AgentService::MaybeForget(const pb::ProcessId& id) {
  if (!id.container_id().empty() && id.exec_id().empty()) return;  // init: with its container
  MutexLock l(&mu_);
  std::map<std::string, ProcessPtr>* table = &vm_processes_;
  if (!id.container_id().empty()) {
    auto c = containers_.find(id.container_id());
    if (c == containers_.end()) return;
    table = &c->second->execs;
  }
  auto it = table->find(id.exec_id());
  if (it == table->end()) return;
  ProcessPtr p = it->second;
  bool done;
  {
    MutexLock pl(&p->mu);
    done = p->DoneLocked();
  }
  if (done) table->erase(it);
}

Status AgentService::RemoveContainer(const ttrpc::CallContext&,
                                     const pb::RemoveContainerRequest& req, pb::Empty*) {
  ASSIGN_OR_RETURN(auto c, FindContainer(req.container_id()));
  bool exited;
  {
    MutexLock l(&mu_);
    exited = c->init_exited;
  }
  RETURN_IF_ERROR(exited ? c->rt->DeleteExited(c->id, c->cgroup_dir)
                         : c->rt->Delete(c->id, /*force=*/true));
  RemoveBundle(c->bundle);
  stats::OomWatcher::Get().Remove(c->id);
  MutexLock l(&mu_);
  c->removed = true;
  oom_cv_.SignalAll();
  containers_.erase(c->id);
  return OkStatus();
}

Status AgentService::ContainerStats(const ttrpc::CallContext&, const pb::ContainerRequest& req,
                                    pb::ContainerStatsResponse* out) {
  ASSIGN_OR_RETURN(auto c, FindContainer(req.container_id()));
  if (c->cgroup_dir.empty()) return NotFoundError("container {:?} has no cgroup", c->id);
  pb::ContainerStatsResponse r;
  ASSIGN_OR_RETURN(*r.mutable_metrics(), stats::ReadV2(c->cgroup_dir));
  *out = std::move(r);
  return OkStatus();
}

Status AgentService::PauseContainer(const ttrpc::CallContext&, const pb::ContainerRequest& req,
                                    pb::Empty*) {
  ASSIGN_OR_RETURN(auto c, FindContainer(req.container_id()));
  return c->rt->Pause(c->id);
}

Status AgentService::ResumeContainer(const ttrpc::CallContext&, const pb::ContainerRequest& req,
                                     pb::Empty*) {
  ASSIGN_OR_RETURN(auto c, FindContainer(req.container_id()));
  return c->rt->Resume(c->id);
}

Status AgentService::UpdateContainer(const ttrpc::CallContext&,
                                     const pb::UpdateContainerRequest& req, pb::Empty*) {
  ASSIGN_OR_RETURN(auto c, FindContainer(req.container_id()));
  if (!nlohmann::json::accept(req.resources_json())) {
    return InvalidArgumentError("container {:?}: resources are not JSON", c->id);
  }
  std::string path = c->bundle + "/.resources.json";
  RETURN_IF_ERROR(WriteFileAtomic(path, req.resources_json(), 0600));
  Status st = c->rt->Update(c->id, path);
  ::unlink(path.c_str());
  return st;
}

Status AgentService::WaitOom(const ttrpc::CallContext&, const pb::WaitOomRequest& req,
                             pb::WaitOomResponse* out) {
  ASSIGN_OR_RETURN(auto c, FindContainer(req.container_id()));
  stats::OomWatcher::Get().Drain(c->id);  // a kill that just happened counts
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(req.timeout_ms());
  MutexLock l(&mu_);
  while (c->oom_pending == 0 && !c->init_exited && !c->removed) {
    if (!oom_cv_.WaitUntil(&mu_, until)) break;
  }
  pb::WaitOomResponse r;
  r.set_taken(std::exchange(c->oom_pending, 0));
  r.set_total(c->oom_total);
  r.set_ended(c->init_exited || c->removed);
  *out = std::move(r);
  return OkStatus();
}

Status AgentService::WriteStdin(const ttrpc::CallContext&, const pb::WriteStdinRequest& req,
                                pb::WriteStdinResponse* out) {
  ASSIGN_OR_RETURN(auto p, Find(req.id()));
  SharedFd in;
  {
    MutexLock l(&p->mu);
    in = p->in;
  }
  if (!in) return FailedPreconditionError("stdin of process {} is closed", p->pid);
  Status st = WriteAll(in->get(), req.data());
  if (!st.ok()) return st;
  pb::WriteStdinResponse r;
  r.set_written(static_cast<uint32_t>(req.data().size()));
  *out = std::move(r);
  return OkStatus();
}

Status AgentService::ReadStream(const ttrpc::CallContext& ctx, const pb::ReadStreamRequest& req,
                                pb::ReadStreamResponse* out) {
  const std::optional<ttrpc::Clock::time_point>& deadline = ctx.deadline;
  ASSIGN_OR_RETURN(auto p, Find(req.id()));
  bool is_err = req.stream() == pb::ReadStreamRequest::STDERR;
  SharedFd fd;
  {
    MutexLock l(&p->mu);
    fd = is_err ? p->err : p->out;
  }
  pb::ReadStreamResponse r;
  if (!fd) {
    r.set_eof(true);
    *out = std::move(r);
    return OkStatus();
  }
  for (;;) {
    int timeout = -1;
    if (deadline) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - ttrpc::Clock::now());
      if (left.count() <= 0) return DeadlineExceededError("no output yet from process {}", p->pid);
      timeout = static_cast<int>(std::min<int64_t>(left.count(), 60000));
    }
    pollfd pfd{fd->get(), POLLIN, 0};
    int n = ::poll(&pfd, 1, timeout);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "poll");
    if (n == 0) continue;  // re-check the deadline
    break;
  }
  uint32_t want = req.max_bytes() == 0 ? kDefaultChunk : std::min(req.max_bytes(), kMaxChunk);
  std::string buf(want, '\0');
  ssize_t n;
  do {
    n = ::read(fd->get(), buf.data(), buf.size());
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    buf.resize(static_cast<size_t>(n));
    r.set_data(std::move(buf));
    *out = std::move(r);
    return OkStatus();
  }
  // 0, or EIO from a pty master whose last slave closed: the end.
  {
    MutexLock l(&p->mu);
    (is_err ? p->err : p->out).reset();
  }
  r.set_eof(true);
  MaybeForget(req.id());
  *out = std::move(r);
  return OkStatus();
}

Status AgentService::CloseStdin(const ttrpc::CallContext&, const pb::ProcessId& id, pb::Empty*) {
  ASSIGN_OR_RETURN(auto p, Find(id));
  MutexLock l(&p->mu);
  if (p->master) {
    // A terminal: send EOF (^D) rather than closing the pty.
    (void)!::write(p->master->get(), "\x04", 1);
    return OkStatus();
  }
  p->in.reset();
  return OkStatus();
}

Status AgentService::ResizeTty(const ttrpc::CallContext&, const pb::ResizeTtyRequest& req,
                               pb::Empty*) {
  ASSIGN_OR_RETURN(auto p, Find(req.id()));
  if (!p->master) return FailedPreconditionError("process {} has no terminal", p->pid);
  winsize ws{};
  ws.ws_row = static_cast<unsigned short>(req.height());
  ws.ws_col = static_cast<unsigned short>(req.width());
  if (::ioctl(p->master->get(), TIOCSWINSZ, &ws) != 0) return ErrnoError(errno, "TIOCSWINSZ");
  return OkStatus();
}

StatusOr<std::string> AgentService::MountTagRoot(const std::string& tag) {
  std::string root = cfg_.state_dir + "/shares/" + tag;
  RETURN_IF_ERROR(MkdirAll(root, 0755));
  struct stat st_root, st_parent;
  bool mounted = ::stat(root.c_str(), &st_root) == 0 &&
                 ::stat((root + "/..").c_str(), &st_parent) == 0 &&
                 st_root.st_dev != st_parent.st_dev;
  if (mounted) return root;
  if (cfg_.mount_virtiofs) {
    RETURN_IF_ERROR(cfg_.mount_virtiofs(tag, root));
  } else if (::mount(tag.c_str(), root.c_str(), "virtiofs", 0, nullptr) != 0) {
    return ErrnoError(errno, fmt::format("mount virtiofs {} at {}", tag, root));
  }
  return root;
}

Status AgentService::MountShare(const ttrpc::CallContext& ctx, const pb::MountShareRequest& req,
                                pb::Empty*) {
  RETURN_IF_ERROR(WaitForSetup(ctx));
  if (req.tag().empty() || req.tag().find('/') != std::string::npos) {
    return InvalidArgumentError("invalid share tag {:?}", req.tag());
  }
  if (!ValidSubPath(req.sub_path()))
    return InvalidArgumentError("invalid share path {:?}", req.sub_path());
  if (req.guest_path().empty() || req.guest_path().front() != '/') {
    return InvalidArgumentError("guest path {:?} is not absolute", req.guest_path());
  }
  ASSIGN_OR_RETURN(std::string root, MountTagRoot(req.tag()));
  std::string src = req.sub_path().empty() ? root : root + "/" + req.sub_path();
  struct stat ss;
  if (::stat(src.c_str(), &ss) != 0) return ErrnoError(errno, fmt::format("share source {}", src));
  if (S_ISDIR(ss.st_mode)) {
    RETURN_IF_ERROR(MkdirAll(req.guest_path(), 0755));
  } else {
    size_t slash = req.guest_path().rfind('/');
    RETURN_IF_ERROR(MkdirAll(req.guest_path().substr(0, slash), 0755));
    UniqueFd f(::open(req.guest_path().c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  }
  if (::mount(src.c_str(), req.guest_path().c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return ErrnoError(errno, fmt::format("bind {} at {}", src, req.guest_path()));
  }
  if (req.read_only() && ::mount(nullptr, req.guest_path().c_str(), nullptr,
                                 MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    int err = errno;
    ::umount2(req.guest_path().c_str(), MNT_DETACH);
    return ErrnoError(err, fmt::format("read-only remount of {}", req.guest_path()));
  }
  return OkStatus();
}

Status AgentService::UnmountShare(const ttrpc::CallContext&, const pb::UnmountShareRequest& req,
                                  pb::Empty*) {
  const std::string& path = req.guest_path();
  if (path.size() < 2 || path.front() != '/' || !ValidSubPath(path.substr(1))) {
    return InvalidArgumentError("guest path {:?} is not absolute and plain", path);
  }
  if (::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
    if (errno == EINVAL || errno == ENOENT) return NotFoundError("nothing is mounted at {}", path);
    return ErrnoError(errno, fmt::format("unmount {}", path));
  }
  // The mount point MountShare made (a directory, or a file for a file),
  // then its parent if that is left empty (a container's mounts/<id>).
  if (::rmdir(path.c_str()) != 0 && errno == ENOTDIR) ::unlink(path.c_str());
  size_t slash = path.rfind('/');
  if (slash > 0) ::rmdir(path.substr(0, slash).c_str());
  return OkStatus();
}

Status AgentService::DumpStacks(const ttrpc::CallContext&, const pb::Empty&,
                                pb::DumpStacksResponse* resp) {
  // Every guest process and each of its threads (the agent's own included):
  // name, state and kernel stack.
  std::string out;
  std::vector<int> pids = NumericEntries("/proc");
  if (pids.empty()) return InternalError("no processes listed in /proc (is it mounted?)");
  for (int pid : pids) {
    std::string base = "/proc/" + std::to_string(pid);
    auto stat = ReadFile(base + "/stat");
    if (!stat.ok()) continue;
    // "pid (comm) S ..."
    size_t open = stat->find('('), close = stat->rfind(')');
    if (open == std::string::npos || close == std::string::npos || close + 2 >= stat->size())
      continue;
    out += fmt::format("pid {} ({}) state {}\n", pid, stat->substr(open + 1, close - open - 1),
                       stat->substr(close + 2, 1));
    // Each thread: its name, state and kernel stack.
    std::vector<int> tids = NumericEntries(base + "/task");
    for (int tid : tids) {
      std::string tb = fmt::format("{}/task/{}", base, tid);
      auto comm = ReadFile(tb + "/comm");
      auto tstat = ReadFile(tb + "/stat");
      size_t tclose = tstat.ok() ? tstat->rfind(')') : std::string::npos;
      std::string state = tclose != std::string::npos && tclose + 2 < tstat->size()
                              ? tstat->substr(tclose + 2, 1)
                              : "?";
      std::string name = comm.ok() ? *comm : "";
      while (!name.empty() && name.back() == '\n') name.pop_back();
      out += fmt::format("  thread {} ({}) state {}\n", tid, name, state);
      auto stack = ReadFile(tb + "/stack");
      if (stack.ok()) {
        std::stringstream ss(*stack);
        std::string line;
        while (std::getline(ss, line)) out += "      " + line + "\n";
      }
    }
  }
  pb::DumpStacksResponse r;
  r.set_stacks(std::move(out));
  *resp = std::move(r);
  return OkStatus();
}

Status AgentService::Stats(const ttrpc::CallContext&, const pb::Empty&, pb::StatsResponse* out) {
  pb::StatsResponse r;
  ASSIGN_OR_RETURN(std::string mem, ReadFile("/proc/meminfo"));
  std::stringstream ms(mem);
  std::string key;
  uint64_t value;
  std::string unit;
  while (ms >> key >> value) {
    std::getline(ms, unit);
    if (key == "MemTotal:") r.set_mem_total_kb(value);
    if (key == "MemAvailable:") r.set_mem_available_kb(value);
    if (key == "MemFree:") r.set_mem_free_kb(value);
  }
  ASSIGN_OR_RETURN(std::string stat, ReadFile("/proc/stat"));
  std::stringstream ss(stat);
  std::string cpu;
  uint64_t user = 0, nice = 0, sys = 0, idle = 0;
  if (ss >> cpu >> user >> nice >> sys >> idle && cpu == "cpu") {
    r.set_cpu_busy_ticks(user + nice + sys);
    r.set_cpu_idle_ticks(idle);
  }
  r.set_processes(static_cast<uint32_t>(NumericEntries("/proc").size()));
  *out = std::move(r);
  return OkStatus();
}

}  // namespace runhcs::guest
