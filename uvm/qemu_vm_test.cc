// The QEMU command line; booting real VMs is tests/uvm_test.cc.
#include "uvm/qemu_vm.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/fd.h"
#include "base/io.h"

namespace runhcs::uvm {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

std::string After(const std::vector<std::string>& args, const std::string& flag, int nth = 0) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == flag && nth-- == 0) return args[i + 1];
  }
  return "";
}

QemuConfig Config() {
  QemuConfig c;
  c.boot_dir = "/boot/x";
  c.state_dir = "/run/vm1";
  c.cpus = 2;
  c.memory_mb = 768;
  return c;
}

// The one virtiofsd argv, the VM's and the bench's reference boot's: the
// socket QEMU's vhost-user-fs chardev names, the shares directory, the
// page-cache-keeping cache mode.
TEST(VirtiofsdArgs, ListensWhereQemuConnectsAndExportsTheShares) {
  QemuConfig c = Config();
  auto a = VirtiofsdArgs(c);
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a[0], c.virtiofsd);
  EXPECT_THAT(a, Contains("--socket-path=/run/vm1/fs.sock"));
  EXPECT_THAT(a, Contains("source=/run/vm1/shares"));
  EXPECT_THAT(a, Contains("cache=always,timeout=1,sandbox=chroot"));
  EXPECT_THAT(QemuArgs(c, QemuConfig::Accel::kTcg, 0),
              Contains("socket,id=fs,path=/run/vm1/fs.sock"));
}

// microvm: virtio-mmio devices, but the agent's channel on PCIe (virtio-mmio
// would give its console driver 1024-entry receive queues, a page each).
TEST(QemuArgs, MicrovmTcgGetsTscAndItsChannelOnPci) {
  auto a = QemuArgs(Config(), QemuConfig::Accel::kTcg, 2596098);
  EXPECT_EQ(After(a, "-M"), "microvm,isa-serial=on,rtc=on,pcie=on,memory-backend=mem");
  // One thread for every vCPU: see QemuArgs on patched kernel text.
  EXPECT_EQ(After(a, "-accel"), "tcg,thread=single");
  EXPECT_EQ(After(a, "-cpu"), "max");
  EXPECT_EQ(After(a, "-smp"), "2");
  EXPECT_EQ(After(a, "-m"), "768");
  EXPECT_THAT(After(a, "-append"), HasSubstr("tsc_early_khz=2596098"));
  EXPECT_THAT(After(a, "-append"), HasSubstr("tsc=reliable"));
  EXPECT_THAT(After(a, "-append"), ::testing::Not(HasSubstr("pci=off")));
  EXPECT_THAT(After(a, "-append"), HasSubstr("cryptomgr.notests"));
  EXPECT_THAT(After(a, "-append"),
              HasSubstr("initcall_blacklist=tracer_init_tracefs,init_kprobe_trace,"
                        "crypto_kdf108_init"));
  EXPECT_THAT(After(a, "-append"), HasSubstr("transparent_hugepage=madvise"));
  EXPECT_EQ(After(a, "-kernel"), "/boot/x/vmlinux");
  EXPECT_EQ(After(a, "-initrd"), "/boot/x/initrd.img");
  EXPECT_THAT(a, Contains("-nodefaults"));
  EXPECT_THAT(a, Contains("virtio-serial-pci,max_ports=2"));
  EXPECT_THAT(a, ::testing::Not(Contains("virtio-serial-device,max_ports=2")));
  EXPECT_THAT(a, Contains("virtserialport,chardev=agent,id=agent-port,name=runhcs.agent"));
  EXPECT_THAT(a, Contains("socket,id=agent,path=/run/vm1/agent.sock,server=on,wait=off"));
  EXPECT_THAT(a, Contains("vhost-user-fs-device,chardev=fs,tag=runhcs"));
  EXPECT_THAT(a, Contains("memory-backend-memfd,id=mem,size=768M,share=on"));
  EXPECT_THAT(a, Contains("virtio-balloon-device,free-page-reporting=on"));
  EXPECT_EQ(After(a, "-drive"), "file=/boot/x/system.img,if=none,id=system,format=raw,readonly=on");
  EXPECT_THAT(a, Contains("virtio-blk-device,drive=system,serial=runhcs-system"));
  EXPECT_EQ(After(a, "-qmp"), "unix:/run/vm1/qmp.sock,server=on,wait=off");
}

