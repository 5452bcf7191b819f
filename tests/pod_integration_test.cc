// Pods as containerd's CRI shapes them, driven with plain `ctr` and the CRI
// annotations: one shim per pod; in a hypervisor-isolated pod the fake
// sandbox task owns the one VM every workload runs in.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

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

// Two network namespaces of the test's own joined by a veth pair, as CNI
// leaves a pod's: `pod` has eth0 10.213.7.2/24 (MTU 1400, default route via
// the peer), `peer` has 10.213.7.1/24. Removed with the object.
class TestNetwork {
 public:
  TestNetwork() {
    std::string tag = std::to_string(::getpid());
    pod_ = "rhcs-pod-" + tag;
    peer_ = "rhcs-peer-" + tag;
    ok_ = Run({"ip", "netns", "add", pod_}) && Run({"ip", "netns", "add", peer_}) &&
          Run({"ip", "link", "add", "rhcs-v" + tag, "netns", pod_, "type", "veth", "peer", "name",
               "rhcs-p" + tag, "netns", peer_}) &&
          In(pod_, {"ip", "link", "set", "rhcs-v" + tag, "name", "eth0"}) &&
          In(pod_, {"ip", "addr", "add", "10.213.7.2/24", "dev", "eth0"}) &&
          In(pod_, {"ip", "link", "set", "eth0", "mtu", "1400", "up"}) &&
          In(pod_, {"ip", "link", "set", "lo", "up"}) &&
          In(pod_, {"ip", "route", "add", "default", "via", "10.213.7.1"}) &&
          In(peer_, {"ip", "addr", "add", "10.213.7.1/24", "dev", "rhcs-p" + tag}) &&
          In(peer_, {"ip", "link", "set", "rhcs-p" + tag, "mtu", "1400", "up"});
  }
  ~TestNetwork() {
    Run({"ip", "netns", "del", pod_});
    Run({"ip", "netns", "del", peer_});
  }
  bool ok() const { return ok_; }
  std::string pod_path() const { return "/run/netns/" + pod_; }
  std::string peer_path() const { return "/run/netns/" + peer_; }
  // Runs argv inside namespace `path` (nsenter: `ip netns exec` would remount
  // /sys).
  static RunResult Exec(const std::string& path, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"nsenter", "--net=" + path});
    return RunCommand(argv);
  }
  std::string PodMac() const {
    // (Not /sys/class/net: nsenter keeps the host's /sys.)
    auto j = nlohmann::json::parse(Exec(pod_path(), {"ip", "-j", "link", "show", "eth0"}).out,
                                   nullptr, false);
    return j.is_array() && !j.empty() ? j[0].value("address", "?") : "?";
  }

 private:
  static bool Run(const std::vector<std::string>& argv) { return RunCommand(argv).exit_code == 0; }
  bool In(const std::string& ns, std::vector<std::string> argv) {
    return Exec("/run/netns/" + ns, std::move(argv)).exit_code == 0;
  }
  std::string pod_, peer_;
  bool ok_ = false;
};

