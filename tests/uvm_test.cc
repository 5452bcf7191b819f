// The QEMU utility VM for real: boot to the agent (TCG, and auto with its
// KVM-to-TCG fallback), exec in the VM, shares, a QEMU killed under us, an
// agent that stops answering. Each test checks that nothing is left behind.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/io.h"
#include "base/polled_reaper.h"
#include "base/reaper.h"
#include "guest/guest_init.h"
#include "tests/subprocess.h"
#include "uvm/qemu_vm.h"

namespace runhcs::uvm {
namespace {

using testing::ReadFileOr;
using testing::TrimNewlines;

class UvmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { reaper_ = new PolledReaper(std::chrono::milliseconds(5)); }
  static void TearDownTestSuite() { delete reaper_; }
  void SetUp() override { dir_ = testing::MakeTempDir("runhcs-uvm-test"); }
  void TearDown() override { testing::RunCommand({"rm", "-rf", dir_}); }

  QemuConfig Config(QemuConfig::Accel accel = QemuConfig::Accel::kTcg) {
    QemuConfig c;
    c.boot_dir = RUNHCS_BOOT_DIR;
    c.state_dir = dir_ + "/vm";
    c.accel = accel;
    c.memory_mb = 384;
    c.console = [this](const std::string& line) {
      std::lock_guard<std::mutex> l(console_mu_);
      console_ += line + "\n";
    };
    return c;
  }
  // The guest keeps time with the TSC in high resolution, not with jiffies:
  // every clock read in the VM (a container's too) would step by a tick
  // (4 ms) and every sleep round up to one.
  void ExpectFineClock(QemuUtilityVm& vm) {
    // "tsc-early" until the kernel's refined calibration (~1 s in) makes it
    // "tsc": the same counter.
    std::string source =
        Run(vm, {"cat", "/sys/devices/system/clocksource/clocksource0/current_clocksource"}).second;
    EXPECT_TRUE(source == "tsc\n" || source == "tsc-early\n") << source;
    std::string res = Run(vm, {"sh", "-c", "grep -m1 resolution /proc/timer_list"}).second;
    EXPECT_NE(res.find(" 1 nsecs"), std::string::npos) << res;
  }
  // Runs argv in the VM; returns {exit code, stdout}.
  std::pair<int, std::string> Run(QemuUtilityVm& vm, std::vector<std::string> argv) {
    std::string out = dir_ + "/out-" + std::to_string(++runs_);
    containerd::runhcs::v1::diag::ExecProcessRequest r;
    for (auto& a : argv) r.add_args(a);
    r.set_stdout(out);
    (void)WriteFileAtomic(out, "", 0600);
    auto code = vm.ExecInUvm(r);
    EXPECT_TRUE(code.ok()) << code.status().ToString();
    return {code.ok() ? *code : -1, ReadFileOr(out)};
  }
  // Reads `path` in the guest until it reads `want` or 10 s pass (a host
  // change reaches the guest once its cached attributes expire); returns
  // the last read.
  std::string CatUntil(QemuUtilityVm& vm, const std::string& path, const std::string& want) {
    std::string seen;
    for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
         std::chrono::steady_clock::now() < until;) {
      seen = Run(vm, {"cat", path}).second;
      if (seen == want) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return seen;
  }
  // Waits up to 60 s until `times` console lines that start with `prefix`
  // have `text`; how many there were.
  int ConsoleUntil(const std::string& text, int times, const std::string& prefix = "") {
    for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);;) {
      int seen = ConsoleCount(text, prefix);
      if (seen >= times || std::chrono::steady_clock::now() >= until) return seen;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  int ConsoleCount(const std::string& text, const std::string& prefix = "") {
    std::lock_guard<std::mutex> l(console_mu_);
    int seen = 0;
    std::istringstream lines(console_);
    for (std::string line; std::getline(lines, line);)
      seen += line.rfind(prefix, 0) == 0 && line.find(text) != std::string::npos;
    return seen;
  }
  // Nothing of the VM is left: no QEMU, no virtiofsd, no state directory.
  void ExpectNothingLeft(pid_t qemu) {
    EXPECT_FALSE(testing::Alive(qemu)) << "qemu " << qemu << " still runs";
    EXPECT_NE(::access((dir_ + "/vm").c_str(), F_OK), 0)
        << "state dir left: " << testing::RunCommand({"ls", "-laR", dir_ + "/vm"}).out;
    auto left = testing::RunCommand({"pgrep", "-f", "virtiofsd.*" + dir_});
    EXPECT_EQ(left.out, "") << "virtiofsd left";
  }

  std::string dir_;
  int runs_ = 0;
  std::mutex console_mu_;
  std::string console_;
  static inline PolledReaper* reaper_ = nullptr;
};

TEST_F(UvmTest, BootsToAgentAndRunsInTheGuestKernel) {
  QemuUtilityVm vm("boot", Config());
  ASSERT_TRUE(vm.Start().ok()) << console_;
  EXPECT_EQ(vm.accel(), QemuConfig::Accel::kTcg);
  EXPECT_EQ(vm.Start().code(), Code::kFailedPrecondition);
  auto [code, out] = Run(vm, {"uname", "-r"});
  EXPECT_EQ(code, 0);
  utsname host;
  ::uname(&host);
  EXPECT_EQ(TrimNewlines(out),
            TrimNewlines(ReadFileOr(std::string(RUNHCS_BOOT_DIR) + "/kernel.release")));
  EXPECT_NE(TrimNewlines(out), host.release);
  EXPECT_EQ(Run(vm, {"/bin/sh", "-c", "exit 3"}).first, 3);
  // The VM's programs and later modules come from the read-only system
  // disk at /usr: crun runs, modprobe finds a module by name, nothing
  // there can be changed.
  auto [mcode, mounts] = Run(vm, {"cat", "/proc/mounts"});
  EXPECT_NE(mounts.find(" /usr ext4 ro,"), std::string::npos) << mounts;
  EXPECT_EQ(Run(vm, {"crun", "--version"}).first, 0);
  EXPECT_EQ(Run(vm, {"modprobe", "veth"}).first, 0);
  EXPECT_NE(Run(vm, {"cat", "/proc/modules"}).second.find("veth "), std::string::npos);
  EXPECT_NE(Run(vm, {"touch", "/usr/bin/new"}).first, 0);
  ExpectFineClock(vm);
  // The kernel took the command line's initcall_blacklist (a kernel that
  // renamed a step would ignore it): tracefs mounts, but without the files
  // of trace events (tracer_init_tracefs) or of kprobe events
  // (init_kprobe_trace); the files other steps make are there.
  std::string tracing = Run(vm, {"sh", "-c",
                                 "grep -q ' /sys/kernel/tracing ' /proc/mounts || "
                                 "mount -t tracefs tracefs /sys/kernel/tracing; "
                                 "ls /sys/kernel/tracing"})
                            .second;
  EXPECT_NE(tracing.find("uprobe_events"), std::string::npos) << tracing;
  EXPECT_EQ(tracing.find("available_events"), std::string::npos) << tracing;
  EXPECT_EQ(tracing.find("\nevents\n"), std::string::npos) << tracing;
  EXPECT_EQ(tracing.find("kprobe_events"), std::string::npos) << tracing;
  // One vCPU: no runtime warm-up (it would only compete with the first
  // container; the template test below runs it, on two), and nothing of
  // one: no files, no cgroup, no process.
  EXPECT_EQ(ConsoleCount("runtime warm-up"), 0) << console_;
  EXPECT_NE(Run(vm, {"ls", "/run/runhcs-warm-up"}).first, 0);
  EXPECT_NE(Run(vm, {"ls", "/sys/fs/cgroup/runhcs-warm-up"}).first, 0);
  EXPECT_EQ(Run(vm, {"sh", "-c", "ls /sys/fs/cgroup | grep -c warm"}).second, "0\n");
  EXPECT_EQ(Run(vm, {"sh", "-c", "ps -o comm | grep -c -e crun -e true"}).second, "0\n");
  auto stacks = vm.DumpStacks();
  ASSERT_TRUE(stacks.ok()) << stacks.status().ToString();
  EXPECT_NE(stacks->find("pid 1 (init)"), std::string::npos) << *stacks;
  auto stats = vm.Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_GT(stats->memory().working_set_bytes(), 0u);
  EXPECT_GT(stats->memory().vm_memory().assigned_memory(), 0u);
  pid_t qemu = vm.qemu_pid();
  ASSERT_TRUE(vm.Close().ok());
  EXPECT_TRUE(vm.Wait().ok());  // closed, not crashed
  EXPECT_TRUE(vm.Close().ok());
  ExpectNothingLeft(qemu);
  EXPECT_NE(console_.find("agent serving"), std::string::npos) << console_;
}

TEST_F(UvmTest, SharesAreVisibleAndReadOnlyWhenAsked) {
  std::string host = dir_ + "/share";
  ::mkdir(host.c_str(), 0755);
  ASSERT_TRUE(WriteFileAtomic(host + "/hello.txt", "from the host\n", 0644).ok());
  QemuUtilityVm vm("share", Config());
  ASSERT_TRUE(vm.Start().ok()) << console_;
  Status sh = vm.Share(host, "/mnt/ro", /*read_only=*/true);
  ASSERT_TRUE(sh.ok()) << sh.ToString() << console_;
  ASSERT_TRUE(vm.Share(host + "/hello.txt", "/etc/hello.txt", /*read_only=*/false).ok());
  EXPECT_EQ(Run(vm, {"cat", "/mnt/ro/hello.txt"}).second, "from the host\n");
  EXPECT_EQ(Run(vm, {"cat", "/etc/hello.txt"}).second, "from the host\n");
  EXPECT_NE(Run(vm, {"touch", "/mnt/ro/new"}).first, 0);
  EXPECT_NE(::access((host + "/new").c_str(), F_OK), 0);
  EXPECT_EQ(vm.Share(dir_ + "/missing", "/mnt/x", false).code(), Code::kNotFound);
  // Unshare ends it on the host: its mount point under the share root goes.
  ASSERT_TRUE(vm.Unshare("/mnt/ro").ok());
  EXPECT_NE(::access((dir_ + "/vm/shares/0").c_str(), F_OK), 0);
  EXPECT_EQ(vm.Unshare("/mnt/ro").code(), Code::kNotFound);
  EXPECT_EQ(Run(vm, {"cat", "/etc/hello.txt"}).second, "from the host\n");
  // A file's pages stay in the guest's page cache across opens while its
  // size and mtime are unchanged (an exec from a container's rootfs reads
  // and translates nothing again): a host write that keeps both is not seen.
  {
    std::string cached = host + "/cached.txt";
    ASSERT_TRUE(WriteFileAtomic(cached, "AAAA\n", 0644).ok());
    struct stat before;
    ASSERT_EQ(::stat(cached.c_str(), &before), 0);
    ASSERT_TRUE(vm.Share(cached, "/etc/cached.txt", /*read_only=*/true).ok());
    EXPECT_EQ(Run(vm, {"cat", "/etc/cached.txt"}).second, "AAAA\n");
    {
      std::fstream f(cached, std::ios::in | std::ios::out);
      f << "BBBB\n";
    }
    const timespec times[2] = {before.st_atim, before.st_mtim};
    ASSERT_EQ(::utimensat(AT_FDCWD, cached.c_str(), times, 0), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // attributes revalidated
    EXPECT_EQ(Run(vm, {"cat", "/etc/cached.txt"}).second, "AAAA\n");
  }
  // Shares cache with close-to-open consistency (attributes for up to a
  // second): a change the host makes in place reaches the guest's next
  // opens once that second is out; what the guest writes is on the host
  // when the write returns.
  {
    std::ofstream f(host + "/hello.txt", std::ios::trunc);
    f << "changed on the host\n";
  }
  EXPECT_EQ(CatUntil(vm, "/etc/hello.txt", "changed on the host\n"), "changed on the host\n");
  // A ConfigMap volume as kubelet updates it: a new timestamped directory,
  // the `..data` symlink swapped by rename, the old directory removed; the
  // key's path (key -> ..data/key) reads the new value in the guest.
  {
    std::string cm = dir_ + "/configmap";
    ASSERT_TRUE(MkdirAll(cm + "/..2026_12_03_1", 0755).ok());
    ASSERT_TRUE(WriteFileAtomic(cm + "/..2026_12_03_1/key", "v1\n", 0644).ok());
    ASSERT_EQ(::symlink("..2026_12_03_1", (cm + "/..data").c_str()), 0);
    ASSERT_EQ(::symlink("..data/key", (cm + "/key").c_str()), 0);
    ASSERT_TRUE(vm.Share(cm, "/etc/config", /*read_only=*/true).ok());
    EXPECT_EQ(Run(vm, {"cat", "/etc/config/key"}).second, "v1\n");
    ASSERT_TRUE(MkdirAll(cm + "/..2026_12_03_2", 0755).ok());
    ASSERT_TRUE(WriteFileAtomic(cm + "/..2026_12_03_2/key", "v2\n", 0644).ok());
    ASSERT_EQ(::symlink("..2026_12_03_2", (cm + "/..data_tmp").c_str()), 0);
    ASSERT_EQ(::rename((cm + "/..data_tmp").c_str(), (cm + "/..data").c_str()), 0);
    testing::RunCommand({"rm", "-rf", cm + "/..2026_12_03_1"});
    EXPECT_EQ(CatUntil(vm, "/etc/config/key", "v2\n"), "v2\n");
  }
  EXPECT_EQ(Run(vm, {"/bin/sh", "-c", "echo from the guest > /etc/hello.txt"}).first, 0);
  EXPECT_EQ(ReadFileOr(host + "/hello.txt"), "from the guest\n");
  pid_t qemu = vm.qemu_pid();
  ASSERT_TRUE(vm.Close().ok());
  ExpectNothingLeft(qemu);
  // The host files survive the share's removal.
  EXPECT_EQ(ReadFileOr(host + "/hello.txt"), "from the guest\n");
}

// Guest RAM QEMU holds on the host, in MiB: the allocated size of its
// memory-backend memfd (what the guest touched, less what went back).
int64_t GuestRamOnHostMb(pid_t qemu) {
  uint64_t b = GuestRamBytes(qemu);
  return b == 0 ? -1 : static_cast<int64_t>(b >> 20);
}

TEST_F(UvmTest, MemoryTheGuestFreesGoesBackToTheHost) {
  QemuConfig config = Config();
  config.memory_mb = 640;  // with less than 512 MiB usable the kernel has no huge pages
  QemuUtilityVm vm("balloon", config);
  ASSERT_TRUE(vm.Start().ok()) << console_;
  pid_t qemu = vm.qemu_pid();
  // A transparent huge page only where a process asks for one: each is 2 MiB
  // of host memory however little of it is touched.
  EXPECT_EQ(Run(vm, {"cat", "/sys/kernel/mm/transparent_hugepage/enabled"}).second,
            "always [madvise] never\n");
  // The agent's setup makes the guest report every free page (not only free
  // 2 MiB blocks) and keeps its per-CPU free lists small: once idle, what the
  // host holds for the guest's RAM is what the guest uses, not more.
  EXPECT_EQ(TrimNewlines(Run(vm, {"cat",
                                  "/sys/module/page_reporting/parameters/"
                                  "page_reporting_order"})
                             .second),
            "0");
  EXPECT_EQ(TrimNewlines(Run(vm, {"cat", "/proc/sys/vm/percpu_pagelist_high_fraction"}).second),
            std::to_string(guest::kPcpFraction));
  auto guest_used_mb = [&] {
    std::string mi = Run(vm, {"cat", "/proc/meminfo"}).second;
    size_t at = mi.find("MemFree:");
    return at == std::string::npos ? -1 : config.memory_mb - std::atol(mi.c_str() + at + 8) / 1024;
  };
  int64_t idle = GuestRamOnHostMb(qemu), used = guest_used_mb();
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
       std::chrono::steady_clock::now() < until && idle > used + 8;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    idle = GuestRamOnHostMb(qemu);
    used = guest_used_mb();
  }
  ASSERT_GT(idle, 0);
  ASSERT_GT(used, 0);
  EXPECT_LE(idle, used + 8) << "the host holds " << idle << " MiB for a guest using " << used;
  ASSERT_EQ(Run(vm, {"dd", "if=/dev/zero", "of=/run/fill", "bs=1M", "count=128"}).first, 0);
  int64_t full = GuestRamOnHostMb(qemu);
  EXPECT_GE(full, idle + 100) << "idle " << idle;
  ASSERT_EQ(Run(vm, {"rm", "/run/fill"}).first, 0);
  // Free page reporting hands freed 2 MiB blocks back within seconds.
  int64_t after = full;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
       std::chrono::steady_clock::now() < until && after > full - 96;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    after = GuestRamOnHostMb(qemu);
  }
  EXPECT_LE(after, full - 96) << "idle " << idle << " MiB, filled " << full << " MiB";
  ASSERT_TRUE(vm.Close().ok());
  ExpectNothingLeft(qemu);
}