// A comma in a path would end QEMU's option value: it is doubled.
TEST(QemuArgs, CommasInPathsAreEscaped) {
  QemuConfig c = Config();
  c.boot_dir = "/opt/a,b";
  c.state_dir = "/run/x,y";
  auto a = QemuArgs(c, QemuConfig::Accel::kTcg, 0);
  EXPECT_EQ(After(a, "-drive"),
            "file=/opt/a,,b/system.img,if=none,id=system,format=raw,readonly=on");
  EXPECT_THAT(a, Contains("socket,id=agent,path=/run/x,,y/agent.sock,server=on,wait=off"));
  EXPECT_EQ(After(a, "-qmp"), "unix:/run/x,,y/qmp.sock,server=on,wait=off");
  EXPECT_EQ(After(a, "-kernel"), "/opt/a,b/vmlinux");  // not an option list
}

TEST(QemuArgs, KvmUsesHostCpuAndQ35UsesPciDevices) {
  QemuConfig c = Config();
  c.machine = QemuConfig::Machine::kQ35;
  c.tcg_cache_mb = 32;  // a TCG setting: not for KVM
  auto a = QemuArgs(c, QemuConfig::Accel::kKvm, 0);
  EXPECT_EQ(After(a, "-M"), "q35,memory-backend=mem");
  EXPECT_EQ(After(a, "-accel"), "kvm");
  EXPECT_EQ(After(a, "-cpu"), "host");
  EXPECT_THAT(After(a, "-append"), ::testing::Not(HasSubstr("tsc_early_khz")));
  EXPECT_THAT(After(a, "-append"), ::testing::Not(HasSubstr("pci=off")));
  // kvm-clock, not the TSC, keeps a KVM guest's time.
  EXPECT_THAT(After(QemuArgs(c, QemuConfig::Accel::kKvm, 2596098), "-append"),
              ::testing::Not(HasSubstr("tsc=reliable")));
  EXPECT_THAT(a, Contains("virtio-serial-pci,max_ports=2"));
  EXPECT_THAT(a, Contains("vhost-user-fs-pci,chardev=fs,tag=runhcs"));
  EXPECT_THAT(a, Contains("virtio-balloon-pci,free-page-reporting=on"));
  EXPECT_THAT(a, Contains("virtio-blk-pci,drive=system,serial=runhcs-system"));
}

// Unset vCPUs follow the accelerator: TCG runs every vCPU on one host
// thread, so it gets one; KVM gets the host default. A set count is kept.
TEST(QemuArgs, UnsetCpusAreOneUnderTcgAndTheHostDefaultUnderKvm) {
  QemuConfig c = Config();
  c.cpus = 0;
  EXPECT_EQ(After(QemuArgs(c, QemuConfig::Accel::kTcg, 0), "-smp"), "1");
  EXPECT_EQ(After(QemuArgs(c, QemuConfig::Accel::kKvm, 0), "-smp"),
            std::to_string(DefaultVmCpus()));
  c.cpus = 3;
  EXPECT_EQ(After(QemuArgs(c, QemuConfig::Accel::kTcg, 0), "-smp"), "3");
  EXPECT_EQ(After(QemuArgs(c, QemuConfig::Accel::kKvm, 0), "-smp"), "3");
}

TEST(QemuArgs, TcgCacheSizeIsTheAcceleratorsTbSize) {
  QemuConfig c = Config();
  c.tcg_cache_mb = 32;
  EXPECT_EQ(After(QemuArgs(c, QemuConfig::Accel::kTcg, 0), "-accel"),
            "tcg,thread=single,tb-size=32");
}

TEST(QemuArgs, EachNicIsAVirtioNetOnItsTapFdWithItsMac) {
  QemuConfig c = Config();
  EXPECT_THAT(QemuArgs(c, QemuConfig::Accel::kTcg, 0), ::testing::Not(Contains("-netdev")));
  c.nics = {{40, "0e:ae:86:14:6b:1c"}, {41, "0e:00:00:00:00:02"}};
  auto a = QemuArgs(c, QemuConfig::Accel::kTcg, 0);
  // The fds are the child's 3 and 4, whatever they are in the shim.
  EXPECT_EQ(After(a, "-netdev", 0), "tap,id=net0,fd=3,vhost=off");
  EXPECT_EQ(After(a, "-netdev", 1), "tap,id=net1,fd=4,vhost=off");
  EXPECT_THAT(a, Contains("virtio-net-device,netdev=net0,mac=0e:ae:86:14:6b:1c"));
  EXPECT_THAT(a, Contains("virtio-net-device,netdev=net1,mac=0e:00:00:00:00:02"));
  c.machine = QemuConfig::Machine::kQ35;
  EXPECT_THAT(QemuArgs(c, QemuConfig::Accel::kTcg, 0),
              Contains("virtio-net-pci,netdev=net0,mac=0e:ae:86:14:6b:1c"));
}

