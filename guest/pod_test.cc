#include "guest/pod.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sstream>
#include <vector>

#include "base/command.h"
#include "base/io.h"

namespace runhcs::guest {
namespace {

namespace pb = ::runhcs::agent::v1;
using Cmds = std::vector<std::string>;

// The steps as ip(8) command lines.
Cmds Describe(const std::vector<NetworkStep>& steps) {
  Cmds out;
  for (const auto& s : steps) out.push_back(s.ToString());
  return out;
}

pb::CreatePodRequest Req() {
  pb::CreatePodRequest r;
  r.set_hostname("pod-a");
  auto* i = r.add_interfaces();
  i->set_mac("0E:AE:86:14:6B:1C");
  i->set_mtu(1400);
  i->add_addresses("10.88.0.2/24");
  i->add_addresses("fd00::2/64");
  auto* gw = r.add_routes();
  gw->set_destination("default");
  gw->set_gateway("10.88.0.1");
  gw->set_interface_mac("0e:ae:86:14:6b:1c");
  auto* link = r.add_routes();
  link->set_destination("192.168.5.0/24");
  link->set_interface_mac("0e:ae:86:14:6b:1c");
  auto* gw6 = r.add_routes();
  gw6->set_destination("default");
  gw6->set_gateway("fd00::1");
  gw6->set_interface_mac("0e:ae:86:14:6b:1c");
  gw6->set_ipv6(true);
  return r;
}

TEST(NetworkStepsTest, ConfiguresTheInterfaceWithTheMacThenLinkThenGatewayRoutes) {
  auto steps = NetworkSteps(Req(), {{"0e:ae:86:14:6b:1c", "eth0"}, {"52:54:00:00:00:01", "eth1"}});
  ASSERT_TRUE(steps.ok()) << steps.status().ToString();
  EXPECT_EQ(Describe(*steps), (Cmds{
                                  "ip link set dev lo up",
                                  "ip link set dev eth0 mtu 1400",
                                  "ip addr add 10.88.0.2/24 dev eth0",
                                  "ip -6 addr add fd00::2/64 dev eth0",
                                  "ip link set dev eth0 up",
                                  "ip route add 192.168.5.0/24 dev eth0",
                                  "ip route add default via 10.88.0.1 dev eth0",
                                  "ip -6 route add default via fd00::1 dev eth0",
                              }));
}

TEST(NetworkStepsTest, AMacNoInterfaceHasIsNotFound) {
  auto steps = NetworkSteps(Req(), {{"52:54:00:00:00:01", "eth0"}});
  ASSERT_FALSE(steps.ok());
  EXPECT_EQ(steps.status().code(), Code::kNotFound);
  EXPECT_NE(steps.status().message().find("0E:AE:86:14:6B:1C"), std::string::npos);
}

TEST(NetworkStepsTest, NoInterfacesStillBringsLoopbackUp) {
  auto steps = NetworkSteps(pb::CreatePodRequest(), {});
  ASSERT_TRUE(steps.ok());
  EXPECT_EQ(Describe(*steps), (Cmds{"ip link set dev lo up"}));
}

TEST(InterfacesByMacTest, ReadsEachInterfacesAddressInLowerCase) {
  char tmpl[] = "/tmp/net-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  ::mkdir((dir + "/eth0").c_str(), 0755);
  ::mkdir((dir + "/lo").c_str(), 0755);
  ASSERT_TRUE(WriteFileAtomic(dir + "/eth0/address", "0E:AE:86:14:6B:1C\n", 0644).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/lo/address", "00:00:00:00:00:00\n", 0644).ok());
  auto m = InterfacesByMac(dir);
  EXPECT_EQ(m, (std::map<std::string, std::string>{{"0e:ae:86:14:6b:1c", "eth0"},
                                                   {"00:00:00:00:00:00", "lo"}}));
}

TEST(JoinPodNamespacesTest, PointsTheTypesAtTheHolderAndLeavesOthers) {
  auto spec = nlohmann::json::parse(R"({"linux":{"namespaces":[
      {"type":"pid"},{"type":"ipc","path":"/proc/1/ns/ipc"},{"type":"mount"}]}})");
  ASSERT_TRUE(JoinPodNamespaces(&spec, {"pid", "ipc", "uts"}, 77).ok());
  auto nss = spec["linux"]["namespaces"];
  ASSERT_EQ(nss.size(), 4u);
  EXPECT_EQ(nss[0]["path"], "/proc/77/ns/pid");
  EXPECT_EQ(nss[1]["path"], "/proc/77/ns/ipc");
  EXPECT_FALSE(nss[2].contains("path"));
  EXPECT_EQ(nss[3]["type"], "uts");
  EXPECT_EQ(nss[3]["path"], "/proc/77/ns/uts");
}