// VM templating: the first VM of a shape boots once into a template and is
// restored from it; later ones only restore. Each gets its own identity and
// its share device; a template that no longer restores is discarded and the
// VM boots instead.
TEST_F(UvmTest, VmsFromATemplateHaveTheirOwnIdentityAndShares) {
  std::string host = dir_ + "/share";
  ::mkdir(host.c_str(), 0755);
  ASSERT_TRUE(WriteFileAtomic(host + "/hello.txt", "from the host\n", 0644).ok());
  auto config = [&](const std::string& name) {
    QemuConfig c = Config();
    c.state_dir = dir_ + "/" + name;
    c.template_dir = dir_ + "/templates";
    c.cpus = 2;  // the runtime warm-up needs a second CPU
    // Each VM's lines marked with its name (the template's are the first
    // VM's).
    c.console = [this, name](const std::string& line) {
      std::lock_guard<std::mutex> l(console_mu_);
      console_ += name + ": " + line + "\n";
    };
    return c;
  };
  auto cmdline = [](pid_t pid) {
    std::string c = ReadFileOr("/proc/" + std::to_string(pid) + "/cmdline");
    std::replace(c.begin(), c.end(), '\0', ' ');
    return c;
  };
  auto now_s = [] {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  struct Seen {
    std::string boot_id, random;
    int64_t clock_skew;
  };
  auto look = [&](QemuUtilityVm& vm) {
    ExpectFineClock(vm);
    Seen s;
    s.random = Run(vm, {"sh", "-c", "head -c 16 /dev/urandom | od -An -tx1"}).second;
    s.boot_id = Run(vm, {"cat", "/proc/sys/kernel/random/boot_id"}).second;
    s.clock_skew = std::atoll(Run(vm, {"date", "+%s"}).second.c_str()) - now_s();
    return s;
  };

  // A template an upgrade left behind (its kernel replaced since): making
  // the new one removes it.
  const std::string stale = dir_ + "/templates/0123456789abcdef";
  ASSERT_TRUE(MkdirAll(stale, 0700).ok());
  for (const char* f : {"/lock", "/state", "/memory"})
    ASSERT_TRUE(WriteFileAtomic(stale + f, "x", 0600).ok());
  ASSERT_TRUE(WriteFileAtomic(stale + "/inputs", dir_ + "/old-vmlinuz 1 2 3.4\n", 0600).ok());

  QemuUtilityVm a("tpl-a", config("a"));
  ASSERT_TRUE(a.Start().ok()) << console_;
  EXPECT_NE(cmdline(a.qemu_pid()).find("-incoming defer"), std::string::npos);
  EXPECT_NE(::access(stale.c_str(), F_OK), 0) << "stale template left";
  EXPECT_EQ(testing::RunCommand({"sh", "-c", "ls " + dir_ + "/templates/*/inputs | wc -l"}).out,
            "1\n");
  Seen sa = look(a);
  // Long enough after the template was saved for a clock left alone to show.
  std::this_thread::sleep_for(std::chrono::seconds(4));
  QemuUtilityVm b("tpl-b", config("b"));
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(b.Start().ok()) << console_;
  std::printf("restored from the template in %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - t0)
                                         .count()));
  EXPECT_NE(cmdline(b.qemu_pid()).find("-incoming defer"), std::string::npos);
  Seen sb = look(b);
  // Each restored VM warms the runtime again (nothing is translated after
  // a restore). The template's own warm-up (its lines are a's) had ended
  // before it was saved: one caught half-way would end once in each
  // restored VM instead, and a line still in the console's buffer would
  // come out of each again.
  EXPECT_EQ(ConsoleUntil("runtime warm-up done", 1, "b: "), 1) << console_;
  EXPECT_EQ(ConsoleUntil("runtime warm-up done", 2, "a: "), 2) << console_;
  EXPECT_EQ(ConsoleCount("runtime warm-up failed"), 0) << console_;
  EXPECT_EQ(ConsoleCount("setup done"), 1) << console_;
  EXPECT_NE(Run(b, {"ls", "/run/runhcs-warm-up"}).first, 0);
  EXPECT_NE(sa.random, sb.random);
  EXPECT_EQ(sa.random.size(), sb.random.size());
  EXPECT_EQ(TrimNewlines(sa.boot_id).size(), 36u) << sa.boot_id;
  EXPECT_NE(sa.boot_id, sb.boot_id);
  EXPECT_LE(std::abs(sa.clock_skew), 2) << "guest clock off by " << sa.clock_skew << " s";
  EXPECT_LE(std::abs(sb.clock_skew), 2) << "guest clock off by " << sb.clock_skew << " s";
  // The share device was plugged after the restore.
  ASSERT_TRUE(b.Share(host, "/mnt/h", /*read_only=*/false).ok()) << console_;
  EXPECT_EQ(Run(b, {"cat", "/mnt/h/hello.txt"}).second, "from the host\n");
  EXPECT_EQ(Run(b, {"sh", "-c", "echo from b > /mnt/h/b.txt"}).first, 0);
  EXPECT_EQ(ReadFileOr(host + "/b.txt"), "from b\n");
  // Neither VM's memory file is left by name while they run; the VM's
  // stats count all of it, touched since the restore or not.
  EXPECT_NE(::access((dir_ + "/b/memory").c_str(), F_OK), 0);
  int64_t ram_mb = GuestRamOnHostMb(b.qemu_pid());
  EXPECT_GT(ram_mb, 64);
  auto stats = b.Stats();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_GE(static_cast<int64_t>(stats->memory().working_set_bytes() >> 20), ram_mb);
  pid_t qa = a.qemu_pid(), qb = b.qemu_pid();
  ASSERT_TRUE(a.Close().ok());
  ASSERT_TRUE(b.Close().ok());
  EXPECT_FALSE(testing::Alive(qa));
  EXPECT_FALSE(testing::Alive(qb));
  for (const char* d : {"/a", "/b"}) EXPECT_NE(::access((dir_ + d).c_str(), F_OK), 0) << d;

  // A template this QEMU does not take: the VM boots, the template goes.
  std::string state = testing::RunCommand({"sh", "-c", "ls " + dir_ + "/templates/*/state"}).out;
  state = TrimNewlines(state);
  ASSERT_FALSE(state.empty());
  ASSERT_TRUE(WriteFileAtomic(state, "not a QEMU state stream", 0600).ok());
  QemuUtilityVm c("tpl-c", config("c"));
  ASSERT_TRUE(c.Start().ok()) << console_;
  EXPECT_EQ(cmdline(c.qemu_pid()).find("-incoming"), std::string::npos);
  EXPECT_EQ(Run(c, {"sh", "-c", "echo ok"}).second, "ok\n");
  EXPECT_NE(::access(state.c_str(), F_OK), 0) << "the broken template is still there";
  ASSERT_TRUE(c.Close().ok());
}