TEST(QemuVm, StartWithoutBootFilesIsNotFoundAndLeavesNothing) {
  QemuConfig c = Config();
  c.boot_dir = ::testing::TempDir() + "/no-such-boot-dir";
  c.state_dir = ::testing::TempDir() + "/vm-state-nf";
  QemuUtilityVm vm("t", c);
  EXPECT_EQ(vm.Start().code(), Code::kNotFound);
  EXPECT_NE(::access(c.state_dir.c_str(), F_OK), 0);
  EXPECT_TRUE(vm.Close().ok());
  EXPECT_TRUE(vm.Close().ok());  // idempotent

  // A boot dir of an older build (no system disk) names what is missing.
  c.boot_dir = ::testing::TempDir() + "/old-boot-dir";
  ASSERT_TRUE(MkdirAll(c.boot_dir, 0755).ok());
  for (const char* f : {"/vmlinux", "/initrd.img"})
    ASSERT_TRUE(WriteFileAtomic(c.boot_dir + f, "x", 0644).ok());
  QemuUtilityVm old("t", c);
  Status st = old.Start();
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_NE(st.message().find("system.img"), std::string::npos) << st.ToString();
  EXPECT_NE(::access(c.state_dir.c_str(), F_OK), 0);
}

TEST(QemuVm, AQemuThatExitsDuringBootIsUnavailableWithWhatItSaid) {
  const std::string dir = ::testing::TempDir() + "/qemu-exits";
  ASSERT_TRUE(MkdirAll(dir + "/boot", 0755).ok());
  for (const char* f : {"/vmlinux", "/initrd.img", "/system.img"})
    ASSERT_TRUE(WriteFileAtomic(dir + "/boot" + f, "x", 0644).ok());
  // As QEMU reports an accelerator it cannot use: on stderr, prefixed with
  // its name, then gone.
  ASSERT_TRUE(WriteFileAtomic(dir + "/qemu-fake",
                              "#!/bin/sh\n"
                              "echo 'not a qemu message'\n"
                              "echo 'qemu-fake: error: failed to set MSR 0x10a to 0x69' >&2\n"
                              "exit 1\n",
                              0755)
                  .ok());
  QemuConfig c = Config();
  c.qemu = dir + "/qemu-fake";
  c.boot_dir = dir + "/boot";
  c.state_dir = dir + "/vm";
  c.accel = QemuConfig::Accel::kTcg;
  c.console = [](const std::string&) {};
  QemuUtilityVm vm("t", c);
  Status st = vm.Start();
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_THAT(st.message(), HasSubstr("qemu exited during boot (tcg): qemu-fake: error: failed to "
                                      "set MSR 0x10a to 0x69"));
  EXPECT_THAT(st.message(), ::testing::Not(HasSubstr("not a qemu message")));
  EXPECT_NE(::access(c.state_dir.c_str(), F_OK), 0);  // nothing left
  EXPECT_TRUE(vm.Close().ok());
}