TEST(JoinPodNamespacesTest, OnlyPidIpcAndUtsAreThePods) {
  auto spec = nlohmann::json::parse(R"({"linux":{"namespaces":[]}})");
  Status st = JoinPodNamespaces(&spec, {"network"}, 77);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  st = JoinPodNamespaces(&spec, {"mount"}, 77);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
}

TEST(HasOwnPidNamespaceTest, OnlyAPidEntryWithoutAPathCreatesOne) {
  auto own = nlohmann::json::parse(R"({"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}})");
  EXPECT_TRUE(HasOwnPidNamespace(own));
  // Joined: the pod's (JoinPodNamespaces' result) or any other path.
  ASSERT_TRUE(JoinPodNamespaces(&own, {"pid"}, 77).ok());
  EXPECT_FALSE(HasOwnPidNamespace(own));
  // None listed: the VM's own pid namespace, shared with the agent.
  EXPECT_FALSE(HasOwnPidNamespace(nlohmann::json::parse(R"({"linux":{"namespaces":[]}})")));
  EXPECT_FALSE(HasOwnPidNamespace(nlohmann::json::parse(R"({"process":{}})")));
  EXPECT_FALSE(HasOwnPidNamespace(nlohmann::json::parse(R"({"linux":[]})")));
  EXPECT_FALSE(HasOwnPidNamespace(nlohmann::json::parse(R"({"linux":{"namespaces":{}}})")));
}

TEST(StartNamespaceHolderTest, HoldsNewNamespacesWithTheHostnameUntilKilled) {
  auto pid = StartNamespaceHolder("pod-host-a");
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  for (const char* ns : {"pid_for_children", "ipc", "uts"}) {
    char mine[64] = {}, its[64] = {};
    std::string self =
        std::string("/proc/self/ns/") + (std::string(ns) == "pid_for_children" ? "pid" : ns);
    ASSERT_GT(::readlink(self.c_str(), mine, sizeof mine - 1), 0);
    std::string other = "/proc/" + std::to_string(*pid) + "/ns/" +
                        (std::string(ns) == "pid_for_children" ? "pid" : ns);
    ASSERT_GT(::readlink(other.c_str(), its, sizeof its - 1), 0);
    EXPECT_STRNE(mine, its) << ns;
  }
  auto host = RunCommand({"nsenter", "-t", std::to_string(*pid), "-u", "hostname"});
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  EXPECT_EQ(*host, "pod-host-a\n");
  // SIGTERM is blocked; only SIGKILL ends it.
  ::kill(*pid, SIGTERM);
  int status = 0;
  ::usleep(100000);
  EXPECT_EQ(::waitpid(*pid, &status, WNOHANG), 0);
  ::kill(*pid, SIGKILL);
  ASSERT_EQ(::waitpid(*pid, &status, 0), *pid);
  EXPECT_TRUE(WIFSIGNALED(status));
}

// The holder's mount namespace holds nothing but the root: its mountinfo,
// which a container sharing the pod's pid namespace reads as /proc/1's,
// lists no mount of the agent's, and the agent's own mounts stay as they are.
TEST(StartNamespaceHolderTest, ItsMountNamespaceHoldsOnlyTheRoot) {
  auto mine_before = ReadFile("/proc/self/mountinfo");
  ASSERT_TRUE(mine_before.ok());
  auto pid = StartNamespaceHolder("pod-mounts");
  ASSERT_TRUE(pid.ok()) << pid.status().ToString();
  char mine[64] = {}, its[64] = {};
  ASSERT_GT(::readlink("/proc/self/ns/mnt", mine, sizeof mine - 1), 0);
  ASSERT_GT(::readlink(("/proc/" + std::to_string(*pid) + "/ns/mnt").c_str(), its, sizeof its - 1),
            0);
  EXPECT_STRNE(mine, its);
  auto info = ReadFile("/proc/" + std::to_string(*pid) + "/mountinfo");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  std::vector<std::string> points;
  std::istringstream lines(*info);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string f[5];
    for (auto& x : f) fields >> x;
    points.push_back(f[4]);
  }
  EXPECT_EQ(points, std::vector<std::string>{"/"}) << *info;
  EXPECT_EQ(ReadFile("/proc/self/mountinfo").value(), *mine_before);
  ::kill(*pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(*pid, &status, 0), *pid);
}