// Several VMs of a new shape at once (a node starting pods): one makes the
// template while the others wait for it, then all restore it.
TEST_F(UvmTest, VmsStartingTogetherMakeOneTemplate) {
  std::vector<std::unique_ptr<QemuUtilityVm>> vms;
  for (const char* name : {"t1", "t2"}) {
    QemuConfig c = Config();
    c.state_dir = dir_ + "/" + name;
    c.template_dir = dir_ + "/templates";
    vms.push_back(std::make_unique<QemuUtilityVm>(name, c));
  }
  std::vector<Status> started(vms.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < vms.size(); ++i)
    threads.emplace_back([&, i] { started[i] = vms[i]->Start(); });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < vms.size(); ++i) {
    ASSERT_TRUE(started[i].ok()) << started[i].ToString() << console_;
    std::string cmd = ReadFileOr("/proc/" + std::to_string(vms[i]->qemu_pid()) + "/cmdline");
    EXPECT_NE(cmd.find("-incoming"), std::string::npos) << "VM " << i << " booted\n" << console_;
    EXPECT_EQ(Run(*vms[i], {"sh", "-c", "echo ok"}).second, "ok\n");
  }
  auto made = testing::RunCommand({"sh", "-c", "ls -d " + dir_ + "/templates/*/state | wc -l"});
  EXPECT_EQ(TrimNewlines(made.out), "1");
  for (auto& vm : vms) ASSERT_TRUE(vm->Close().ok());
}