TEST(QemuVm, CallsBeforeStartAreFailedPrecondition) {
  QemuUtilityVm vm("t", Config());
  EXPECT_EQ(vm.Share("/tmp", "/mnt", false).code(), Code::kFailedPrecondition);
  EXPECT_EQ(vm.DumpStacks().status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(vm.Share("relative", "/mnt", false).code(), Code::kInvalidArgument);
  EXPECT_EQ(vm.Share("/nonexistent/path", "/mnt", false).code(), Code::kNotFound);
  containerd::runhcs::v1::diag::ExecProcessRequest r;
  r.add_args("uname");
  EXPECT_EQ(vm.ExecInUvm(r).status().code(), Code::kFailedPrecondition);
}

TEST(KvmVerdict, IsRecentUntilItsTtlAndMissingOrStaleMeansTryKvm) {
  const std::string file = ::testing::TempDir() + "/kvm-verdict-test/sub/kvm-unusable";
  ::unlink(file.c_str());
  EXPECT_EQ(RecentKvmFailure(file, std::chrono::seconds(900)), std::nullopt);
  ASSERT_TRUE(RecordKvmFailure(file, "the agent did not answer within 6000 ms (kvm)").ok());
  EXPECT_EQ(RecentKvmFailure(file, std::chrono::seconds(900)),
            "the agent did not answer within 6000 ms (kvm)");
  // Written 20 minutes ago: stale for a 15-minute TTL, recent for an hour's.
  timespec then[2];
  ::clock_gettime(CLOCK_REALTIME, &then[0]);
  then[0].tv_sec -= 20 * 60;
  then[1] = then[0];
  ASSERT_EQ(::utimensat(AT_FDCWD, file.c_str(), then, 0), 0);
  EXPECT_EQ(RecentKvmFailure(file, std::chrono::seconds(900)), std::nullopt);
  EXPECT_NE(RecentKvmFailure(file, std::chrono::seconds(3600)), std::nullopt);
  // Recording again starts the TTL over.
  ASSERT_TRUE(RecordKvmFailure(file, "again").ok());
  EXPECT_EQ(RecentKvmFailure(file, std::chrono::seconds(900)), "again");
  ::unlink(file.c_str());
}

TEST(Templates, OnlyProvablyStaleUnusedOnesAreRemoved) {
  const std::string root = ::testing::TempDir() + "/templates-stale";
  std::filesystem::remove_all(root);
  const std::string kernel = root + "-kernel";
  ASSERT_TRUE(WriteFileAtomic(kernel, "kernel v1", 0644).ok());
  struct stat st {};
  ASSERT_EQ(::stat(kernel.c_str(), &st), 0);
  const std::string current = fmt::format("{} {} {} {}.{}\n", kernel, st.st_ino, st.st_size,
                                          st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  auto make = [&](const std::string& name, const std::string* inputs) {
    ASSERT_TRUE(MkdirAll(root + "/" + name, 0700).ok());
    for (const char* f : {"/lock", "/state", "/memory"})
      ASSERT_TRUE(WriteFileAtomic(root + "/" + name + f, "x", 0600).ok());
    if (inputs) {
      ASSERT_TRUE(WriteFileAtomic(root + "/" + name + "/inputs", *inputs, 0600).ok());
    }
  };
  const std::string replaced = current + "/no/such/qemu 1 2 3.4\n";
  make("current", &current);
  make("kept", &replaced);  // stale, but the one being made
  make("stale", &replaced);
  make("restoring", &replaced);
  make("unrecorded", nullptr);
  // A restore from it holds `inuse` shared (flock locks belong to the open
  // file, so this one conflicts with the sweep's own open).
  UniqueFd inuse(::open((root + "/restoring/inuse").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(inuse);
  ASSERT_EQ(::flock(inuse.get(), LOCK_SH), 0);
  EXPECT_EQ(RemoveStaleTemplates(root, root + "/kept"), 1);
  auto there = [&](const std::string& name) {
    return ::access((root + "/" + name).c_str(), F_OK) == 0;
  };
  EXPECT_FALSE(there("stale"));
  EXPECT_TRUE(there("current"));
  EXPECT_TRUE(there("kept"));
  EXPECT_TRUE(there("restoring"));
  EXPECT_TRUE(there("unrecorded"));
  inuse.reset();
  // Once nobody restores from it, it goes too; so do the one kept before
  // and one whose kernel was replaced since.
  ASSERT_TRUE(WriteFileAtomic(kernel, "kernel v2", 0644).ok());
  EXPECT_EQ(RemoveStaleTemplates(root, ""), 3);
  EXPECT_FALSE(there("restoring"));
  EXPECT_FALSE(there("current"));
  EXPECT_FALSE(there("kept"));
  EXPECT_TRUE(there("unrecorded"));
  std::filesystem::remove_all(root);
  ::unlink(kernel.c_str());
}

TEST(HostTscKhz, IsReadFromTheHost) {
  // x86 Linux always reports "cpu MHz" in /proc/cpuinfo.
  int64_t k = HostTscKhz();
  EXPECT_GT(k, 100000);
  EXPECT_LT(k, 10000000);
}

// A VM with one NIC, in a templating mode.
QemuConfig Templating(QemuConfig::Mode mode, const std::string& memory_file) {
  QemuConfig c = Config();
  c.nics = {{40, "0e:00:00:00:00:01"}};
  c.mode = mode;
  c.memory_file = memory_file;
  return c;
}

TEST(QemuArgs, ATemplateIsQ35OverItsFileWithRootPortsAndNothingUnsaveable) {
  auto a = QemuArgs(Templating(QemuConfig::Mode::kTemplate, "/t/memory.new"),
                    QemuConfig::Accel::kTcg, 2596098);
  EXPECT_EQ(After(a, "-M"), "q35,memory-backend=mem");
  EXPECT_THAT(a, Contains("memory-backend-file,id=mem,size=768M,mem-path=/t/memory.new,share=on"));
  EXPECT_THAT(a, Contains("pcie-root-port,id=rp0,chassis=1,port=0x10,bus=pcie.0,addr=0x10"));
  EXPECT_THAT(a, Contains("pcie-root-port,id=rp3,chassis=4,port=0x13,bus=pcie.0,addr=0x13"));
  EXPECT_THAT(a, Contains("virtio-serial-pci,max_ports=2"));
  EXPECT_THAT(a, Contains("virtio-balloon-pci,free-page-reporting=on"));
  // vhost-user cannot be saved; NICs are plugged after a restore.
  for (const auto& arg : a) {
    EXPECT_THAT(arg, ::testing::Not(HasSubstr("vhost-user-fs")));
    EXPECT_THAT(arg, ::testing::Not(HasSubstr("id=fs")));
    EXPECT_THAT(arg, ::testing::Not(HasSubstr("virtio-net")));
  }
  EXPECT_THAT(a, ::testing::Not(Contains("-netdev")));
  EXPECT_THAT(a, ::testing::Not(Contains("-incoming")));
}

TEST(QemuArgs, ARestoreMatchesTheTemplatesDevicesWithBackendsOnlyAndWaits) {
  auto t =
      QemuArgs(Templating(QemuConfig::Mode::kTemplate, "/t/memory"), QemuConfig::Accel::kTcg, 0);
  auto r = QemuArgs(Templating(QemuConfig::Mode::kRestore, "/run/vm1/memory"),
                    QemuConfig::Accel::kTcg, 0);
  EXPECT_EQ(After(r, "-incoming"), "defer");
  EXPECT_THAT(r,
              Contains("memory-backend-file,id=mem,size=768M,mem-path=/run/vm1/memory,share=on"));
  EXPECT_THAT(r, Contains("socket,id=fs,path=/run/vm1/fs.sock"));
  EXPECT_EQ(After(r, "-netdev"), "tap,id=net0,fd=3,vhost=off");
  // Same devices, in the same order: what the saved state describes.
  auto devices = [](const std::vector<std::string>& a) {
    std::vector<std::string> d;
    for (size_t i = 0; i + 1 < a.size(); ++i)
      if (a[i] == "-device") d.push_back(a[i + 1]);
    return d;
  };
  EXPECT_EQ(devices(t), devices(r));
  EXPECT_EQ(After(t, "-M"), After(r, "-M"));
  EXPECT_EQ(After(t, "-smp"), After(r, "-smp"));
}

// OnGone's registry: each callback once, with the VM's end; none after its
// Cancel; one added after the end runs at once; a callback may use the
// registry (it runs without its lock).
TEST(GoneCallbacks, EachRunsOnceUnlessCancelledAndLateOnesRunAtOnce) {
  GoneCallbacks g;
  std::vector<std::string> ran;
  int kept = g.Add([&](const Status& why) { ran.push_back("kept:" + why.message()); });
  int dropped = g.Add([&](const Status&) { ran.push_back("dropped"); });
  g.Add([&](const Status&) {
    ran.push_back("reentrant");
    g.Cancel(dropped);
    (void)g.size();
  });
  EXPECT_GT(kept, 0);
  g.Cancel(dropped);
  EXPECT_EQ(g.size(), 2u);
  g.Fire(UnavailableError("qemu exited"));
  g.Fire(UnavailableError("again"));
  EXPECT_EQ(ran, (std::vector<std::string>{"kept:qemu exited", "reentrant"}));
  EXPECT_EQ(g.size(), 0u);
  EXPECT_EQ(g.Add([&](const Status& why) { ran.push_back("late:" + why.message()); }), 0);
  EXPECT_EQ(ran.back(), "late:qemu exited");
}

}  // namespace
}  // namespace runhcs::uvm
