// runhcs-vm-bench: the utility VM's costs, each next to its reference
// measured in the same run:
//   1. boot to agent-ready (QemuUtilityVm::Start) against the same kernel
//      booting a bare busybox initramfs to its first line from init, same
//      machine, memory and command line: the limit for this kernel;
//   2. a container's lifecycle (create, start, wait, delete of /bin/true)
//      inside a running VM through the agent, against the same container
//      run by the same OCI runtime (crun) on the host;
//   3. memory: the PSS of an idle VM (QEMU + its virtiofsd), split into the
//      guest's RAM, QEMU's own and mapped files, and what a second VM adds.
// The default VM shape (what a user gets) first, then a small one. TCG
// always; KVM where it reaches the agent. Writes OUT/vm.md.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/io.h"
#include "base/latch.h"
#include "base/polled_reaper.h"
#include "base/reaper.h"
#include "tests/subprocess.h"
#include "uvm/qemu_vm.h"
#include "uvm/utility_vm.h"

namespace runhcs::bench {
namespace {

using Clock = std::chrono::steady_clock;
using testing::RunCommand;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A busybox initramfs whose /init prints a marker and powers off.
bool MakeBareInitrd(const std::string& dir) {
  std::string root = dir + "/bare-root";
  RunCommand({"mkdir", "-p", root + "/bin"});
  RunCommand({"cp", "/bin/busybox", root + "/bin/busybox"});
  if (!WriteFileAtomic(
           root + "/init",
           "#!/bin/busybox sh\n/bin/busybox echo BARE-INIT-READY\n/bin/busybox poweroff -f\n", 0755)
           .ok()) {
    return false;
  }
  return RunCommand({"sh", "-c",
                     "cd " + root + " && find . | cpio -o -H newc --quiet | lz4 -l -9 -q > " + dir +
                         "/bare.img"})
             .exit_code == 0;
}

// Runs `argv` (a QEMU) with its console on a pipe until it prints the bare
// initramfs's marker line, then kills it: ms from `t0` to the line, or -1.
double RunToMarker(const std::vector<std::string>& argv, Clock::time_point t0) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1;
  UniqueFd r(p[0]), w(p[1]);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  auto pid =
      Reaper::Get().Spawn({.argv = argv, .fds = {{0, devnull.get()}, {1, w.get()}, {2, w.get()}}});
  if (!pid.ok()) return -1;
  w.reset();
  std::string seen;
  double ms = -1;
  char buf[4096];
  for (;;) {
    pollfd pf{r.get(), POLLIN, 0};
    if (::poll(&pf, 1, 20000) <= 0) break;
    ssize_t n = ::read(r.get(), buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<size_t>(n));
    if (seen.find("BARE-INIT-READY") != std::string::npos) {
      ms = Ms(Clock::now() - t0);
      break;
    }
  }
  ::kill(*pid, SIGKILL);
  (void)Reaper::Get().Wait(*pid);
  return ms;
}

// Spawn to the marker line on the console, in ms; -1 on timeout. The
// shim's own QEMU command line for `cfg` (machine, accelerator: under TCG one
// host thread for every vCPU; memory backend, -global settings, kernel
// command line) without its devices, booting `initrd`: the same machine
// config, so the ratio does not move with how QEMU is set up.
double BareBoot(const uvm::QemuConfig& cfg, const std::string& initrd,
                uvm::QemuConfig::Accel accel) {
  auto vm = uvm::QemuArgs(cfg, accel, uvm::HostTscKhz());
  std::vector<std::string> argv = {vm[0]};
  for (size_t i = 1; i < vm.size(); ++i) {
    const std::string& a = vm[i];
    if (a == "-chardev" || a == "-device" || a == "-drive" || a == "-qmp" || a == "-netdev") {
      ++i;  // a device, its backend or the QMP socket, with its value
      continue;
    }
    argv.push_back(a);
    if (a == "-initrd" && i + 1 < vm.size()) {
      argv.push_back(initrd);
      ++i;
    }
  }
  return RunToMarker(argv, Clock::now());
}

// The bare initramfs booted with the VM's own QEMU command line (devices,
// memory backend, its virtiofsd started first, as a VM's Start does):
// spawn of virtiofsd to the marker line, in ms; -1 on timeout. Against it
// the agent's own part of a boot shows apart from what the VM's devices
// cost the kernel and QEMU.
double BareBootWithDevices(uvm::QemuConfig cfg, const std::string& bare_boot_dir,
                           const std::string& state, uvm::QemuConfig::Accel accel) {
  cfg.boot_dir = bare_boot_dir;
  cfg.state_dir = state;
  RunCommand({"mkdir", "-p", state + "/shares"});
  std::string sock = state + "/fs.sock";
  ::unlink(sock.c_str());
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  auto t0 = Clock::now();
  auto fsd =
      Reaper::Get().Spawn({.argv = uvm::VirtiofsdArgs(cfg),
                           .fds = {{0, devnull.get()}, {1, devnull.get()}, {2, devnull.get()}}});
  if (!fsd.ok()) return -1;
  while (::access(sock.c_str(), F_OK) != 0 && Clock::now() - t0 < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  double ms = RunToMarker(uvm::QemuArgs(cfg, accel, uvm::HostTscKhz()), t0);
  ::kill(*fsd, SIGKILL);
  (void)Reaper::Get().Wait(*fsd);
  RunCommand({"rm", "-rf", state});
  return ms;
}

struct VmBoot {
  double ms = -1;
  uvm::QemuConfig::Accel got = uvm::QemuConfig::Accel::kTcg;
};

VmBoot AgentBoot(uvm::QemuConfig cfg, const std::string& state, uvm::QemuConfig::Accel accel) {
  cfg.state_dir = state;
  cfg.accel = accel;
  cfg.boot_timeout = std::chrono::milliseconds(20000);
  uvm::QemuUtilityVm vm("bench", cfg);
  auto t0 = Clock::now();
  Status st = vm.Start();
  VmBoot b;
  if (st.ok()) {
    b.ms = Ms(Clock::now() - t0);
    b.got = vm.accel();
  }
  (void)vm.Close();
  return b;
}

// Runs argv to completion through the Reaper (which owns waitpid here).
int Run(const std::vector<std::string>& argv) {
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  auto pid = Reaper::Get().Spawn(
      {.argv = argv, .fds = {{0, devnull.get()}, {1, devnull.get()}, {2, devnull.get()}}});
  if (!pid.ok()) return -1;
  auto st = Reaper::Get().Wait(*pid);
  return st.ok() ? *st : -1;
}

// create, start, wait, delete of the spec's process with crun on the host.
double HostLifecycle(const std::string& bundle, const std::string& id) {
  auto t0 = Clock::now();
  std::string pidfile = bundle + "/" + id + ".pid";
  auto expect = Reaper::Get().Expect();
  if (Run({"crun", "create", "--bundle", bundle, "--pid-file", pidfile, id}) != 0) return -1;
  pid_t pid = std::atoi(testing::ReadFileOr(pidfile, "0").c_str());
  Latch exited;
  Reaper::Get().Watch(pid, [&](int) { exited.Open(); });  // we are its subreaper
  expect.Release();
  if (Run({"crun", "start", id}) != 0) return -1;
  exited.Wait();
  Run({"crun", "delete", "--force", id});
  ::unlink(pidfile.c_str());
  return Ms(Clock::now() - t0);
}

// A VM's memory (KiB), by kind. The guest's RAM is what its backing file
// (QEMU's memfd, or a restored VM's copy of its template's memory) holds:
// its allocated size, not its PSS, which would leave out what a restored
// VM has not touched since. QEMU's own memory and mapped files are PSS.
struct Pss {
  long total = 0, shmem = 0, anon = 0, file = 0;
  Pss& operator+=(const Pss& o) {
    total += o.total;
    shmem += o.shmem;
    anon += o.anon;
    file += o.file;
    return *this;
  }
};

Pss ReadPss(pid_t pid) {
  Pss p;
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {  // "Pss_Anon:   123 kB"; the first line is a range
    char key[64];
    long kb;
    if (std::sscanf(line.c_str(), "%63s %ld", key, &kb) != 2) continue;
    std::string k = key;
    if (k == "Pss_Anon:") p.anon = kb;
    if (k == "Pss_File:") p.file = kb;
  }
  return p;
}

// Processes whose command line contains `needle` (a VM's state directory
// names its QEMU and its virtiofsd).
std::vector<pid_t> PidsWithArg(const std::string& needle) {
  std::vector<pid_t> out;
  auto dir = std::unique_ptr<DIR, int (*)(DIR*)>(::opendir("/proc"), ::closedir);
  if (!dir) return out;
  while (dirent* e = ::readdir(dir.get())) {
    pid_t pid = std::atoi(e->d_name);
    if (pid <= 0 || pid == ::getpid()) continue;
    std::string cmd = testing::ReadFileOr("/proc/" + std::string(e->d_name) + "/cmdline", "");
    if (cmd.find(needle) != std::string::npos) out.push_back(pid);
  }
  return out;
}

Pss VmPss(const std::string& state_dir) {
  Pss sum;
  for (pid_t pid : PidsWithArg(state_dir)) {
    sum += ReadPss(pid);
    sum.shmem = std::max(sum.shmem, static_cast<long>(uvm::GuestRamBytes(pid) /
                                                      1024));  // QEMU's; virtiofsd maps the same
  }
  sum.total = sum.shmem + sum.anon + sum.file;
  return sum;
}

// Per phase (create, start, wait, remove), summed over the measured runs.
std::map<std::string, std::vector<double>> vm_phases;

double VmLifecycle(uvm::AgentClient* agent, const std::string& spec, const std::string& rootfs,
                   const std::string& id) {
  namespace apb = ::runhcs::agent::v1;
  auto t0 = Clock::now();
  auto t = t0;
  auto mark = [&](const char* phase) {
    auto now = Clock::now();
    vm_phases[phase].push_back(Ms(now - t));
    t = now;
  };
  apb::CreateContainerRequest cc;
  cc.set_container_id(id);
  cc.set_spec_json(spec);
  cc.set_rootfs_path(rootfs);
  apb::Empty e;
  if (!agent->CreateContainer(cc, &e).ok()) return -1;
  mark("create");
  apb::StartContainerRequest sc;
  sc.set_container_id(id);
  apb::StartResponse sr;
  if (!agent->StartContainer(sc, &sr).ok()) return -1;
  mark("start");
  apb::WaitProcessRequest wr;
  wr.mutable_id()->set_container_id(id);
  apb::WaitProcessResponse w;
  if (!agent->WaitProcess(wr, &w).ok()) return -1;
  mark("wait");
  apb::RemoveContainerRequest rr;
  rr.set_container_id(id);
  if (!agent->RemoveContainer(rr, &e).ok()) return -1;
  mark("remove");
  return Ms(Clock::now() - t0);
}

}  // namespace
}  // namespace runhcs::bench