TEST_F(UvmTest, QemuKilledEndsWaitWithAnErrorAndLeavesNothing) {
  QemuUtilityVm vm("kill", Config());
  ASSERT_TRUE(vm.Start().ok()) << console_;
  ASSERT_TRUE(vm.Share(dir_, "/mnt/d", false).ok());
  pid_t qemu = vm.qemu_pid();
  ASSERT_EQ(::kill(qemu, SIGKILL), 0);
  Status st = vm.Wait();
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  ExpectNothingLeft(qemu);
  containerd::runhcs::v1::diag::ExecProcessRequest r;
  r.add_args("true");
  EXPECT_EQ(vm.ExecInUvm(r).status().code(), Code::kFailedPrecondition);
  EXPECT_TRUE(vm.Close().ok());
}

TEST_F(UvmTest, AnAgentThatStopsAnsweringGivesDeadlineExceeded) {
  QemuUtilityVm vm("stall", Config());
  ASSERT_TRUE(vm.Start().ok()) << console_;
  pid_t qemu = vm.qemu_pid();
  ASSERT_EQ(::kill(qemu, SIGSTOP), 0);  // the whole VM, agent included, stops
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(vm.DumpStacks().status().code(), Code::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  ::kill(qemu, SIGCONT);
  ASSERT_TRUE(vm.Close().ok());
  ExpectNothingLeft(qemu);
}

TEST_F(UvmTest, AutoAcceleratorReachesTheAgent) {
  QemuConfig c = Config(QemuConfig::Accel::kAuto);
  c.kvm_probe_timeout = std::chrono::milliseconds(4000);
  c.kvm_verdict_file = dir_ + "/verdict/kvm-unusable";
  QemuUtilityVm vm("auto", c);
  ASSERT_TRUE(vm.Start().ok()) << console_;
  // Whichever it got (KVM hangs at early boot on nested hosts; then TCG),
  // the guest works.
  EXPECT_EQ(Run(vm, {"/bin/sh", "-c", "echo ok"}).second, "ok\n");
  const bool kvm_failed = vm.accel() == QemuConfig::Accel::kTcg;
  const bool kvm_tried = ::access("/dev/kvm", R_OK | W_OK) == 0;
  EXPECT_EQ(vm.boot_attempts(), kvm_tried && kvm_failed ? 2 : 1);
  pid_t qemu = vm.qemu_pid();
  ASSERT_TRUE(vm.Close().ok());
  ExpectNothingLeft(qemu);
  EXPECT_EQ(testing::RunCommand({"pgrep", "-f", "qemu-system.*" + dir_}).out, "");
  // A KVM boot that failed where TCG booted is remembered: the next auto VM
  // on the host boots TCG at once. A KVM that worked leaves no verdict.
  if (!(kvm_tried && kvm_failed)) {
    EXPECT_NE(::access(c.kvm_verdict_file.c_str(), F_OK), 0);
    return;
  }
  // Why KVM failed (QEMU gone, or an agent that never answered).
  EXPECT_NE(ReadFileOr(c.kvm_verdict_file).find("(kvm)"), std::string::npos)
      << ReadFileOr(c.kvm_verdict_file);
  c.state_dir = dir_ + "/vm2";
  QemuUtilityVm next("auto2", c);
  ASSERT_TRUE(next.Start().ok()) << console_;
  EXPECT_EQ(next.accel(), QemuConfig::Accel::kTcg);
  EXPECT_EQ(next.boot_attempts(), 1);
  EXPECT_EQ(Run(next, {"/bin/sh", "-c", "echo ok"}).second, "ok\n");
  pid_t qemu2 = next.qemu_pid();
  ASSERT_TRUE(next.Close().ok());
  EXPECT_FALSE(testing::Alive(qemu2));
}

}  // namespace
}  // namespace runhcs::uvm
