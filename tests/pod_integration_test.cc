// Pods as containerd's CRI shapes them, driven with plain `ctr` and the CRI
// annotations: one shim per pod; in a hypervisor-isolated pod the fake
// sandbox task owns the one VM every workload runs in.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <sstream>
#include <thread>

#include "base/io.h"
#include "base/sha256.h"
#include "tests/pod_fixture.h"
#include "tests/subprocess.h"

namespace runhcs::testing {
namespace {

using namespace std::chrono_literals;

using PodTest = PodFixture;

TEST_F(PodTest, HypervisorPodIsOneShimAndOneVmForAllItsContainers) {
  StartPod("pod1", {"pod1-a", "pod1-b"}, /*hypervisor=*/true);
  EXPECT_EQ(CountProcesses("containerd-shim-runhcs-v1 .*-id pod1 "), 1);
  EXPECT_EQ(CountProcesses("containerd-shim-runhcs-v1 .*-id pod1-"),
            0);  // workloads joined, spawned nothing
  EXPECT_EQ(CountProcesses("qemu-system.*" + VmDir("pod1")), 1);
  std::string a = BootId("pod1-a", "x1"), b = BootId("pod1-b", "x2");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, b);  // the same VM
  EXPECT_NE(a, TrimNewlines(ReadFileOr("/proc/sys/kernel/random/boot_id")));
  // A workload ending leaves the pod (and its shim and VM) running.
  Remove({"pod1-b"});
  EXPECT_EQ(ctrd_.TaskStatus("pod1-a"), "RUNNING");
  EXPECT_EQ(CountProcesses("qemu-system.*" + VmDir("pod1")), 1);
  Remove({"pod1-a", "pod1"});
  EXPECT_TRUE(
      WaitFor([] { return CountProcesses("containerd-shim-runhcs-v1 .*-id pod1 ") == 0; }, 10s));
}

TEST_F(PodTest, AWorkloadsBindMountsAreSharedWhileItRunsAndGoWithIt) {
  std::string dir = ctrd_.dir() + "/pod-vol";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  ASSERT_TRUE(WriteFileAtomic(dir + "/hello", "volume\n", 0644).ok());
  auto shares = [] {
    std::stringstream ss(ReadFileOr("/proc/self/mountinfo"));
    int n = 0;
    for (std::string line; std::getline(ss, line);)
      n += line.find(VmDir("pod5") + "/shares/") != std::string::npos;
    return n;
  };
  StartPod("pod5", {}, /*hypervisor=*/true);
  int before = shares();
  std::vector<std::string> flags = Cri("container", "pod5", false);
  flags.insert(flags.end(), {"--mount", "type=bind,src=" + dir + ",dst=/data,options=rbind:ro"});
  RunDetached("pod5-a", flags);
  EXPECT_EQ(shares(), before + 2);  // its rootfs and its volume
  RunResult r = ctrd_.Ctr({"task", "exec", "--exec-id", "x1", "pod5-a", "/bin/cat", "/data/hello"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "volume\n");
  Remove({"pod5-a"});
  EXPECT_EQ(shares(), before);  // gone with the workload; the pod still runs
  EXPECT_EQ(ctrd_.TaskStatus("pod5"), "RUNNING");
  Remove({"pod5"});
}

TEST_F(PodTest, QemuKilledEndsEveryTaskWorkloadsFirst) {
  std::string events = ctrd_.dir() + "/events.txt";
  pid_t ev = ctrd_.CtrBackground({"events"}, events);
  std::this_thread::sleep_for(300ms);
  StartPod("pod2", {"pod2-a", "pod2-b"}, /*hypervisor=*/true);
  std::string qemu = TrimNewlines(RunCommand({"pgrep", "-f", "qemu-system.*" + VmDir("pod2")}).out);
  ASSERT_FALSE(qemu.empty());
  ASSERT_EQ(::kill(std::atoi(qemu.c_str()), SIGKILL), 0);
  for (const char* id : {"pod2", "pod2-a", "pod2-b"}) {
    EXPECT_TRUE(WaitFor([&] { return ctrd_.TaskStatus(id) == "STOPPED"; }, 15s)) << id;
  }
  std::this_thread::sleep_for(300ms);
  ::kill(ev, SIGTERM);
  // Each workload's TaskExit (status 1) before the sandbox's.
  std::vector<std::string> exits;
  std::stringstream ss(ReadFileOr(events));
  for (std::string line; std::getline(ss, line);) {
    if (line.find("/tasks/exit ") == std::string::npos) continue;
    EXPECT_NE(line.find(R"("exit_status":1)"), std::string::npos) << line;
    for (const char* id : {"pod2-a", "pod2-b", "pod2"}) {
      if (line.find(std::string(R"("container_id":")") + id + "\"") != std::string::npos)
        exits.push_back(id);
    }
  }
  ASSERT_EQ(exits.size(), 3u) << ReadFileOr(events);
  EXPECT_EQ(exits.back(), "pod2");
  Remove({"pod2-a", "pod2-b", "pod2"});
}

TEST_F(PodTest, SandboxKilledClosesTheVmAndEndsTheWorkloads) {
  std::string events = ctrd_.dir() + "/events.txt";
  pid_t ev = ctrd_.CtrBackground({"events"}, events);
  std::this_thread::sleep_for(300ms);
  StartPod("pod6", {"pod6-a"}, /*hypervisor=*/true);
  // containerd's way to stop a pod: kill the sandbox's init.
  EXPECT_EQ(ctrd_.Ctr({"task", "kill", "-s", "SIGKILL", "pod6"}).exit_code, 0);
  for (const char* id : {"pod6", "pod6-a"}) {
    EXPECT_TRUE(WaitFor([&] { return ctrd_.TaskStatus(id) == "STOPPED"; }, 15s)) << id;
  }
  EXPECT_TRUE(WaitFor([&] { return CountProcesses("qemu-system.*" + VmDir("pod6")) == 0; }, 10s));
  std::this_thread::sleep_for(300ms);
  ::kill(ev, SIGTERM);
  std::string text = ReadFileOr(events);
  size_t workload = text.find(R"(/tasks/exit {"container_id":"pod6-a")");
  size_t sandbox = text.find(R"(/tasks/exit {"container_id":"pod6",)");
  ASSERT_NE(workload, std::string::npos) << text;
  ASSERT_NE(sandbox, std::string::npos) << text;
  EXPECT_LT(workload, sandbox) << text;
  EXPECT_NE(text.find(R"("id":"pod6-a","pid":)"), std::string::npos);
  Remove({"pod6-a", "pod6"});
}

// The pod's one shim SIGKILLed: its VM goes with it, and containerd's
// cleanup of the sandbox and the workload leaves no state dir, mount,
// socket or shimdiag entry.
TEST_F(PodTest, PodShimKilledLeavesNoVmNoMountsNoSocket) {
  StartPod("pod9", {"pod9-a"}, /*hypervisor=*/true);
  std::string bundle = ctrd_.dir() + "/state/io.containerd.runtime.v2.task/default/pod9";
  pid_t shim = std::atoi(ReadFileOr(bundle + "/shim.pid", "0").c_str());
  std::string sock = UnixAddress::Parse(ReadFileOr(bundle + "/address")).path;
  ASSERT_GT(shim, 0);
  ASSERT_EQ(CountProcesses("qemu-system.*" + VmDir("pod9")), 1);
  ASSERT_EQ(::kill(shim, SIGKILL), 0);
  EXPECT_TRUE(WaitFor([&] { return CountProcesses(VmDir("pod9")) == 0; }, 10s))
      << RunCommand({"pgrep", "-fa", VmDir("pod9")}).out;
  for (const char* id : {"pod9-a", "pod9"}) {
    EXPECT_TRUE(WaitFor([&] { return ctrd_.TaskStatus(id) != "RUNNING"; }, 15s)) << id;
    ctrd_.Ctr({"task", "delete", id});
    ctrd_.Ctr({"container", "delete", id});
  }
  EXPECT_TRUE(WaitFor([&] { return ::access(VmDir("pod9").c_str(), F_OK) != 0; }, 10s));
  EXPECT_EQ(ReadFileOr("/proc/self/mountinfo").find(VmDir("pod9")), std::string::npos);
  EXPECT_EQ(ReadFileOr("/proc/self/mountinfo").find(ctrd_.dir() + "/state/"), std::string::npos);
  EXPECT_NE(::access(sock.c_str(), F_OK), 0) << sock;
  EXPECT_NE(::access("/run/runhcs/shims/default-pod9", F_OK), 0);
}

TEST_F(PodTest, TwoPodsGetTwoShimsAndTwoVms) {
  StartPod("pod3", {"pod3-a"}, /*hypervisor=*/true);
  StartPod("pod4", {"pod4-a"}, /*hypervisor=*/true);
  EXPECT_EQ(CountProcesses("containerd-shim-runhcs-v1 .*-id pod3 "), 1);
  EXPECT_EQ(CountProcesses("containerd-shim-runhcs-v1 .*-id pod4 "), 1);
  EXPECT_EQ(CountProcesses("qemu-system.*" + VmDir("pod3")), 1);
  EXPECT_EQ(CountProcesses("qemu-system.*" + VmDir("pod4")), 1);
  EXPECT_NE(BootId("pod3-a", "x"), BootId("pod4-a", "x"));
  Remove({"pod3-a", "pod3", "pod4-a", "pod4"});
}

TEST_F(PodTest, ProcessIsolatedPodSharesOneShim) {
  StartPod("pod5", {"pod5-a", "pod5-b"}, /*hypervisor=*/false);
  pods_.pop_back();  // no VM to check for
  EXPECT_EQ(CountProcesses("containerd-shim-runhcs-v1 .*-id pod5 "), 1);
  EXPECT_EQ(CountProcesses("containerd-shim-runhcs-v1 .*-id pod5-"), 0);
  // The host's kernel: no VM.
  EXPECT_EQ(BootId("pod5-a", "x"), TrimNewlines(ReadFileOr("/proc/sys/kernel/random/boot_id")));
  Remove({"pod5-a", "pod5-b", "pod5"});
  EXPECT_TRUE(
      WaitFor([] { return CountProcesses("containerd-shim-runhcs-v1 .*-id pod5 ") == 0; }, 10s));
}

TEST_F(PodTest, WorkloadWithoutItsSandboxIsRejected) {
  RunResult r =
      ctrd_.Ctr({"run", "-d", "--runtime", "io.containerd.runhcs.v1", "--annotation",
                 "io.kubernetes.cri.container-type=container", "--annotation",
                 "io.kubernetes.cri.sandbox-id=nopod", "--rootfs", rootfs_, "orphan", "/bin/true"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("nopod"), std::string::npos) << "ERR:" << r.err << "OUT:" << r.out;
}

}  // namespace
}  // namespace runhcs::testing