int main(int argc, char** argv) {
  using namespace runhcs;
  using namespace runhcs::bench;
  int runs = 5, lifecycles = 20, tcg_cache_mb = 0;
  std::string out_dir = "bench/results";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc)
      runs = std::stoi(argv[++i]);
    else if (a == "--lifecycles" && i + 1 < argc)
      lifecycles = std::stoi(argv[++i]);
    else if (a == "--out" && i + 1 < argc)
      out_dir = argv[++i];
    else if (a == "--tcg-cache" && i + 1 < argc)
      tcg_cache_mb = std::stoi(argv[++i]);
    else if (a == "--quick") {
      runs = 2;
      lifecycles = 5;
    } else {
      std::fprintf(stderr,
                   "usage: runhcs-vm-bench [--runs N] [--lifecycles N] [--out DIR] [--quick] "
                   "[--tcg-cache MB]\n");
      return 2;
    }
  }
  std::string scratch = testing::MakeTempDir("runhcs-vm-bench");
  // VM state and templates on tmpfs, as the shim keeps them (/run): a
  // memory file on disk would show as mapped files and cost page cache.
  std::string vms = "/dev/shm/runhcs-vm-bench.XXXXXX";
  if (!::mkdtemp(vms.data())) {
    std::fprintf(stderr, "cannot make a directory in /dev/shm\n");
    return 1;
  }
  if (!testing::MaskUnifiedControllersForCrun(scratch)) {
    std::fprintf(stderr, "cannot set up the private mount namespace (root needed)\n");
    return 1;
  }
  uvm::QemuConfig cfg;
  cfg.boot_dir = RUNHCS_BOOT_DIR;
  cfg.cpus = 0;  // by accelerator, as the shim's default (uvm::VmCpus)
  cfg.memory_mb = uvm::kDefaultVmMemoryMb;
  cfg.tcg_cache_mb = tcg_cache_mb;  // the option vmTcgCacheSizeInMb; 0: QEMU's
  cfg.console = [](const std::string&) {};
  struct Shape {
    std::string name;
    int cpus, memory_mb;
  };
  const std::vector<Shape> shapes = {
      {fmt::format("default, {} vCPU {} MiB", uvm::VmCpus(cfg, uvm::VmConfig::Accel::kTcg),
                   cfg.memory_mb),
       0, cfg.memory_mb},
      // What a second vCPU costs under TCG (see uvm::VmCpus).
      {"2 vCPU 1024 MiB", 2, 1024}};
  if (!MakeBareInitrd(scratch)) {
    std::fprintf(stderr, "cannot build the bare initramfs\n");
    return 1;
  }
  // The VM's boot files with the bare initramfs in the agent's place.
  RunCommand({"mkdir", "-p", scratch + "/bare-boot"});
  for (const char* f : {"/vmlinux", "/system.img"})
    (void)!::symlink((cfg.boot_dir + f).c_str(), (scratch + "/bare-boot" + f).c_str());
  (void)!::symlink((scratch + "/bare.img").c_str(), (scratch + "/bare-boot/initrd.img").c_str());
  // Setup with plain child processes, before the Reaper takes over waitpid.
  std::string rootfs = scratch + "/rootfs";
  testing::MakeBusyboxRootfs(rootfs);
  std::string bundle = scratch + "/bundle";
  RunCommand({"mkdir", "-p", bundle});
  RunCommand({"crun", "spec", "--bundle", bundle});
  auto spec = nlohmann::json::parse(testing::ReadFileOr(bundle + "/config.json", "{}"));
  spec["process"]["terminal"] = false;
  spec["process"]["args"] = {"/bin/true"};
  spec["root"] = {{"path", rootfs}, {"readonly", false}};
  (void)WriteFileAtomic(bundle + "/config.json", spec.dump(), 0644);
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);  // container inits started by crun create
  auto reaper = std::make_unique<PolledReaper>(std::chrono::milliseconds(1));
  struct Row {
    std::string what;
    double runhcs, reference, target;
  };
  std::vector<Row> rows;
  std::vector<std::string> notes;

  for (auto accel : {uvm::QemuConfig::Accel::kTcg, uvm::QemuConfig::Accel::kKvm}) {
    std::string name = accel == uvm::QemuConfig::Accel::kKvm ? "KVM" : "TCG";
    if (accel == uvm::QemuConfig::Accel::kKvm && ::access("/dev/kvm", R_OK | W_OK) != 0) {
      notes.push_back("KVM: no /dev/kvm.");
      continue;
    }
    bool kvm_failed = false;
    for (const Shape& shape : shapes) {
      uvm::QemuConfig c = cfg;
      c.cpus = shape.cpus;
      c.cpus = uvm::VmCpus(c, accel);
      c.memory_mb = shape.memory_mb;
      const std::string shape_name =
          shape.cpus > 0 ? shape.name
                         : fmt::format("default, {} vCPU {} MiB", c.cpus, shape.memory_mb);
      std::vector<double> bare, bare_devices, agent;
      for (int i = 0; i < runs + 1; ++i) {  // first run: warm-up
        double b = BareBoot(c, scratch + "/bare.img", accel);
        double bd = BareBootWithDevices(c, scratch + "/bare-boot", vms + "/bare", accel);
        VmBoot v = AgentBoot(c, vms + "/vm", accel);
        std::printf(
            "  %s %s boot %d: bare %.0f ms, bare with the VM's devices %.0f ms, "
            "agent-ready %.0f ms\n",
            name.c_str(), shape_name.c_str(), i, b, bd, v.ms);
        std::fflush(stdout);
        if (b < 0 || v.ms < 0) {
          if (accel == uvm::QemuConfig::Accel::kKvm) {
            kvm_failed = true;
            break;
          }
          continue;
        }
        if (i > 0) {
          bare.push_back(b);
          if (bd > 0) bare_devices.push_back(bd);
          agent.push_back(v.ms);
        }
      }
      if (kvm_failed) break;
      rows.push_back(
          {fmt::format("{} boot to agent-ready vs bare kernel to init, {} (ms)", name, shape_name),
           Median(agent), Median(bare), 1.1});
      if (!bare_devices.empty()) {
        rows.push_back({fmt::format("{} boot to agent-ready vs bare kernel to init with the VM's "
                                    "devices, {} (ms)",
                                    name, shape_name),
                        Median(agent), Median(bare_devices), 0});
      }
    }
    if (kvm_failed) {
      notes.push_back(
          "KVM: the guest did not reach init/the agent within 20 s on this host "
          "(nested KVM hangs or QEMU fails at early boot); no KVM figures.");
    }
  }

  // Memory: idle VMs of the default shape, each with its virtiofsd sharing
  // a directory (as every pod's VM has), after the guest settled.
  struct MemRow {
    std::string what;
    Pss pss;
    double target_mib;
  };
  std::vector<MemRow> mem;
  const std::string templates = vms + "/templates";
  auto measure_memory = [&](const std::string& how, const std::string& template_dir) {
    uvm::QemuConfig a = cfg, b = cfg;
    a.state_dir = vms + "/vm-mem-a";
    b.state_dir = vms + "/vm-mem-b";
    a.accel = b.accel = uvm::QemuConfig::Accel::kTcg;
    a.template_dir = b.template_dir = template_dir;
    uvm::QemuUtilityVm vm_a("bench-mem-a", a), vm_b("bench-mem-b", b);
    Status st = vm_a.Start();
    if (st.ok()) st = vm_a.Share(rootfs, "/run/bench-rootfs", true);
    if (st.ok()) {
      std::this_thread::sleep_for(std::chrono::seconds(5));
      Pss one = VmPss(a.state_dir);
      mem.push_back({"an idle VM" + how + ": QEMU + virtiofsd", one, 64});
      st = vm_b.Start();
      if (st.ok()) st = vm_b.Share(rootfs, "/run/bench-rootfs", true);
      if (st.ok()) {
        std::this_thread::sleep_for(std::chrono::seconds(5));
        Pss two = VmPss(a.state_dir);
        two += VmPss(b.state_dir);
        Pss more{two.total - one.total, two.shmem - one.shmem, two.anon - one.anon,
                 two.file - one.file};
        mem.push_back({"a second idle VM" + how + " adds", more, 32});
      }
    }
    if (!st.ok()) std::fprintf(stderr, "memory: %s\n", st.ToString().c_str());
    (void)vm_b.Close();
    (void)vm_a.Close();
  };

  // Pod start: what a VM pod's sandbox and first container cost before the
  // container runs: the VM to its agent, the rootfs shared, CreatePod, the
  // container created and started. Cold boots, then restores of a template
  // (the first run makes it: warm-up).
  auto sleeper = spec;
  sleeper["process"]["args"] = {"/bin/sleep", "1000"};
  // Per way (booted, restored) and phase, the measured runs' times.
  std::map<std::string, std::map<std::string, std::vector<double>>> pod_phases;
  const char* const kPodPhases[] = {"VM", "share", "CreatePod", "create", "start"};
  auto pod_start = [&](const std::string& template_dir, const std::string& id,
                       std::map<std::string, double>* phase_ms) -> double {
    namespace apb = ::runhcs::agent::v1;
    uvm::QemuConfig c = cfg;
    c.state_dir = vms + "/vm-pod";
    c.accel = uvm::QemuConfig::Accel::kTcg;
    c.template_dir = template_dir;
    auto t0 = Clock::now();
    auto t = t0;
    auto mark = [&](const char* phase) {
      auto now = Clock::now();
      (*phase_ms)[phase] = Ms(now - t);
      t = now;
    };
    uvm::QemuUtilityVm vm(id, c);
    Status st = vm.Start();
    mark("VM");
    if (st.ok()) st = vm.Share(rootfs, "/run/bench-rootfs", false);
    mark("share");
    apb::Empty e;
    if (st.ok()) {
      apb::CreatePodRequest cp;
      cp.set_hostname(id);
      apb::CreatePodResponse r;
      st = vm.agent()->CreatePod(cp, &r);
    }
    mark("CreatePod");
    if (st.ok()) {
      apb::CreateContainerRequest cc;
      cc.set_container_id(id);
      cc.set_spec_json(sleeper.dump());
      cc.set_rootfs_path("/run/bench-rootfs");
      st = vm.agent()->CreateContainer(cc, &e);
    }
    mark("create");
    if (st.ok()) {
      apb::StartContainerRequest sc;
      sc.set_container_id(id);
      apb::StartResponse sr;
      st = vm.agent()->StartContainer(sc, &sr);
    }
    mark("start");
    double ms = st.ok() ? Ms(Clock::now() - t0) : -1;
    if (!st.ok()) std::fprintf(stderr, "pod start: %s\n", st.ToString().c_str());
    (void)vm.Close();
    return ms;
  };
  struct PodRow {
    std::string what;
    double ms, target;
  };
  std::vector<PodRow> pods;
  for (const auto& [how, dir] : std::vector<std::pair<std::string, std::string>>{
           {"booted", ""}, {"restored from a template", templates}}) {
    std::vector<double> v;
    for (int i = 0; i < runs + 1; ++i) {
      std::map<std::string, double> phase_ms;
      double ms = pod_start(dir, "bench-pod-" + std::to_string(i), &phase_ms);
      std::string by_phase;
      for (const char* ph : kPodPhases) by_phase += fmt::format(", {} {:.0f}", ph, phase_ms[ph]);
      std::printf("  pod start %s %d: %.0f ms%s\n", how.c_str(), i, ms, by_phase.c_str());
      std::fflush(stdout);
      if (i > 0 && ms > 0) {
        v.push_back(ms);
        for (const char* ph : kPodPhases) pod_phases[how][ph].push_back(phase_ms[ph]);
      }
    }
    pods.push_back({fmt::format("VM pod start, {} (TCG, {})", how, shapes[0].name), Median(v),
                    dir.empty() ? 1500.0 : 500.0});
  }
  measure_memory("", "");
  measure_memory(" restored from a template", templates);

  // Container lifecycle: in a running VM vs on the host, same crun, same spec.
  std::vector<double> host, guest;
  {
    uvm::QemuConfig c = cfg;
    c.state_dir = vms + "/vm-run";
    c.accel = uvm::QemuConfig::Accel::kTcg;
    uvm::QemuUtilityVm vm("bench-run", c);
    Status st = vm.Start();
    if (st.ok()) st = vm.Share(rootfs, "/run/bench-rootfs", false);
    if (!st.ok()) {
      std::fprintf(stderr, "VM: %s\n", st.ToString().c_str());
    } else {
      for (int i = 0; i < lifecycles + 2; ++i) {  // interleaved; first two: warm-up
        double h = HostLifecycle(bundle, "bench-host-" + std::to_string(i));
        double g = VmLifecycle(vm.agent().get(), spec.dump(), "/run/bench-rootfs",
                               "bench-vm-" + std::to_string(i));
        std::printf("  lifecycle %d: host %.0f ms, VM %.0f ms\n", i, h, g);
        if (i >= 2 && h > 0 && g > 0) {
          host.push_back(h);
          guest.push_back(g);
        }
      }
      rows.push_back(
          {fmt::format("container lifecycle, VM (TCG, {}) vs host, crun (ms)", shapes[0].name),
           Median(guest), Median(host), 3.0});
    }
    (void)vm.Close();
  }
  reaper.reset();
  RunCommand({"rm", "-rf", scratch});
  RunCommand({"rm", "-rf", vms});

  ::mkdir(out_dir.c_str(), 0755);
  std::ofstream md(out_dir + "/vm.md");
  md << "# Utility VM costs\n\nGenerated by `runhcs-vm-bench` (bench/README.md). Medians of "
     << runs << " boots and " << lifecycles
     << " lifecycles, after warm-up; microvm (q35 for templates); the default shape first"
     << (tcg_cache_mb > 0 ? fmt::format("; TCG translation cache {} MiB", tcg_cache_mb) : "")
     << ".\n\n"
     << "| what | runhcs | reference | ratio | target | verdict |\n|---|---:|---:|---:|---:|---|\n";
  for (const auto& r : rows) {
    double ratio = r.reference > 0 ? r.runhcs / r.reference : 0;
    // Target 0: a row that explains another (no target of its own).
    md << fmt::format("| {} | {:.0f} | {:.0f} | {:.2f} | {} | {} |\n", r.what, r.runhcs,
                      r.reference, ratio, r.target > 0 ? fmt::format("<= {:.1f}", r.target) : "-",
                      r.target <= 0       ? "-"
                      : ratio <= r.target ? "met"
                                          : fmt::format("missed by {:.2f}", ratio - r.target));
    std::printf("%-60s %8.0f %8.0f ratio %.2f\n", r.what.c_str(), r.runhcs, r.reference, ratio);
  }
  md << "\nReferences: the bare boot is the same kernel, machine and command line with a busybox "
        "initramfs whose /init prints a line (the agent also loads virtio modules, finds its port "
        "and answers Ping); \"with the VM's devices\" boots that initramfs with the VM's own QEMU "
        "command line (its virtio devices and memory backend, its virtiofsd started first), so "
        "the ratio against it is the agent's own part of a boot; the host lifecycle is `crun "
        "create/start/delete` of the same spec on "
        "the host (the VM one is the agent's CreateContainer, StartContainer, WaitProcess, "
        "RemoveContainer: crun in the guest plus the channel round trips).\n";
  md << "\n| pod start | ms | target | verdict |\n|---|---:|---:|---|\n";
  for (const auto& p : pods) {
    md << fmt::format(
        "| {} | {:.0f} | <= {:.0f} | {} |\n", p.what, p.ms, p.target,
        p.ms > 0 && p.ms <= p.target ? "met" : fmt::format("missed by {:.0f} ms", p.ms - p.target));
    std::printf("%-60s %8.0f ms\n", p.what.c_str(), p.ms);
  }
  md << "\nPod start: the VM to its agent, the rootfs shared, the agent's CreatePod, then the "
        "first container (`sleep`) created and started; a restore includes copying the template's "
        "memory, loading its state, plugging the share device and the Restored call. By phase "
        "(median ms):";
  for (const auto& [how, phases] : pod_phases) {
    md << " " << how << ":";
    for (const char* ph : kPodPhases) md << fmt::format(" {} {:.0f};", ph, Median(phases.at(ph)));
  }
  md << "\n";
  md << "\n| memory (TCG, " << shapes[0].name
     << ") | PSS MiB | guest RAM | QEMU's own | files | target | verdict |\n"
     << "|---|---:|---:|---:|---:|---:|---|\n";
  for (const auto& m : mem) {
    double mib = m.pss.total / 1024.0;
    md << fmt::format(
        "| {} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | <= {:.0f} | {} |\n", m.what, mib,
        m.pss.shmem / 1024.0, m.pss.anon / 1024.0, m.pss.file / 1024.0, m.target_mib,
        mib <= m.target_mib ? "met" : fmt::format("missed by {:.1f}", mib - m.target_mib));
    std::printf("%-60s %8.1f MiB (guest RAM %.1f, QEMU %.1f, files %.1f)\n", m.what.c_str(), mib,
                m.pss.shmem / 1024.0, m.pss.anon / 1024.0, m.pss.file / 1024.0);
  }
  md << "\nMemory of the VM's QEMU and virtiofsd, 5 s after boot (or restore) and a share: guest "
        "RAM is the allocated size of the file backing it (QEMU's memfd, or a restored VM's own "
        "copy of the template's memory: what the guest holds on the host), QEMU's own its "
        "anonymous memory (TCG's translation cache, heap) in PSS, files the mapped binaries, "
        "libraries and boot files in PSS (shared between VMs, so split). A template's own memory "
        "file (one per VM shape and host) is not counted.\n";
  md << "\nIn-VM lifecycle by phase (median ms): ";
  for (const char* ph : {"create", "start", "wait", "remove"}) {
    md << fmt::format("{} {:.0f}; ", ph, Median(vm_phases[ph]));
    std::printf("  vm phase %s %.0f ms\n", ph, Median(vm_phases[ph]));
  }
  md << "\n";
  for (const auto& n : notes) md << "\n" << n << "\n";
  std::printf("results: %s/vm.md\n", out_dir.c_str());
  return rows.empty() || mem.empty() ? 1 : 0;
}