// The hostname read from inside the holder's uts namespace by a forked
// child (no exec: as soon after the return as this process can look).
std::string HostnameIn(pid_t holder) {
  int p[2];
  if (::pipe(p) != 0) return "pipe failed";
  pid_t child = ::fork();
  if (child == 0) {
    ::close(p[0]);
    int ns = ::open(("/proc/" + std::to_string(holder) + "/ns/uts").c_str(), O_RDONLY);
    char name[65] = {};
    if (ns < 0 || ::setns(ns, CLONE_NEWUTS) != 0 || ::gethostname(name, sizeof name - 1) != 0)
      _exit(1);
    (void)!::write(p[1], name, ::strlen(name));
    _exit(0);
  }
  ::close(p[1]);
  std::string out;
  char buf[65];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  return out;
}

// Callers enter the holder's namespaces the moment it is returned (the
// sysctls, the pod's first container): its hostname is already set then.
TEST(StartNamespaceHolderTest, TheHostnameIsSetWhenItReturns) {
  for (int i = 0; i < 50; ++i) {
    std::string name = "pod-" + std::to_string(i);
    auto pid = StartNamespaceHolder(name);
    ASSERT_TRUE(pid.ok()) << pid.status().ToString();
    EXPECT_EQ(HostnameIn(*pid), name) << "start " << i;
    ::kill(*pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(*pid, &status, 0), *pid);
  }
}

TEST(SysctlPathTest, DotsBecomeDirectoriesAndNothingLeavesProcSys) {
  EXPECT_EQ(SysctlPath("kernel.shm_rmid_forced").value(), "kernel/shm_rmid_forced");
  EXPECT_EQ(SysctlPath("net.ipv4.conf.eth-0.forwarding").value(), "net/ipv4/conf/eth-0/forwarding");
  for (const char* bad : {"", ".", "kernel.", ".kernel", "kernel..x", "kernel/../../etc/passwd",
                          "../x", "a b", "net.ipv4.conf.eth0/1"}) {
    EXPECT_EQ(SysctlPath(bad).status().code(), Code::kInvalidArgument) << bad;
  }
}

// The pod's sysctls are written in the holder's ipc namespace: the
// agent's own keeps its value.
TEST(ApplyPodSysctlsTest, NamespacedKeysLandInThePodsNamespaces) {
  auto holder = StartNamespaceHolder("sysctl-pod");
  ASSERT_TRUE(holder.ok()) << holder.status().ToString();
  std::string before = ReadFile("/proc/sys/kernel/msgmnb").value();
  Status st = ApplyPodSysctls({{"kernel.msgmnb", "12345"}}, *holder, "/proc/sys");
  EXPECT_TRUE(st.ok()) << st.ToString();
  auto in_pod = RunCommand(
      {"nsenter", "-t", std::to_string(*holder), "-i", "cat", "/proc/sys/kernel/msgmnb"});
  ASSERT_TRUE(in_pod.ok()) << in_pod.status().ToString();
  EXPECT_EQ(*in_pod, "12345\n");
  EXPECT_EQ(ReadFile("/proc/sys/kernel/msgmnb").value(), before);

  // A bad key anywhere: nothing is written.
  st = ApplyPodSysctls({{"kernel.msgmnb", "999"}, {"../x", "1"}}, *holder, "/proc/sys");
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_EQ(*RunCommand(
                {"nsenter", "-t", std::to_string(*holder), "-i", "cat", "/proc/sys/kernel/msgmnb"}),
            "12345\n");
  // A key the kernel does not have.
  st = ApplyPodSysctls({{"kernel.no_such_sysctl", "1"}}, *holder, "/proc/sys");
  EXPECT_EQ(st.code(), Code::kNotFound) << st.ToString();
  EXPECT_NE(st.ToString().find("no_such_sysctl"), std::string::npos);
  ::kill(*holder, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(*holder, &status, 0), *holder);
}

TEST(StartNamespaceHolderTest, AnOverlongHostnameIsInvalidArgument) {
  auto pid = StartNamespaceHolder(std::string(65, 'h'));
  ASSERT_FALSE(pid.ok());
  EXPECT_EQ(pid.status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace runhcs::guest
