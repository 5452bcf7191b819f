#include "uvm/qemu_vm.h"

#include <dirent.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/event_loop.h"
#include "base/fd.h"
#include "base/io.h"
#include "base/log.h"
#include "base/reaper.h"
#include "base/sha256.h"
#include "proto/agent_channel.h"
#include "uvm/live_agents.h"
#include "uvm/qmp.h"

namespace runhcs::uvm {

namespace {

using agent::kPortName;
using agent::kSystemDiskSerial;
constexpr char kPortId[] = "agent-port";  // its device id: QMP names it in events
constexpr char kShareTag[] = "runhcs";
// Every VM's kernel command line starts so. cryptomgr.notests: the crypto
// self-tests took 0.8 s of a 3.9 s boot under TCG (a flag made for
// short-lived VMs; fips=1 ignores it). initcall_blacklist skips boot steps
// that only cost time and memory here: tracer_init_tracefs (tracefs's files:
// a directory per trace event, ~10000 inodes and dentries, ~9 MiB of guest
// slab held for the VM's life, made by a worker that competed with the boot
// for the vCPU; a trace event is then not found by name: perf and libbpf
// read its id from those files), init_kprobe_trace (the tracefs files of
// kprobe events; it waited for tracefs to list every trace event, ~130 ms
// under TCG) and crypto_kdf108_init (a self-test of a key derivation
// function, ~50 ms).
// transparent_hugepage=madvise: a huge page is 2 MiB of host memory however
// little of it a process touches (the agent alone held 2-4 MiB so); a
// workload that wants them still asks with madvise.
constexpr char kBaseCmdline[] =
    "console=ttyS0 quiet panic=-1 reboot=t cryptomgr.notests "
    "initcall_blacklist=tracer_init_tracefs,init_kprobe_trace,crypto_kdf108_init "
    "transparent_hugepage=madvise";
// The files of boot_dir a VM is made of (guest/image/build-image.sh).
constexpr const char* kBootFiles[] = {"/vmlinux", "/initrd.img", "/system.img"};
constexpr auto kShutdownWait = std::chrono::seconds(5);
constexpr auto kQuitWait = std::chrono::seconds(3);

// The TCG translation cache QEMU gets, in MiB; 0 or less = its default
// (always under KVM, which has none).
int TcgCacheMb(const QemuConfig& cfg, QemuConfig::Accel a) {
  return a == QemuConfig::Accel::kKvm ? 0 : cfg.tcg_cache_mb;
}

std::string AccelName(QemuConfig::Accel a) {
  switch (a) {
    case QemuConfig::Accel::kKvm:
      return "kvm";
    case QemuConfig::Accel::kTcg:
      return "tcg";
    default:
      return "auto";
  }
}

bool Exists(const std::string& p) { return ::access(p.c_str(), F_OK) == 0; }

// A restored VM's copy of its template's memory, in its state directory.
constexpr char kMemoryFile[] = "/memory";
// What a VM's state directory may hold besides share mount points.
constexpr const char* kStateFiles[] = {"/agent.sock", "/qmp.sock", "/fs.sock", "/fs.sock.pid",
                                       kMemoryFile};

// `program` as exec would find it.
std::string OnPath(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  const char* path = ::getenv("PATH");
  std::string_view rest = path ? path : "/usr/bin:/bin";
  while (!rest.empty()) {
    size_t colon = rest.find(':');
    std::string cand = std::string(rest.substr(0, colon)) + "/" + program;
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  return program;
}

// A file by identity, as one line: "path inode size mtime" (zeros for a
// file that is missing).
std::string FileIdentity(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return fmt::format("{} {} {} {}.{}", path, st.st_ino, st.st_size, st.st_mtim.tv_sec,
                     st.st_mtim.tv_nsec);
}

// The files a template depends on, by identity: QEMU and the boot files,
// a FileIdentity line each. A template whose recorded lines no longer match
// them (an upgrade replaced one) can never be restored again.
std::string TemplateInputs(const QemuConfig& cfg) {
  std::string out = FileIdentity(OnPath(cfg.qemu)) + "\n";
  for (const char* f : kBootFiles) out += FileIdentity(cfg.boot_dir + f) + "\n";
  return out;
}

// The template directory's name for `cfg`'s shape: everything a restore
// must match (QEMU and the boot files by identity, size, accelerator).
std::string TemplateKey(const QemuConfig& cfg) {
  return Sha256Hex(fmt::format("v2|{}|{}|{}|{}|{}|{}|{}|{}", cfg.cpus, cfg.memory_mb,
                               cfg.tcg_cache_mb, AccelName(cfg.accel), kBaseCmdline,
                               cfg.extra_cmdline, cfg.tsc_khz, TemplateInputs(cfg)))
      .substr(0, 16);
}

// Copies the data of `src` (a sparse file) into a new `dst`; holes stay holes.
Status CopySparse(const std::string& src, const std::string& dst) {
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return ErrnoError(errno, "open " + src);
  UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out) return ErrnoError(errno, "create " + dst);
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return ErrnoError(errno, "stat " + src);
  if (::ftruncate(out.get(), st.st_size) != 0) return ErrnoError(errno, "truncate " + dst);
  for (off_t pos = 0; pos < st.st_size;) {
    off_t data = ::lseek(in.get(), pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;
    if (data < 0) return ErrnoError(errno, "seek " + src);
    off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
    if (hole < 0) hole = st.st_size;
    loff_t o_in = data, o_out = data;
    while (o_in < hole) {
      ssize_t n = ::copy_file_range(in.get(), &o_in, out.get(), &o_out,
                                    static_cast<size_t>(hole - o_in), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError(errno, "copy " + src);
      if (n == 0) break;
    }
    pos = hole;
  }
  return OkStatus();
}

// Whether `p` can go inside single quotes of a shell word (QEMU's exec:
// migration URIs run under /bin/sh).
bool ShellQuotable(const std::string& p) {
  for (char c : p) {
    if (c == '\'' || static_cast<unsigned char>(c) < 0x20) return false;
  }
  return true;
}

// Migrations leave out RAM in shared named files (a template's memory, or
// a restored VM's copy of it): the stream holds only the devices' state.
Status IgnoreSharedMemory(QmpClient& q, std::chrono::steady_clock::time_point deadline) {
  return q
      .Execute("migrate-set-capabilities",
               {{"capabilities", {{{"capability", "x-ignore-shared"}, {"state", true}}}}}, deadline)
      .status();
}

// Polls query-migrate until the migration (either way) completed.
Status AwaitMigration(QmpClient& q, const char* what,
                      std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    ASSIGN_OR_RETURN(nlohmann::json m, q.Execute("query-migrate", nullptr, deadline));
    std::string status = m.value("status", "");
    if (status == "completed") return OkStatus();
    if (status == "failed" || status == "cancelled")
      return InternalError("{} failed: {}", what, m.value("error-desc", status));
    if (std::chrono::steady_clock::now() > deadline)
      return DeadlineExceededError("{} did not finish", what);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

uint64_t GuestRamBytes(pid_t qemu) {
  std::string fds = fmt::format("/proc/{}/fd", qemu);
  DIR* d = ::opendir(fds.c_str());
  if (!d) return 0;
  uint64_t bytes = 0;
  while (dirent* e = ::readdir(d)) {
    std::string fd = fds + "/" + e->d_name;
    char target[PATH_MAX];
    ssize_t n = ::readlink(fd.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    std::string_view t(target, static_cast<size_t>(n));
    if (t.find("memfd:memory-backend") == std::string_view::npos &&
        !(t.ends_with("/memory (deleted)") || t.ends_with("/memory")))
      continue;
    struct stat st;
    if (::stat(fd.c_str(), &st) == 0) bytes = static_cast<uint64_t>(st.st_blocks) * 512;
    break;
  }
  ::closedir(d);
  return bytes;
}

int64_t HostTscKhz() {
  if (auto s = ReadFile("/sys/devices/system/cpu/cpu0/tsc_freq_khz"); s.ok()) {
    int64_t v = std::atoll(s->c_str());
    if (v > 0) return v;
  }
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos)
        return static_cast<int64_t>(std::atof(line.c_str() + colon + 1) * 1000);
    }
  }
  return 0;
}

namespace {

// A path as the value of a QEMU -object/-drive/-chardev option: a comma
// there would end the value, a doubled one is a comma.
std::string OptPath(std::string_view path) {
  std::string out;
  for (char c : path) {
    out += c;
    if (c == ',') out += c;
  }
  return out;
}

}  // namespace

std::vector<std::string> VirtiofsdArgs(const QemuConfig& cfg) {
  // chroot, not a mount namespace: share bind mounts made later under the
  // source must be visible to it without propagation games.
  // cache=always with a 1 s timeout: the guest keeps a file's pages across
  // opens while its size and mtime stay the same (rechecked once its
  // attributes, cached for a second, expire; a change drops them), so a
  // binary a container runs again comes from the guest's page cache. With
  // cache=auto every open dropped them: each exec from a rootfs re-read
  // the file through the device and, under TCG, translated its code anew
  // (81 against 13 ms for a busybox `true`; 67 -> 12 ms of a container
  // lifecycle's wait). Changes the host makes reach the guest within that
  // second either way; writes go through at once (no writeback cache).
  return {cfg.virtiofsd, "--socket-path=" + cfg.state_dir + "/fs.sock",
          "-o",          "source=" + cfg.state_dir + "/shares",
          "-o",          "cache=always,timeout=1,sandbox=chroot"};
}

std::vector<std::string> QemuArgs(const QemuConfig& cfg, QemuConfig::Accel accel, int64_t tsc_khz) {
  using Mode = QemuConfig::Mode;
  const bool templated = cfg.mode != Mode::kCold;
  const bool micro = !templated && cfg.machine == QemuConfig::Machine::kMicrovm;
  const std::string acc = accel == QemuConfig::Accel::kKvm ? "kvm" : "tcg";
  const std::string s = OptPath(cfg.state_dir);
  // microvm gets a PCIe bus for one device, the agent's virtio-serial (see
  // there); everything else stays on virtio-mmio.
  std::string machine = micro ? "microvm,isa-serial=on,rtc=on,pcie=on" : "q35";
  machine += ",memory-backend=mem";
  std::string accel_opts = acc;
  // One TCG thread for all vCPUs, not one each (QEMU's default): with a
  // thread per vCPU, a vCPU can go on running its old translation of
  // kernel text that another vCPU just patched. The guest patches its text
  // whenever a static key flips (the first memory cgroup a container gets,
  // schedstats, the sched clock at boot): a vCPU caught at the patch site
  // then loops on the int3 of the old code forever, both vCPUs spin, and
  // the agent never answers again. Measured with static keys flipped under
  // load: 3 VMs of 11 hung with a thread per vCPU, none of 24 with one
  // thread. A second vCPU then adds no compute (see VmCpus).
  if (accel == QemuConfig::Accel::kTcg) accel_opts += ",thread=single";
  if (int tb = TcgCacheMb(cfg, accel); tb > 0) accel_opts += ",tb-size=" + std::to_string(tb);
  std::string cmdline = kBaseCmdline;
  // microvm has neither HPET nor ACPI PM timer: without the TSC frequency
  // the kernel may fail to calibrate under TCG and stop.
  if (tsc_khz > 0) cmdline += " tsc_early_khz=" + std::to_string(tsc_khz);
  // Under TCG the guest's TSC is the host's (QEMU reads it for every
  // vCPU), so it is synchronized; but the kernel's cross-CPU check, timed
  // through emulated spinlocks, sees warps, marks the TSC unstable and falls
  // back to jiffies: every clock read in the VM, containers' included, then
  // steps by 4 ms and every sleep rounds up to a tick. `tsc=reliable` skips
  // that check. (KVM guests have kvm-clock.)
  if (tsc_khz > 0 && accel == QemuConfig::Accel::kTcg) cmdline += " tsc=reliable";
  if (!cfg.extra_cmdline.empty()) cmdline += " " + cfg.extra_cmdline;
  // vhost-user (virtiofsd) needs guest memory it can map: a memfd, or the
  // (template's) file, shared.
  std::string memory =
      templated ? fmt::format("memory-backend-file,id=mem,size={}M,mem-path={},share=on",
                              cfg.memory_mb, OptPath(cfg.memory_file))
                : fmt::format("memory-backend-memfd,id=mem,size={}M,share=on", cfg.memory_mb);
  std::vector<std::string> args = {
      cfg.qemu, "-name", "runhcs-uvm", "-M", machine, "-accel", accel_opts, "-cpu",
      accel == QemuConfig::Accel::kKvm ? "host" : "max", "-smp", std::to_string(VmCpus(cfg, accel)),
      "-m", std::to_string(cfg.memory_mb), "-object", memory, "-nodefaults", "-no-user-config",
      "-display", "none", "-no-reboot", "-kernel", cfg.boot_dir + "/vmlinux", "-initrd",
      cfg.boot_dir + "/initrd.img", "-append", cmdline, "-serial", "stdio", "-chardev",
      fmt::format("socket,id=agent,path={}/agent.sock,server=on,wait=off", s), "-device",
      // Two ports (0 is the console's, reserved; ours is 1), not 31: the
      // guest's driver sets up two virtqueues per port, and 64 of them cost
      // ~8 ms of a TCG boot before the agent can serve. On PCI, on microvm
      // too: QEMU's virtio-mmio offers every queue at 1024 entries (PCI at
      // the device's 128), and the guest's console driver keeps a page in
      // every entry of its receive queues: 8 MiB of guest RAM, and ~25 ms of
      // filling them between the driver's load and the port being usable
      // (the kernel's PCI setup costs ~10 ms of that back).
      "virtio-serial-pci,max_ports=2", "-device",
      fmt::format("virtserialport,chardev=agent,id={},name={}", kPortId, kPortName),
      // Free page reporting: the guest hands pages it freed back (every
      // free page: the agent sets the reporting order, guest/guest_init.h),
      // and QEMU drops them from its memory.
      "-device",
      fmt::format("{},free-page-reporting=on",
                  micro ? "virtio-balloon-device" : "virtio-balloon-pci"),
      // Read-only, so every VM (and the host's page cache) shares one file.
      "-drive",
      fmt::format("file={}/system.img,if=none,id=system,format=raw,readonly=on",
                  OptPath(cfg.boot_dir)),
      "-device",
      fmt::format("{},drive=system,serial={}", micro ? "virtio-blk-device" : "virtio-blk-pci",
                  kSystemDiskSerial),
      "-qmp", fmt::format("unix:{}/qmp.sock,server=on,wait=off", s)};
  if (cfg.mode != Mode::kTemplate) {
    args.insert(args.end(), {"-chardev", fmt::format("socket,id=fs,path={}/fs.sock", s)});
  }
  if (cfg.mode == Mode::kCold) {
    args.insert(
        args.end(),
        {"-device", fmt::format("{},chardev=fs,tag={}",
                                micro ? "vhost-user-fs-device" : "vhost-user-fs-pci", kShareTag)});
  }
  for (size_t i = 0; cfg.mode != Mode::kTemplate && i < cfg.nics.size(); ++i) {
    // The tap fd is the child's fd 3 + i (Boot maps it).
    args.insert(args.end(), {"-netdev", fmt::format("tap,id=net{},fd={},vhost=off", i, 3 + i)});
    if (cfg.mode == Mode::kCold) {
      args.insert(args.end(),
                  {"-device", fmt::format("{},netdev=net{},mac={}",
                                          micro ? "virtio-net-device" : "virtio-net-pci", i,
                                          cfg.nics[i].mac)});
    }
  }
  for (int i = 0; templated && i < kTemplateRootPorts; ++i) {
    args.insert(args.end(), {"-device", fmt::format("pcie-root-port,id=rp{},chassis={},port={:#x},"
                                                    "bus=pcie.0,addr={:#x}",
                                                    i, i + 1, 0x10 + i, 0x10 + i)});
  }
  if (cfg.mode == Mode::kRestore) args.insert(args.end(), {"-incoming", "defer"});
  // virtio-mmio defaults to the legacy interface, which vhost-user (virtiofsd)
  // refuses.
  if (micro) args.insert(args.begin() + 1, {"-global", "virtio-mmio.force-legacy=false"});
  return args;
}

QemuUtilityVm::QemuUtilityVm(std::string id, QemuConfig cfg)
    : id_(std::move(id)), cfg_(std::move(cfg)) {}

QemuUtilityVm::~QemuUtilityVm() {
  (void)Close();
  MutexLock l(&exit_sink_->mu);
  exit_sink_->vm = nullptr;
}

std::shared_ptr<AgentClient> QemuUtilityVm::agent() {
  MutexLock l(&mu_);
  return agent_;
}

pid_t QemuUtilityVm::qemu_pid() {
  MutexLock l(&mu_);
  return qemu_pid_;
}

QemuConfig::Accel QemuUtilityVm::accel() {
  MutexLock l(&mu_);
  return accel_;
}

int QemuUtilityVm::boot_attempts() {
  MutexLock l(&mu_);
  return boot_;
}

std::optional<std::string> RecentKvmFailure(const std::string& file, std::chrono::seconds ttl) {
  struct stat st;
  if (::stat(file.c_str(), &st) != 0) return std::nullopt;
  const auto written = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
  const auto age = std::chrono::system_clock::now() - written;
  // A clock set back makes the age negative: still a recent verdict.
  if (age >= ttl) return std::nullopt;
  auto reason = ReadFile(file);
  if (!reason.ok()) return std::nullopt;
  return *reason;
}

Status RecordKvmFailure(const std::string& file, const std::string& reason) {
  const auto slash = file.rfind('/');
  if (slash != std::string::npos && slash > 0)
    RETURN_IF_ERROR(MkdirAll(file.substr(0, slash), 0700));
  return WriteFileAtomic(file, reason, 0600);
}

int RemoveStaleTemplates(const std::string& root, const std::string& keep) {
  std::error_code ec;
  int removed = 0;
  std::filesystem::directory_iterator it(root, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string dir = it->path().string();
    std::error_code is_dir_ec;
    if (dir == keep || !it->is_directory(is_dir_ec)) continue;
    auto inputs = ReadFile(dir + "/inputs");
    if (!inputs.ok()) continue;  // not ours, or not provably stale
    std::stringstream lines(*inputs);
    bool stale = false;
    for (std::string line; std::getline(lines, line) && !stale;)
      stale = line != FileIdentity(line.substr(0, line.find(' ')));
    if (!stale) continue;
    // Neither being made or copied (lock) nor being restored (inuse).
    UniqueFd lock(::open((dir + "/lock").c_str(), O_RDWR | O_CLOEXEC));
    UniqueFd inuse(::open((dir + "/inuse").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock || !inuse || ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0 ||
        ::flock(inuse.get(), LOCK_EX | LOCK_NB) != 0) {
      continue;
    }
    std::error_code rm_ec;
    std::filesystem::remove_all(dir, rm_ec);
    if (rm_ec) {
      spdlog::warn("stale VM template {} not removed: {}", dir, rm_ec.message());
      continue;
    }
    spdlog::info("stale VM template {} removed (QEMU or its boot files changed)", dir);
    ++removed;
  }
  return removed;
}

// SIGTERM, up to 1 s to go, then SIGKILL. Its exit is collected by the
// thread that Spawn()ed it waits in.
void QemuUtilityVm::StopPid(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
}

void QemuUtilityVm::StopVirtiofsd() {
  pid_t pid;
  {
    MutexLock l(&mu_);
    pid = std::exchange(virtiofsd_pid_, 0);
  }
  StopPid(pid);
}

Status QemuUtilityVm::StartVirtiofsd() {
  std::string sock = cfg_.state_dir + "/fs.sock";
  SpawnOptions so;
  so.argv = VirtiofsdArgs(cfg_);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  so.fds = {{0, devnull.get()}, {1, devnull.get()}, {2, devnull.get()}};
  so.new_session = true;
  auto exited = std::make_shared<Latch>();
  // Tied: it dies with the shim, whatever kills the shim.
  auto pid = Reaper::Get().SpawnTied(so, [exited](StatusOr<int>) { exited->Open(); });
  if (!pid.ok()) return pid.status().Wrap("virtiofsd");
  {
    MutexLock l(&mu_);
    virtiofsd_pid_ = *pid;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!Exists(sock)) {
    if (exited->Wait(std::chrono::steady_clock::now() + std::chrono::milliseconds(5))) {
      MutexLock l(&mu_);
      virtiofsd_pid_ = 0;
      return UnavailableError("virtiofsd exited before listening on {}", sock);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return DeadlineExceededError("virtiofsd did not listen on {} within 5s", sock);
    }
  }
  return OkStatus();
}

Status QemuUtilityVm::Boot(QemuConfig::Accel accel, std::chrono::milliseconds timeout,
                           QemuConfig::Mode mode) {
  using Mode = QemuConfig::Mode;
  int attempt;
  {
    MutexLock l(&mu_);
    attempt = ++boot_;
    accel_ = accel;
  }
  ::unlink((cfg_.state_dir + "/agent.sock").c_str());
  ::unlink((cfg_.state_dir + "/qmp.sock").c_str());
  // virtiofsd serves one QEMU and exits when it goes: a new one per boot.
  StopVirtiofsd();
  ::unlink((cfg_.state_dir + "/fs.sock").c_str());
  if (mode != Mode::kTemplate) RETURN_IF_ERROR(StartVirtiofsd());
  int64_t tsc = cfg_.tsc_khz > 0 ? cfg_.tsc_khz : HostTscKhz();
  QemuConfig qc = cfg_;
  qc.mode = mode;
  if (mode == Mode::kRestore) qc.memory_file = cfg_.state_dir + kMemoryFile;
  SpawnOptions so;
  so.argv = QemuArgs(qc, accel, tsc);
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  UniqueFd out_r(out[0]), out_w(out[1]);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  so.fds = {{0, devnull.get()}, {1, out_w.get()}, {2, out_w.get()}};
  for (size_t i = 0; i < cfg_.nics.size(); ++i) {
    so.fds.push_back({3 + static_cast<int>(i), cfg_.nics[i].tap_fd});
  }
  so.new_session = true;
  // Tied to the thread that waits for it: QEMU dies with the shim. Its exit
  // goes to OnQemuExit unless this boot attempt failed (Boot handles that).
  auto exited = std::make_shared<Latch>();
  auto pid = Reaper::Get().SpawnTied(so, [exited, sink = exit_sink_, attempt](StatusOr<int> st) {
    exited->Open();
    // Held while OnQemuExit runs: ~QemuUtilityVm waits for it (no raw
    // `this` outliving the VM).
    MutexLock l(&sink->mu);
    if (!sink->vm) return;
    {
      MutexLock vl(&sink->vm->mu_);
      if (attempt != sink->vm->boot_ || !sink->vm->started_)
        return;  // a failed boot: Boot handles it
    }
    sink->vm->OnQemuExit(st.ok() ? *st : -1);
  });
  if (!pid.ok()) return pid.status().Wrap("qemu");
  out_w.reset();
  {
    MutexLock l(&mu_);
    qemu_pid_ = *pid;
  }
  int tb_mb = TcgCacheMb(cfg_, accel);
  std::string tb = tb_mb > 0 ? fmt::format(", TCG cache {} MiB", tb_mb) : "";
  spdlog::info("vm {}: qemu pid {} ({}, {} vCPU, {} MiB{}{})", id_, *pid, AccelName(accel),
               VmCpus(cfg_, accel), cfg_.memory_mb, tb,
               mode == Mode::kRestore    ? ", from a template"
               : mode == Mode::kTemplate ? ", a template"
                                         : "");
  // Console, line by line, until QEMU closes it; read on the event loop.
  // QEMU's own messages ("qemu-system-x86_64: error: ...") are also kept,
  // the last few, to say why a QEMU that exits during boot went.
  struct Console {
    UniqueFd fd;
    std::function<void(const std::string&)> cb;
    std::string id, buf;
    std::string prefix;  // QEMU's messages start with it
    EventLoop::Token tok = 0;
    Mutex mu;
    std::deque<std::string> qemu_said GUARDED_BY(mu);
    Latch closed;  // QEMU's output ended (or is not read): qemu_said is final
  };
  auto con = std::make_shared<Console>();
  con->fd = std::move(out_r);
  con->cb = cfg_.console;
  con->id = id_;
  con->prefix = cfg_.qemu.substr(cfg_.qemu.rfind('/') + 1) + ":";
  // What QEMU said, for an error: its last messages joined, or "".
  auto qemu_said = [con] {
    MutexLock l(&con->mu);
    std::string out;
    for (const auto& line : con->qemu_said) out += (out.empty() ? "" : "; ") + line;
    return out;
  };
  ::fcntl(con->fd.get(), F_SETFL, ::fcntl(con->fd.get(), F_GETFL) | O_NONBLOCK);
  // Watched from the loop itself, so the handler never runs before `tok`
  // is set.
  EventLoop::Get().Post([con] {
    auto tok = EventLoop::Get().Watch(con->fd.get(), EPOLLIN, [con](uint32_t) {
      char chunk[4096];
      ssize_t n = ::read(con->fd.get(), chunk, sizeof chunk);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
      if (n <= 0) {
        EventLoop::Get().Unwatch(con->tok);
        con->fd.reset();
        con->closed.Open();
        return;
      }
      con->buf.append(chunk, static_cast<size_t>(n));
      for (size_t nl; (nl = con->buf.find('\n')) != std::string::npos; con->buf.erase(0, nl + 1)) {
        std::string line = con->buf.substr(0, nl);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.compare(0, con->prefix.size(), con->prefix) == 0) {
          MutexLock l(&con->mu);
          con->qemu_said.push_back(line);
          if (con->qemu_said.size() > 3) con->qemu_said.pop_front();
        }
        if (con->cb) {
          con->cb(line);
        } else {
          spdlog::debug("vm {} console: {}", con->id, line);
        }
      }
    });
    if (tok.ok()) {
      con->tok = *tok;
    } else {
      spdlog::warn("vm {}: console not read: {}", con->id, tok.status().ToString());
      con->closed.Open();
    }
  });

  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto fail = [&](Status st) {
    {
      MutexLock l(&mu_);
      KillQemuLocked();
      agent_.reset();
    }
    exited->Wait(std::chrono::steady_clock::now() + std::chrono::seconds(10));
    return st;
  };
  if (mode == Mode::kRestore) {
    if (Status st = RestoreState(template_dir_, deadline); !st.ok()) return fail(st);
  }
  // Connects to the agent's socket and Pings it by `until`. A Ping that
  // timed out leaves `*silent` set.
  auto connect_and_ping = [&](std::chrono::steady_clock::time_point until, apb::PingResponse* pong,
                              bool* silent) -> StatusOr<std::shared_ptr<AgentClient>> {
    *silent = false;
    // QEMU's last messages may still be in the pipe when its exit is seen:
    // read up to its end (a child of QEMU's could hold it open: 1 s at most).
    auto exited_during_boot = [&] {
      con->closed.Wait(std::chrono::steady_clock::now() + std::chrono::seconds(1));
      std::string said = qemu_said();
      return UnavailableError("vm {}: qemu exited during boot ({}){}{}", id_, AccelName(accel),
                              said.empty() ? "" : ": ", said);
    };
    UniqueFd conn;
    while (!conn) {
      if (exited->Wait(std::chrono::steady_clock::now())) return exited_during_boot();
      auto c = ConnectUnix(UnixAddress{cfg_.state_dir + "/agent.sock", false});
      if (c.ok()) {
        conn = std::move(*c);
      } else if (std::chrono::steady_clock::now() > deadline) {
        return DeadlineExceededError("vm {}: qemu never opened its agent socket", id_);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    auto agent = std::make_shared<AgentClient>(std::make_unique<ttrpc::Client>(std::move(conn)));
    // One Ping with the whole time: it waits in the channel until the agent
    // opens its port.
    apb::PingRequest ping;
    Status st = agent->Ping(ping, pong, AgentClient::Until(until));
    if (!st.ok()) {
      agent->Close();
      *silent = st.code() == Code::kDeadlineExceeded;
      // A channel closed under the Ping: most likely QEMU went.
      if (!*silent && exited->Wait(std::chrono::steady_clock::now() + std::chrono::seconds(1)))
        return exited_during_boot();
      return DeadlineExceededError("vm {}: the agent did not answer within {} ms ({}): {}", id_,
                                   timeout.count(), AccelName(accel), st.message());
    }
    return agent;
  };
  apb::PingResponse pong;
  bool silent = false;
  StatusOr<std::shared_ptr<AgentClient>> connected = UnavailableError("not connected");
  if (mode == Mode::kRestore) {
    // A restored agent answers within a second. Templates are saved with no
    // host connection (SaveAndQuit), which removes the cause of the one
    // lost first Ping seen (a restore resuming inside the template's
    // connection); as that cause was never reproduced, a Ping that goes
    // unanswered is still retried on a fresh connection, with a warning.
    constexpr auto kRestoredTry = std::chrono::seconds(3);
    for (;;) {
      auto until = std::min(deadline, std::chrono::steady_clock::now() + kRestoredTry);
      connected = connect_and_ping(until, &pong, &silent);
      if (connected.ok() || !silent || std::chrono::steady_clock::now() >= deadline) break;
      spdlog::warn("vm {}: the restored agent did not answer within {} s; reconnecting", id_,
                   kRestoredTry.count());
    }
  } else {
    connected = connect_and_ping(deadline, &pong, &silent);
  }
  if (!connected.ok()) return fail(connected.status());
  auto agent = std::move(*connected);
  if (mode == Mode::kRestore) {
    // Its own identity before anything runs in it; and the plugged devices.
    apb::RestoredRequest rr;
    std::string entropy(64, '\0');
    if (::getrandom(entropy.data(), entropy.size(), 0) != static_cast<ssize_t>(entropy.size())) {
      agent->Close();
      return fail(ErrnoError(errno, "getrandom"));
    }
    rr.set_entropy(entropy);
    rr.set_realtime_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
    rr.add_virtiofs_tags(kShareTag);
    for (const auto& n : cfg_.nics) rr.add_macs(n.mac);
    apb::Empty e;
    Status st = agent->Restored(rr, &e, AgentClient::Until(deadline));
    if (!st.ok()) {
      agent->Close();
      return fail(st.Wrap(fmt::format("vm {}: restored VM", id_)));
    }
  }
  spdlog::info("vm {}: agent ready ({} {}, kernel {})", id_, AccelName(accel), pong.agent_version(),
               pong.kernel_release());
  ListLiveAgent(id_, agent);
  MutexLock l(&mu_);
  agent_ = std::move(agent);
  started_ = true;
  return OkStatus();
}

Status QemuUtilityVm::Start() {
  MutexLock sl(&start_mu_);
  {
    MutexLock l(&mu_);
    if (started_ || closing_ || boot_ > 0)
      return FailedPreconditionError("vm {} already started", id_);
  }
  for (const char* f : kBootFiles) {
    if (!Exists(cfg_.boot_dir + f)) {
      return NotFoundError("vm {}: boot file {}{} is missing (build the VM image)", id_,
                           cfg_.boot_dir, f);
    }
  }
  if (::mkdir(cfg_.state_dir.c_str(), 0700) != 0) {
    return ErrnoError(errno, fmt::format("vm state dir {}", cfg_.state_dir));
  }
  ::mkdir((cfg_.state_dir + "/shares").c_str(), 0700);
  Status st;
  if (!cfg_.template_dir.empty() && cfg_.mode == QemuConfig::Mode::kCold) {
    st = StartFromTemplate();
    if (st.ok()) return st;
    spdlog::warn("vm {}: not started from a template ({}); booting it", id_, st.message());
    StopVirtiofsd();
    ::unlink((cfg_.state_dir + kMemoryFile).c_str());
  }
  {
    const auto mode = cfg_.mode;
    switch (cfg_.accel) {
      case QemuConfig::Accel::kTcg:
        st = Boot(QemuConfig::Accel::kTcg, cfg_.boot_timeout, mode);
        break;
      case QemuConfig::Accel::kKvm:
        st = Boot(QemuConfig::Accel::kKvm, cfg_.boot_timeout, mode);
        break;
      case QemuConfig::Accel::kAuto: {
        bool try_kvm = ::access("/dev/kvm", R_OK | W_OK) == 0;
        if (try_kvm && !cfg_.kvm_verdict_file.empty()) {
          if (auto why = RecentKvmFailure(cfg_.kvm_verdict_file, cfg_.kvm_verdict_ttl)) {
            spdlog::info(
                "vm {}: TCG: a KVM boot on this host failed within the last {} s ({}); "
                "remove {} to try KVM again",
                id_, cfg_.kvm_verdict_ttl.count(), *why, cfg_.kvm_verdict_file);
            try_kvm = false;
          }
        }
        std::string kvm_failure;
        if (try_kvm) {
          st = Boot(QemuConfig::Accel::kKvm, cfg_.kvm_probe_timeout, mode);
          if (st.ok()) break;
          kvm_failure = st.message();
          spdlog::warn("vm {}: KVM boot failed ({}); falling back to TCG", id_, kvm_failure);
        }
        st = Boot(QemuConfig::Accel::kTcg, cfg_.boot_timeout, mode);
        // Only when TCG boots the same VM is KVM the culprit.
        if (st.ok() && !kvm_failure.empty() && !cfg_.kvm_verdict_file.empty()) {
          Status rec = RecordKvmFailure(cfg_.kvm_verdict_file, kvm_failure);
          if (!rec.ok()) spdlog::warn("vm {}: KVM verdict not kept: {}", id_, rec.ToString());
        }
        break;
      }
    }
  }
  if (!st.ok()) {
    {
      MutexLock l(&mu_);
      gone_ = true;
      exit_ = st;
    }
    Cleanup();
  }
  return st;
}

Status QemuUtilityVm::StartFromTemplate() {
  if (cfg_.nics.size() + 1 > static_cast<size_t>(kTemplateRootPorts)) {
    return FailedPreconditionError("{} NICs: a template has room for {}", cfg_.nics.size(),
                                   kTemplateRootPorts - 1);
  }
  const std::string dir = cfg_.template_dir + "/" + TemplateKey(cfg_);
  if (!ShellQuotable(dir)) return InvalidArgumentError("template directory {:?}", dir);
  RETURN_IF_ERROR(MkdirAll(dir, 0700).Wrap("template directory"));
  // One process makes a shape's template; the others wait for it here.
  UniqueFd lock(::open((dir + "/lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
  if (!lock) return ErrnoError(errno, "template lock");
  auto locked_by =
      std::chrono::steady_clock::now() + 2 * cfg_.boot_timeout + std::chrono::seconds(30);
  while (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) return ErrnoError(errno, "lock the template");
    if (std::chrono::steady_clock::now() > locked_by)
      return DeadlineExceededError("template {} stayed locked", dir);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!Exists(dir + "/state")) RETURN_IF_ERROR(MakeTemplate(dir));
  auto accel_name = ReadFile(dir + "/accel");
  if (!accel_name.ok()) return accel_name.status().Wrap("template");
  const auto accel = *accel_name == "kvm" ? QemuConfig::Accel::kKvm : QemuConfig::Accel::kTcg;
  // Private to this VM: the template's memory stays as saved.
  RETURN_IF_ERROR(CopySparse(dir + "/memory", cfg_.state_dir + kMemoryFile));
  // Held while QEMU reads the template's state: no stale-template sweep
  // removes it under the restore.
  UniqueFd inuse(::open((dir + "/inuse").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!inuse || ::flock(inuse.get(), LOCK_SH) != 0) return ErrnoError(errno, "template in use");
  // Others may restore from it now; it only changes (is discarded) under the lock.
  lock.reset();
  template_dir_ = dir;
  Status st = Boot(accel, cfg_.boot_timeout, QemuConfig::Mode::kRestore);
  if (!st.ok()) {
    // Likely a template this QEMU or host no longer takes: the next VM of
    // the shape makes a new one.
    UniqueFd relock(::open((dir + "/lock").c_str(), O_RDWR | O_CLOEXEC));
    if (relock && ::flock(relock.get(), LOCK_EX) == 0) {
      for (const char* f : {"/state", "/memory", "/accel"}) ::unlink((dir + f).c_str());
    }
    spdlog::warn("vm {}: template {} discarded", id_, dir);
  }
  return st;
}

Status QemuUtilityVm::MakeTemplate(const std::string& dir) {
  auto t0 = std::chrono::steady_clock::now();
  QemuConfig tc = cfg_;
  tc.template_dir.clear();
  tc.nics.clear();
  tc.mode = QemuConfig::Mode::kTemplate;
  tc.state_dir = dir + "/boot";
  tc.memory_file = dir + "/memory.new";
  CleanupStateDir(tc.state_dir);  // a maker that died
  for (const char* f : {"/memory.new", "/state.new"}) ::unlink((dir + f).c_str());
  QemuUtilityVm t(id_ + "-template", tc);
  Status st = t.Start();
  if (st.ok()) {
    apb::Empty e;
    st = t.agent()->PrepareTemplate(e, &e, AgentClient::Within(std::chrono::seconds(30)));
  }
  if (st.ok()) st = t.SaveAndQuit(dir + "/state.new");
  const auto accel = t.accel();
  (void)t.Close();
  if (st.ok()) st = WriteFileAtomic(dir + "/accel", AccelName(accel), 0600);
  if (st.ok()) st = WriteFileAtomic(dir + "/inputs", TemplateInputs(cfg_), 0600);
  if (st.ok() && ::rename((dir + "/memory.new").c_str(), (dir + "/memory").c_str()) != 0)
    st = ErrnoError(errno, "template memory");
  // The state last: its presence says the template is whole.
  if (st.ok() && ::rename((dir + "/state.new").c_str(), (dir + "/state").c_str()) != 0)
    st = ErrnoError(errno, "template state");
  if (!st.ok()) {
    for (const char* f : {"/memory.new", "/state.new"}) ::unlink((dir + f).c_str());
    return st.Wrap("make the VM template");
  }
  struct stat ms {};
  ::stat((dir + "/memory").c_str(), &ms);
  spdlog::info(
      "vm {}: template {} made in {} ms ({}, {} MiB of memory)", id_, dir,
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count(),
      AccelName(accel), ms.st_blocks * 512 / (1 << 20));
  // A new template is what an upgrade leads to: the ones it replaced go
  // (each holds a memory file on the host's tmpfs).
  RemoveStaleTemplates(cfg_.template_dir, dir);
  return OkStatus();
}

Status QemuUtilityVm::SaveAndQuit(const std::string& state_file) {
  if (!ShellQuotable(state_file)) return InvalidArgumentError("state file {:?}", state_file);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  ASSIGN_OR_RETURN(QmpClient q, QmpClient::Connect(cfg_.state_dir + "/qmp.sock", deadline));
  // The guest's RAM is the shared file itself: only device state goes to
  // the stream.
  RETURN_IF_ERROR(IgnoreSharedMemory(q, deadline));
  // No host connection in the snapshot: end ours and wait until the agent
  // has opened its port again (it closes it when the host goes), so every
  // restored VM resumes with its agent waiting for a host, as a booted one
  // does. A snapshot inside a live connection resumes with a stale one, and
  // the first call on the new one can be lost. QEMU reports port changes at
  // most once a second, the latest state: an open reported as happening
  // after our close is the reopen.
  std::shared_ptr<AgentClient> agent;
  {
    MutexLock l(&mu_);
    agent = std::exchange(agent_, nullptr);
  }
  const int64_t closed_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
  if (agent) agent->Close();
  auto reopened = [closed_us](const nlohmann::json& e) {
    auto d = e.value("data", nlohmann::json::object());
    return d.is_object() && d.value("id", "") == kPortId && d.value("open", false) &&
           QmpClient::EventTimeUs(e) >= closed_us;
  };
  RETURN_IF_ERROR(q.WaitEvent("VSERPORT_CHANGE", reopened, deadline)
                      .status()
                      .Wrap("the agent's port reopening"));
  RETURN_IF_ERROR(q.Execute("stop").status());
  RETURN_IF_ERROR(
      q.Execute("migrate", {{"uri", "exec:cat > '" + state_file + "'"}}, deadline).status());
  RETURN_IF_ERROR(AwaitMigration(q, "saving the template", deadline));
  {
    MutexLock l(&mu_);
    closing_ = true;  // its exit is expected
  }
  (void)q.Execute("quit");  // QEMU may close the socket before it answers
  auto gone_by = std::chrono::steady_clock::now() + kQuitWait;
  MutexLock l(&mu_);
  while (!gone_) {
    if (!cv_.WaitUntil(&mu_, gone_by) && !gone_) break;
  }
  return OkStatus();
}

Status QemuUtilityVm::RestoreState(const std::string& template_dir,
                                   std::chrono::steady_clock::time_point deadline) {
  ASSIGN_OR_RETURN(QmpClient q, QmpClient::Connect(cfg_.state_dir + "/qmp.sock", deadline));
  RETURN_IF_ERROR(IgnoreSharedMemory(q, deadline));
  RETURN_IF_ERROR(
      q.Execute("migrate-incoming", {{"uri", "exec:cat '" + template_dir + "/state'"}}, deadline)
          .status());
  RETURN_IF_ERROR(AwaitMigration(q, "restoring the template", deadline));
  // QEMU has it mapped: the name can go, and nothing is left if we die.
  ::unlink((cfg_.state_dir + kMemoryFile).c_str());
  RETURN_IF_ERROR(q.Execute("cont", nullptr, deadline).status());
  RETURN_IF_ERROR(q.Execute("device_add",
                            {{"driver", "vhost-user-fs-pci"},
                             {"id", "fs0"},
                             {"bus", "rp0"},
                             {"chardev", "fs"},
                             {"tag", kShareTag}},
                            deadline)
                      .status()
                      .Wrap("plug the share device"));
  for (size_t i = 0; i < cfg_.nics.size(); ++i) {
    RETURN_IF_ERROR(q.Execute("device_add",
                              {{"driver", "virtio-net-pci"},
                               {"id", fmt::format("nic{}", i)},
                               {"netdev", fmt::format("net{}", i)},
                               {"mac", cfg_.nics[i].mac},
                               {"bus", fmt::format("rp{}", i + 1)}},
                              deadline)
                        .status()
                        .Wrap("plug a NIC"));
  }
  return OkStatus();
}

void QemuUtilityVm::KillQemuLocked() {
  if (qemu_pid_ > 0) ::kill(qemu_pid_, SIGKILL);
}

void QemuUtilityVm::Terminate(const std::string& why) {
  MutexLock l(&mu_);
  if (!started_ || gone_ || closing_) return;
  terminated_ = why.empty() ? "terminated" : why;
  KillQemuLocked();
}

void QemuUtilityVm::OnQemuExit(int status) {
  std::shared_ptr<AgentClient> agent;
  {
    MutexLock l(&mu_);
    gone_ = true;
    if (!terminated_.empty()) {
      exit_ = UnavailableError("vm {}: killed: {}", id_, terminated_);
    } else if (!closing_) {
      exit_ = UnavailableError("vm {}: qemu exited unexpectedly (status {})", id_, status);
      spdlog::error("{}", exit_.message());
    }
    agent = agent_;
    cv_.SignalAll();
  }
  if (agent) agent->Close();  // pending calls fail with Unavailable now
  Cleanup();
}

Status QemuUtilityVm::QmpQuit() {
  auto c = ConnectUnix(UnixAddress{cfg_.state_dir + "/qmp.sock", false});
  if (!c.ok()) return c.status();
  for (const char* cmd : {"{\"execute\":\"qmp_capabilities\"}\n", "{\"execute\":\"quit\"}\n"}) {
    // A QEMU that exits meanwhile (the agent's power-off) is an error, not
    // SIGPIPE: the tests and benches do not ignore it as the shim does.
    RETURN_IF_ERROR(SendAll(c->get(), cmd, "qmp quit"));
  }
  return OkStatus();
}

Status QemuUtilityVm::Close() {
  MutexLock sl(&start_mu_);
  std::shared_ptr<AgentClient> agent;
  {
    MutexLock l(&mu_);
    closing_ = true;
    if (!started_) gone_ = true;  // never booted: nothing to stop
    agent = agent_;
  }
  auto gone_within = [&](auto d) {
    auto deadline = std::chrono::steady_clock::now() + d;
    MutexLock l(&mu_);
    while (!gone_) {
      if (!cv_.WaitUntil(&mu_, deadline) && !gone_) return false;
    }
    return true;
  };
  bool running;
  {
    MutexLock l(&mu_);
    running = started_ && !gone_;
  }
  if (running) {
    apb::Empty e;
    if (agent && agent->Shutdown(e, &e, AgentClient::Within(std::chrono::seconds(2))).ok() &&
        gone_within(kShutdownWait)) {
      spdlog::info("vm {}: powered off", id_);
    } else if (QmpQuit().ok() && gone_within(kQuitWait)) {
      spdlog::info("vm {}: quit through QMP", id_);
    } else {
      {
        MutexLock l(&mu_);
        KillQemuLocked();
      }
      gone_within(std::chrono::seconds(10));
      spdlog::warn("vm {}: killed", id_);
    }
  }
  Cleanup();
  return OkStatus();
}

void QemuUtilityVm::Cleanup() {
  std::vector<std::pair<std::string, std::string>> mounts;
  pid_t fsd;
  std::shared_ptr<AgentClient> agent;
  {
    MutexLock l(&mu_);
    if (!(gone_ || !started_)) return;
    if (cleaning_) {
      // Someone else is at it: return when it is done, as they will.
      while (!cleaned_) cv_.Wait(&mu_);
      return;
    }
    cleaning_ = true;
    mounts.swap(share_mounts_);
    fsd = std::exchange(virtiofsd_pid_, 0);
    agent = std::move(agent_);
  }
  if (agent) agent->Close();
  StopPid(fsd);
  // Never a recursive delete: a share that failed to unmount must keep its
  // host files. Mount points are empty once unmounted.
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) RemoveShareMount(it->first);
  for (const char* f : kStateFiles) ::unlink((cfg_.state_dir + f).c_str());
  ::rmdir((cfg_.state_dir + "/shares").c_str());
  ::rmdir(cfg_.state_dir.c_str());
  Status why;
  {
    MutexLock l(&mu_);
    cleaned_ = true;
    cv_.SignalAll();
    why = exit_;
  }
  gone_cbs_.Fire(why);
}

void QemuUtilityVm::CleanupStateDir(const std::string& state_dir) {
  if (state_dir.empty() || !Exists(state_dir)) return;
  // Processes whose command line names the directory are this VM's.
  auto of_vm = [&] {
    std::vector<pid_t> pids;
    if (DIR* d = ::opendir("/proc")) {
      while (dirent* e = ::readdir(d)) {
        pid_t pid = std::atoi(e->d_name);
        if (pid <= 0 || pid == ::getpid()) continue;
        auto cmd = ReadFile(fmt::format("/proc/{}/cmdline", pid));
        if (cmd.ok() && cmd->find(state_dir + "/") != std::string::npos) pids.push_back(pid);
      }
      ::closedir(d);
    }
    return pids;
  };
  for (int i = 0; i < 300; ++i) {
    auto pids = of_vm();
    if (pids.empty()) break;
    for (pid_t p : pids) ::kill(p, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::string shares = state_dir + "/shares";
  if (DIR* d = ::opendir(shares.c_str())) {
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      if (std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..")
        names.push_back(e->d_name);
    }
    ::closedir(d);
    for (const auto& n : names) {
      std::string t = shares + "/" + n;
      ::umount2(t.c_str(), MNT_DETACH);
      if (::rmdir(t.c_str()) != 0)
        ::unlink(t.c_str());  // never recursive: a live mount keeps its files
    }
  }
  for (const char* f : kStateFiles) ::unlink((state_dir + f).c_str());
  ::rmdir(shares.c_str());
  ::rmdir(state_dir.c_str());
}

Status QemuUtilityVm::Wait() {
  MutexLock l(&mu_);
  while (!(gone_ && cleaned_)) cv_.Wait(&mu_);
  return exit_;
}

Status QemuUtilityVm::Share(const std::string& host_path, const std::string& vm_path,
                            bool read_only) {
  if (host_path.empty() || host_path.front() != '/') {
    return InvalidArgumentError("share: host path {:?} is not absolute", host_path);
  }
  if (vm_path.empty() || vm_path.front() != '/') {
    return InvalidArgumentError("share: VM path {:?} is not absolute", vm_path);
  }
  char real[PATH_MAX];
  if (!::realpath(host_path.c_str(), real)) {
    if (errno == ENOENT) return NotFoundError("share: host path {} does not exist", host_path);
    return ErrnoError(errno, fmt::format("share: resolve {}", host_path));
  }
  struct stat st;
  if (::stat(real, &st) != 0) return ErrnoError(errno, fmt::format("share: stat {}", real));
  std::shared_ptr<AgentClient> agent;
  std::string name;
  {
    MutexLock l(&mu_);
    if (!started_ || gone_ || !agent_) return FailedPreconditionError("vm {} is not running", id_);
    agent = agent_;
    name = std::to_string(next_share_++);
  }
  std::string target = cfg_.state_dir + "/shares/" + name;
  if (S_ISDIR(st.st_mode)) {
    if (::mkdir(target.c_str(), 0700) != 0)
      return ErrnoError(errno, fmt::format("mkdir {}", target));
  } else {
    UniqueFd f(::open(target.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
    if (!f) return ErrnoError(errno, fmt::format("create {}", target));
  }
  auto undo = [&] {
    ::umount2(target.c_str(), MNT_DETACH);
    if (::rmdir(target.c_str()) != 0) ::unlink(target.c_str());
  };
  if (::mount(real, target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    int err = errno;
    undo();
    return ErrnoError(err, fmt::format("share: bind {}", real));
  }
  if (read_only &&
      ::mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
    int err = errno;
    undo();
    return ErrnoError(err, fmt::format("share: read-only {}", real));
  }
  apb::MountShareRequest req;
  req.set_tag(kShareTag);
  req.set_sub_path(name);
  req.set_guest_path(vm_path);
  req.set_read_only(read_only);
  apb::Empty e;
  Status ms = agent->MountShare(req, &e);
  if (!ms.ok()) {
    undo();
    return ms.Wrap("share: in the VM");
  }
  MutexLock l(&mu_);
  share_mounts_.emplace_back(target, vm_path);
  return OkStatus();
}

bool QemuUtilityVm::RemoveShareMount(const std::string& target) {
  if (::umount2(target.c_str(), MNT_DETACH) != 0) {
    spdlog::error("vm {}: unmount {}: {}", id_, target, std::strerror(errno));
    return false;  // keep the (still mounted) point: never delete through it
  }
  if (::rmdir(target.c_str()) != 0) ::unlink(target.c_str());
  return true;
}

Status QemuUtilityVm::Unshare(const std::string& vm_path) {
  std::string target;
  std::shared_ptr<AgentClient> agent;
  {
    MutexLock l(&mu_);
    for (auto it = share_mounts_.begin(); it != share_mounts_.end(); ++it) {
      if (it->second == vm_path) {
        target = it->first;
        share_mounts_.erase(it);
        break;
      }
    }
    if (!gone_) agent = agent_;
  }
  if (target.empty()) return NotFoundError("vm {}: nothing is shared at {}", id_, vm_path);
  // The guest's mount first: it holds the share's files (and virtiofsd their
  // host inodes) for as long as it stays, which for a pod's container is
  // the life of the pod. Briefly: a guest that does not answer must not
  // hold a container's teardown for a default timeout per share.
  if (agent) {
    apb::UnmountShareRequest req;
    req.set_guest_path(vm_path);
    apb::Empty e;
    Status st = agent->UnmountShare(req, &e, AgentClient::Within(std::chrono::seconds(2)));
    if (!st.ok() && st.code() != Code::kNotFound)
      spdlog::warn("vm {}: unmount {} in the guest: {}", id_, vm_path, st.ToString());
  }
  if (!RemoveShareMount(target))
    return InternalError("vm {}: could not unmount the share of {}", id_, vm_path);
  return OkStatus();
}

StatusOr<int32_t> QemuUtilityVm::ExecInUvm(
    const containerd::runhcs::v1::diag::ExecProcessRequest& req) {
  if (req.args().empty()) return InvalidArgumentError("exec in VM: no command");
  std::shared_ptr<AgentClient> agent;
  std::string exec_id;
  {
    MutexLock l(&mu_);
    if (!started_ || gone_ || !agent_) return FailedPreconditionError("vm {} is not running", id_);
    agent = agent_;
    exec_id = fmt::format("host-exec-{}", next_share_++);
  }
  apb::ExecProcessRequest er;
  er.mutable_id()->set_exec_id(exec_id);
  for (const auto& a : req.args()) er.add_args(a);
  er.set_cwd(req.workdir());
  er.set_terminal(req.terminal());
  er.set_stdin(!req.stdin().empty());
  apb::StartResponse started;
  RETURN_IF_ERROR(agent->ExecProcess(er, &started));
  apb::ProcessId pid;
  pid.set_exec_id(exec_id);

  // The host paths are opened here, so a fifo's other end is whoever asked
  // for this exec.
  auto pump_out = [agent, pid](std::string path, apb::ReadStreamRequest::Stream which) {
    UniqueFd fd;
    if (!path.empty()) fd.reset(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    agent->RelayOutput(pid, which, fd ? fd.get() : -1);
  };
  std::thread out_t(pump_out, req.stdout(), apb::ReadStreamRequest::STDOUT);
  std::thread err_t(pump_out, req.terminal() ? std::string() : req.stderr(),
                    apb::ReadStreamRequest::STDERR);
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
  std::thread in_t;
  if (!req.stdin().empty()) {
    in_t = std::thread([agent, pid, path = req.stdin(), stop_fd = stop.get()] {
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
      if (fd) {
        agent->RelayStdin(pid, fd.get(), stop_fd);
      } else {
        apb::Empty e;
        (void)agent->CloseStdin(pid, &e);
      }
    });
  }
  auto status = agent->WaitExit(pid);
  out_t.join();
  err_t.join();
  uint64_t one = 1;
  (void)!::write(stop.get(), &one, sizeof one);
  if (in_t.joinable()) in_t.join();
  return status;
}

StatusOr<std::string> QemuUtilityVm::DumpStacks() {
  auto a = agent();
  if (!a) return FailedPreconditionError("vm {} is not running", id_);
  apb::Empty e;
  apb::DumpStacksResponse r;
  RETURN_IF_ERROR(a->DumpStacks(e, &r, AgentClient::Within(std::chrono::seconds(5))));
  return r.stacks();
}

StatusOr<containerd::runhcs::stats::v1::VirtualMachineStatistics> QemuUtilityVm::Stats() {
  pid_t pid;
  std::shared_ptr<AgentClient> agent;
  {
    MutexLock l(&mu_);
    if (!started_ || gone_) return FailedPreconditionError("vm {} is not running", id_);
    pid = qemu_pid_;
    agent = agent_;
  }
  containerd::runhcs::stats::v1::VirtualMachineStatistics s;
  // QEMU on the host: CPU time (utime + stime, fields 14 and 15) and RSS.
  if (auto stat = ReadFile(fmt::format("/proc/{}/stat", pid)); stat.ok()) {
    std::istringstream in(stat->substr(stat->rfind(')') + 2));
    std::string field;
    uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    s.mutable_processor()->set_total_runtime_ns((utime + stime) *
                                                (1000000000ULL / ::sysconf(_SC_CLK_TCK)));
  }
  // QEMU's resident memory, with the guest's RAM counted as what its file
  // holds: a restored VM's copy of its template is host memory whether or
  // not QEMU has touched (mapped) a page of it since.
  if (auto status = ReadFile(fmt::format("/proc/{}/status", pid)); status.ok()) {
    auto kb = [&](const char* key) -> uint64_t {
      size_t at = status->find(key);
      return at == std::string::npos ? 0 : std::stoull(status->substr(at + std::strlen(key)));
    };
    uint64_t rss = kb("VmRSS:") * 1024, shmem = kb("RssShmem:") * 1024;
    s.mutable_memory()->set_working_set_bytes(rss - std::min(rss, shmem) + GuestRamBytes(pid));
  }
  apb::Empty e;
  apb::StatsResponse guest;
  if (agent && agent->Stats(e, &guest, AgentClient::Within(std::chrono::seconds(5))).ok()) {
    auto* vm = s.mutable_memory()->mutable_vm_memory();
    vm->set_assigned_memory(guest.mem_total_kb() * 1024);
    vm->set_available_memory(static_cast<int32_t>(guest.mem_available_kb() / 1024));  // MiB
  }
  return s;
}

}  // namespace runhcs::uvm