// A VM pod shaped as CRI shapes one: the sandbox's spec names the pod's
// network namespace and a hostname; the workload joins the sandbox's ipc and
// uts namespaces through /proc/<sandbox pid>/ns and its network namespace.
TEST_F(PodTest, AVmPodGetsThePodsNetworkNamespacesAndReportsTheVmsPid) {
  TestNetwork net;
  ASSERT_TRUE(net.ok());
  const std::string pod = "pod7";
  pods_.push_back(pod);
  // The sandbox's spec: runc's default, CRI's annotations, the pod's netns.
  std::string spec_dir = ctrd_.dir() + "/pod7-spec";
  ASSERT_EQ(::mkdir(spec_dir.c_str(), 0755), 0);
  ASSERT_EQ(RunCommand({"runc", "spec", "--bundle", spec_dir}).exit_code, 0);
  auto spec = nlohmann::json::parse(ReadFileOr(spec_dir + "/config.json"));
  spec["process"]["terminal"] = false;
  spec["process"]["args"] = {"/bin/sleep", "1000"};
  spec["root"] = {{"path", rootfs_}, {"readonly", false}};
  spec["hostname"] = "pod7-host";
  spec["annotations"] = {{"io.kubernetes.cri.container-type", "sandbox"},
                         {"io.kubernetes.cri.sandbox-id", pod},
                         {"io.containerd.runhcs.v1.isolation", "hypervisor"},
                         {"io.containerd.runhcs.v1.vm-accelerator", "tcg"}};
  for (auto& n : spec["linux"]["namespaces"]) {
    if (n["type"] == "network") n["path"] = net.pod_path();
  }
  ASSERT_TRUE(WriteFileAtomic(spec_dir + "/config.json", spec.dump(), 0644).ok());
  RunResult r = ctrd_.Ctr({"run", "-d", "--runtime", "io.containerd.runhcs.v1", "--config",
                           spec_dir + "/config.json", pod});
  ASSERT_EQ(r.exit_code, 0) << r.err << ctrd_.log();
  ASSERT_TRUE(WaitFor([&] { return ctrd_.TaskStatus(pod) == "RUNNING"; }, 15s));

  // The sandbox's pid is its VM's QEMU, not 1.
  std::string qemu = TrimNewlines(RunCommand({"pgrep", "-f", "qemu-system.*" + VmDir(pod)}).out);
  ASSERT_FALSE(qemu.empty());
  std::string ls = ctrd_.Ctr({"task", "ls"}).out;
  EXPECT_NE(ls.find(pod + " "), std::string::npos);
  std::stringstream rows(ls);
  std::string pid_of_pod;
  for (std::string line; std::getline(rows, line);) {
    std::stringstream cols(line);
    std::string id, pid;
    cols >> id >> pid;
    if (id == pod) pid_of_pod = pid;
  }
  EXPECT_EQ(pid_of_pod, qemu);

  // A workload as CRI makes it: the sandbox's ipc, uts and network.
  std::vector<std::string> flags = Cri("container", pod, false);
  for (const char* t : {"ipc", "uts"}) {
    flags.insert(flags.end(), {"--with-ns", std::string(t) + ":/proc/" + qemu + "/ns/" + t});
  }
  flags.insert(flags.end(), {"--with-ns", "network:" + net.pod_path()});
  std::vector<std::string> args = {"run", "-d", "--runtime", "io.containerd.runhcs.v1"};
  args.insert(args.end(), flags.begin(), flags.end());
  args.insert(args.end(), {"--rootfs", rootfs_, "pod7-web", "/bin/sh", "-c",
                           "echo pod7-payload >/tmp/index.html; "
                           "exec /bin/busybox httpd -f -p 8080 -h /tmp"});
  r = ctrd_.Ctr(args);
  ASSERT_EQ(r.exit_code, 0) << r.err << ctrd_.log();
  ASSERT_TRUE(WaitFor([&] { return ctrd_.TaskStatus("pod7-web") == "RUNNING"; }, 15s));

  auto exec = [&](const std::string& xid, std::vector<std::string> argv) {
    std::vector<std::string> a = {"task", "exec", "--exec-id", xid, "pod7-web"};
    a.insert(a.end(), argv.begin(), argv.end());
    return ctrd_.Ctr(a);
  };
  // The pod's hostname: the workload is in the holder's uts namespace, not
  // the agent's.
  r = exec("h", {"/bin/busybox", "hostname"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(TrimNewlines(r.out), "pod7-host");
  // The pod interface's MAC, address and MTU on the VM's NIC.
  r = exec("ip", {"/bin/busybox", "ip", "addr", "show"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(net.PodMac()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("inet 10.213.7.2/24"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mtu 1400"), std::string::npos) << r.out;
  r = exec("rt", {"/bin/busybox", "ip", "route", "show"});
  EXPECT_NE(r.out.find("default via 10.213.7.1"), std::string::npos) << r.out;

  // The server in the VM answers on the pod IP, from the peer namespace.
  std::string got;
  EXPECT_TRUE(WaitFor(
      [&] {
        got = HttpGetIn(net.peer_path(), "10.213.7.2", 8080, "/index.html");
        return got.find("200 OK") != std::string::npos &&
               got.find("\r\n\r\npod7-payload\n") != std::string::npos;
      },
      20s))
      << got;
  // And the VM reaches the peer (its default route's gateway) back.
  r = exec("ping", {"/bin/busybox", "ping", "-c", "1", "-W", "3", "10.213.7.1"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;

  Remove({"pod7-web", pod});
  // The redirects and the tap are gone; the pod's eth0 is as CNI left it.
  auto links = TestNetwork::Exec(net.pod_path(), {"ip", "-o", "link", "show"}).out;
  EXPECT_EQ(links.find("tap"), std::string::npos) << links;
  auto qdiscs = TestNetwork::Exec(net.pod_path(), {"tc", "qdisc", "show", "dev", "eth0"}).out;
  EXPECT_EQ(qdiscs.find("ingress"), std::string::npos) << qdiscs;
}

TEST_F(PodTest, AVmPodOnTheHostNetworkIsRefusedByName) {
  std::vector<std::string> args = {"run", "-d", "--runtime", "io.containerd.runhcs.v1",
                                   "--net-host"};
  for (const auto& a : Cri("sandbox", "pod8", /*hypervisor=*/true)) args.push_back(a);
  args.insert(args.end(), {"--rootfs", rootfs_, "pod8", "/bin/sleep", "1000"});
  RunResult r = ctrd_.Ctr(args);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("HostNetwork"), std::string::npos) << r.err;
  EXPECT_EQ(CountProcesses("qemu-system.*" + VmDir("pod8")), 0);
  ctrd_.Ctr({"container", "delete", "pod8"});
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
