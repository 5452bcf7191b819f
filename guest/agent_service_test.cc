// AgentService on the host: VM-level processes are ordinary processes, so
// exec, stdio relay, wait and signals run for real; container calls need
// crun inside a VM and are covered by the VM integration tests.
#include "guest/agent_service.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/io.h"
#include "base/polled_reaper.h"
#include "base/reaper.h"

namespace runhcs::guest {
namespace {

using Clock = ttrpc::Clock;

class AgentServiceTest : public ::testing::Test {
 protected:
  // The agent relies on the SIGCHLD-driven Reaper; drive it by polling.
  static void SetUpTestSuite() { reaper_ = new PolledReaper(); }
  static void TearDownTestSuite() { delete reaper_; }

  pb::ExecProcessRequest Exec(const std::string& id, std::vector<std::string> args, bool in = false,
                              bool tty = false) {
    pb::ExecProcessRequest r;
    r.mutable_id()->set_exec_id(id);
    for (auto& a : args) r.add_args(a);
    r.set_stdin(in);
    r.set_terminal(tty);
    return r;
  }
  pb::ProcessId Id(const std::string& exec) {
    pb::ProcessId p;
    p.set_exec_id(exec);
    return p;
  }
  // Everything on one stream until EOF.
  std::string ReadAll(const std::string& exec, pb::ReadStreamRequest::Stream s) {
    std::string out;
    pb::ReadStreamRequest r;
    *r.mutable_id() = Id(exec);
    r.set_stream(s);
    for (;;) {
      auto resp = Call(&AgentService::ReadStream, r, Clock::now() + std::chrono::seconds(10));
      if (!resp.ok()) {
        ADD_FAILURE() << resp.status().ToString();
        return out;
      }
      if (resp->eof()) return out;
      out += resp->data();
    }
  }
  int Wait(const std::string& exec) {
    pb::WaitProcessRequest w;
    *w.mutable_id() = Id(exec);
    auto r = Call(&AgentService::WaitProcess, w, Clock::now() + std::chrono::seconds(10));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->exit_status() : -1;
  }

  // One RPC of svc_, called directly; `deadline` bounds the long polls.
  template <typename Req, typename Resp>
  StatusOr<Resp> Call(Status (AgentService::*m)(const ttrpc::CallContext&, const Req&, Resp*),
                      const std::type_identity_t<Req>& req,
                      std::optional<Clock::time_point> deadline = std::nullopt) {
    return ttrpc::CallDirect(&svc_, m, req, deadline);
  }

  AgentService svc_{AgentConfig{.state_dir = ::testing::TempDir() + "/agent-state"}};
  static inline PolledReaper* reaper_ = nullptr;
};

TEST_F(AgentServiceTest, PingReportsKernelAndVersion) {
  AgentService svc(AgentConfig{.agent_version = "v-test"});
  auto r = ttrpc::CallDirect(&svc, &AgentService::Ping, pb::PingRequest());
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->kernel_release().empty());
  EXPECT_EQ(r->agent_version(), "v-test");
  EXPECT_GT(r->boot_ns(), 0);
}

TEST_F(AgentServiceTest, ExecInVmRelaysOutputAndExitCode) {
  auto r = Call(&AgentService::ExecProcess,
                Exec("e1", {"/bin/sh", "-c", "echo out; echo err >&2; exit 7"}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->pid(), 0u);
  EXPECT_EQ(ReadAll("e1", pb::ReadStreamRequest::STDOUT), "out\n");
  EXPECT_EQ(ReadAll("e1", pb::ReadStreamRequest::STDERR), "err\n");
  EXPECT_EQ(Wait("e1"), 7);
  // Status and output taken: the record is gone.
  EXPECT_EQ(Call(&AgentService::CloseStdin, Id("e1")).status().code(), Code::kNotFound);
}

TEST_F(AgentServiceTest, StdinIsRelayedAndCloseGivesEof) {
  ASSERT_TRUE(Call(&AgentService::ExecProcess, Exec("cat", {"/bin/cat"}, /*in=*/true)).ok());
  pb::WriteStdinRequest w;
  *w.mutable_id() = Id("cat");
  w.set_data("hello\n");
  auto wr = Call(&AgentService::WriteStdin, w);
  ASSERT_TRUE(wr.ok()) << wr.status().ToString();
  EXPECT_EQ(wr->written(), 6u);
  ASSERT_TRUE(Call(&AgentService::CloseStdin, Id("cat")).ok());
  EXPECT_EQ(Call(&AgentService::WriteStdin, w).status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(ReadAll("cat", pb::ReadStreamRequest::STDOUT), "hello\n");
  EXPECT_EQ(Wait("cat"), 0);
}

TEST_F(AgentServiceTest, TerminalGivesATtyAndResizeWorks) {
  ASSERT_TRUE(Call(&AgentService::ExecProcess,
                   Exec("tty", {"/bin/sh", "-c", "sleep 0.2; stty size; test -t 0"},
                        /*in=*/true, /*tty=*/true))
                  .ok());
  pb::ResizeTtyRequest rz;
  *rz.mutable_id() = Id("tty");
  rz.set_width(91);
  rz.set_height(37);
  ASSERT_TRUE(Call(&AgentService::ResizeTty, rz).ok());
  std::string out = ReadAll("tty", pb::ReadStreamRequest::STDOUT);
  EXPECT_NE(out.find("37 91"), std::string::npos) << out;
  EXPECT_EQ(Wait("tty"), 0);
}

TEST_F(AgentServiceTest, ResizeWithoutTerminalIsFailedPrecondition) {
  ASSERT_TRUE(Call(&AgentService::ExecProcess, Exec("nt", {"/bin/true"})).ok());
  pb::ResizeTtyRequest rz;
  *rz.mutable_id() = Id("nt");
  EXPECT_EQ(Call(&AgentService::ResizeTty, rz).status().code(), Code::kFailedPrecondition);
  ReadAll("nt", pb::ReadStreamRequest::STDOUT);
  ReadAll("nt", pb::ReadStreamRequest::STDERR);
  Wait("nt");
}

TEST_F(AgentServiceTest, SignalKillsAndExitedProcessIsNotFound) {
  ASSERT_TRUE(Call(&AgentService::ExecProcess, Exec("sl", {"/bin/sleep", "30"})).ok());
  pb::SignalProcessRequest s;
  *s.mutable_id() = Id("sl");
  s.set_signal(SIGKILL);
  ASSERT_TRUE(Call(&AgentService::SignalProcess, s).ok());
  pb::WaitProcessRequest w;
  *w.mutable_id() = Id("sl");
  auto r = Call(&AgentService::WaitProcess, w, Clock::now() + std::chrono::seconds(10));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_status(), 128 + SIGKILL);
  // Output not drained yet: the record stays, and it has exited.
  EXPECT_EQ(Call(&AgentService::SignalProcess, s).status().code(), Code::kNotFound);
}

TEST_F(AgentServiceTest, DeadlinesAreDeadlineExceeded) {
  ASSERT_TRUE(Call(&AgentService::ExecProcess, Exec("quiet", {"/bin/sleep", "30"})).ok());
  pb::ReadStreamRequest rd;
  *rd.mutable_id() = Id("quiet");
  EXPECT_EQ(Call(&AgentService::ReadStream, rd, Clock::now() + std::chrono::milliseconds(50))
                .status()
                .code(),
            Code::kDeadlineExceeded);
  pb::WaitProcessRequest w;
  *w.mutable_id() = Id("quiet");
  EXPECT_EQ(Call(&AgentService::WaitProcess, w, Clock::now() + std::chrono::milliseconds(50))
                .status()
                .code(),
            Code::kDeadlineExceeded);
  pb::SignalProcessRequest s;
  *s.mutable_id() = Id("quiet");
  s.set_signal(SIGKILL);
  ASSERT_TRUE(Call(&AgentService::SignalProcess, s).ok());
  EXPECT_EQ(Wait("quiet"), 128 + SIGKILL);
}

TEST_F(AgentServiceTest, BadIdsAndArgs) {
  EXPECT_EQ(Call(&AgentService::ExecProcess, Exec("", {"/bin/true"})).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(Call(&AgentService::ExecProcess, Exec("a/b", {"/bin/true"})).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(Call(&AgentService::ExecProcess, Exec("noargs", {})).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(Call(&AgentService::ExecProcess, Exec("missing", {"/nonexistent/bin"})).status().code(),
            Code::kNotFound);
  ASSERT_TRUE(Call(&AgentService::ExecProcess, Exec("dup", {"/bin/sleep", "30"})).ok());
  EXPECT_EQ(Call(&AgentService::ExecProcess, Exec("dup", {"/bin/true"})).status().code(),
            Code::kAlreadyExists);
  pb::SignalProcessRequest s;
  *s.mutable_id() = Id("dup");
  s.set_signal(SIGKILL);
  ASSERT_TRUE(Call(&AgentService::SignalProcess, s).ok());
  Wait("dup");
  EXPECT_EQ(Call(&AgentService::CloseStdin, Id("never")).status().code(), Code::kNotFound);
  pb::ProcessId in_container;
  in_container.set_container_id("nope");
  EXPECT_EQ(Call(&AgentService::CloseStdin, in_container).status().code(), Code::kNotFound);
  pb::StartContainerRequest sc;
  sc.set_container_id("nope");
  EXPECT_EQ(Call(&AgentService::StartContainer, sc).status().code(), Code::kNotFound);
}

TEST_F(AgentServiceTest, ShareRejectsEscapesAndRelativeTargets) {
  pb::MountShareRequest m;
  m.set_tag("share0");
  m.set_sub_path("../etc");
  m.set_guest_path("/mnt/x");
  EXPECT_EQ(Call(&AgentService::MountShare, m).status().code(), Code::kInvalidArgument);
  m.set_sub_path("/abs");
  EXPECT_EQ(Call(&AgentService::MountShare, m).status().code(), Code::kInvalidArgument);
  m.set_sub_path("ok");
  m.set_guest_path("relative");
  EXPECT_EQ(Call(&AgentService::MountShare, m).status().code(), Code::kInvalidArgument);
  m.set_tag("a/b");
  m.set_guest_path("/mnt/x");
  EXPECT_EQ(Call(&AgentService::MountShare, m).status().code(), Code::kInvalidArgument);
}

TEST_F(AgentServiceTest, UnshareUnmountsAndRemovesTheMountPointOnly) {
  pb::UnmountShareRequest u;
  for (const char* bad : {"", "relative", "/", "/run/../etc"}) {
    u.set_guest_path(bad);
    EXPECT_EQ(Call(&AgentService::UnmountShare, u).status().code(), Code::kInvalidArgument) << bad;
  }
  char tmpl[] = "/tmp/runhcs-unshare-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl, point = dir + "/mounts/c1/0";
  std::filesystem::create_directories(point);
  ASSERT_EQ(::mount("tmpfs", point.c_str(), "tmpfs", 0, nullptr), 0);
  u.set_guest_path(point);
  EXPECT_TRUE(Call(&AgentService::UnmountShare, u).ok());
  struct stat st;
  EXPECT_NE(::stat(point.c_str(), &st), 0) << "the mount point is left";
  EXPECT_NE(::stat((dir + "/mounts/c1").c_str(), &st), 0) << "the emptied parent is left";
  EXPECT_EQ(::stat((dir + "/mounts").c_str(), &st), 0);
  // Nothing mounted there (any more): NotFound, and nothing else goes.
  EXPECT_EQ(Call(&AgentService::UnmountShare, u).status().code(), Code::kNotFound);
  u.set_guest_path(dir + "/mounts");
  EXPECT_EQ(Call(&AgentService::UnmountShare, u).status().code(), Code::kNotFound);
  EXPECT_EQ(::stat((dir + "/mounts").c_str(), &st), 0);
  std::filesystem::remove_all(dir);
}

TEST_F(AgentServiceTest, StatsAndStacksReadProc) {
  auto st = Call(&AgentService::Stats, pb::Empty());
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_GT(st->mem_total_kb(), 0u);
  EXPECT_GT(st->processes(), 0u);
  auto dump = Call(&AgentService::DumpStacks, pb::Empty());
  ASSERT_TRUE(dump.ok());
  EXPECT_NE(dump->stacks().find(fmt::format("pid {} (", ::getpid())), std::string::npos);
  // This process's threads are listed under it.
  EXPECT_NE(dump->stacks().find(fmt::format("  thread {} (", ::getpid())), std::string::npos);
}

TEST_F(AgentServiceTest, ContainerCallsOnAnUnknownContainerAreNotFound) {
  pb::ContainerRequest req;
  req.set_container_id("nope");
  EXPECT_EQ(Call(&AgentService::ContainerStats, req).status().code(), Code::kNotFound);
  EXPECT_EQ(Call(&AgentService::PauseContainer, req).status().code(), Code::kNotFound);
  EXPECT_EQ(Call(&AgentService::ResumeContainer, req).status().code(), Code::kNotFound);
  pb::WaitOomRequest w;
  w.set_container_id("nope");
  w.set_timeout_ms(10);
  EXPECT_EQ(Call(&AgentService::WaitOom, w).status().code(), Code::kNotFound);
  pb::UpdateContainerRequest u;
  u.set_container_id("nope");
  u.set_resources_json("{}");
  EXPECT_EQ(Call(&AgentService::UpdateContainer, u).status().code(), Code::kNotFound);
}

// A spec whose linux, root or process is not an object is refused, not a
// crash (the agent fuzzer found `"root":"x"`).
TEST_F(AgentServiceTest, ASpecMemberThatIsNotAnObjectIsInvalidArgument) {
  for (const char* member : {"linux", "root", "process"}) {
    pb::CreateContainerRequest c;
    c.set_container_id("bad");
    c.set_spec_json(fmt::format(R"({{"{}":"x"}})", member));
    auto r = Call(&AgentService::CreateContainer, c);
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << member;
    EXPECT_NE(r.status().message().find(member), std::string::npos) << r.status().ToString();
  }
}

// (CreatePod itself configures the network and clones the namespace holder:
// on this host that would act on the machine; the VM tests run it.)
TEST_F(AgentServiceTest, PodNamespacesWithoutAPodAreFailedPrecondition) {
  pb::CreateContainerRequest c;
  c.set_container_id("w1");
  c.set_spec_json(R"({"linux":{"namespaces":[{"type":"ipc"}]}})");
  c.add_pod_namespaces("ipc");
  auto r = Call(&AgentService::CreateContainer, c);
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition) << r.status().ToString();
  EXPECT_NE(r.status().message().find("no pod"), std::string::npos);
}

// CreateContainer against a stand-in runtime (a script recording how it was
// run and the config it was given; its "init" a sleep it backgrounds): the
// runtime runs without address-space randomization, and the config gives
// the container's processes theirs back through linux.personality.
class AgentRuntimeTest : public AgentServiceTest {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/agent-runtime-" + std::to_string(::getpid());
    ASSERT_TRUE(MkdirAll(dir_ + "/cg", 0700).ok());
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/runtime", R"sh(#!/bin/sh
dir=$(dirname "$0")
cat /proc/self/personality > "$dir/personality"
while [ $# -gt 0 ]; do
  case "$1" in
    --root|--log|--log-format|--bundle) shift ;;
    --pid-file) pidfile=$2; shift ;;
    create|delete) verb=$1 ;;
    bad) exit 1 ;;
  esac
  shift
done
case "$verb" in
  create) cp config.json "$dir/config.json"; sleep 1000 </dev/null >/dev/null 2>&1 &
          echo $! > "$pidfile" ;;
  delete) kill -9 "$(cat init.pid)" ;;
esac
)sh",
                                0700)
                    .ok());
    agent_ = std::make_unique<AgentService>(AgentConfig{.oci_runtime = dir_ + "/runtime",
                                                        .oci_root = dir_ + "/root",
                                                        .state_dir = dir_ + "/state",
                                                        .cgroup_root = dir_ + "/cg"});
  }
  void TearDown() override {
    agent_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Creates and removes container `id` with `spec`; the config the runtime
  // was given.
  nlohmann::json CreateAndRemove(const std::string& id, const std::string& spec) {
    pb::CreateContainerRequest c;
    c.set_container_id(id);
    c.set_spec_json(spec);
    c.set_rootfs_path(dir_);
    auto r = ttrpc::CallDirect(agent_.get(), &AgentService::CreateContainer, c, std::nullopt);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    pb::RemoveContainerRequest rm;
    rm.set_container_id(id);
    auto d = ttrpc::CallDirect(agent_.get(), &AgentService::RemoveContainer, rm, std::nullopt);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    auto text = ReadFile(dir_ + "/config.json");
    return text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
  }
  std::string RuntimePersonality() {
    auto text = ReadFile(dir_ + "/personality");
    return text.ok() ? *text : "";
  }

  std::string dir_;
  std::unique_ptr<AgentService> agent_;
};

TEST_F(AgentRuntimeTest, RuntimeRunsUnrandomizedAndTheContainerGetsItBack) {
  auto cfg = CreateAndRemove("c1", R"({"process":{"args":["/bin/true"]}})");
  EXPECT_EQ(RuntimePersonality(), "00040000\n");  // ADDR_NO_RANDOMIZE
  EXPECT_EQ(cfg["linux"]["personality"], nlohmann::json({{"domain", "LINUX"}}));
  EXPECT_EQ(cfg["process"]["args"], nlohmann::json({"/bin/true"}));
}

TEST_F(AgentRuntimeTest, TheBundleGoesWithTheContainerOrWithAFailedCreate) {
  CreateAndRemove("c4", "{}");
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/config.json"));  // it was created
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/state/c/c4"));
  pb::CreateContainerRequest c;
  c.set_container_id("bad");  // the stand-in runtime fails it
  c.set_spec_json("{}");
  c.set_rootfs_path(dir_);
  auto r = ttrpc::CallDirect(agent_.get(), &AgentService::CreateContainer, c, std::nullopt);
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/state/c/bad"));
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/state/c"));
}

TEST_F(AgentRuntimeTest, APersonalityTheSpecNamesIsKept) {
  auto cfg = CreateAndRemove("c2", R"({"linux":{"personality":{"domain":"LINUX32"}}})");
  EXPECT_EQ(cfg["linux"]["personality"], nlohmann::json({{"domain", "LINUX32"}}));
}

TEST_F(AgentRuntimeTest, ALinuxThatIsNoObjectIsInvalidArgument) {
  pb::CreateContainerRequest c;
  c.set_container_id("c3");
  c.set_spec_json(R"({"linux":5})");
  auto r = ttrpc::CallDirect(agent_.get(), &AgentService::CreateContainer, c, std::nullopt);
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/personality"));  // the runtime never ran
}

// While PID 1 still mounts the system disk and loads the modules for
// shares, layers and networks, the calls that need them wait up to their
// deadline and then fail Unavailable; once set up they run.
TEST_F(AgentServiceTest, CallsNeedingTheSetupWaitForIt) {
  auto setup = std::make_shared<GuestSetup>();
  AgentService agent(
      AgentConfig{.state_dir = ::testing::TempDir() + "/agent-modules", .setup = setup});
  pb::CreateContainerRequest c;
  c.set_container_id("m1");
  c.set_spec_json("not json");
  pb::MountShareRequest m;
  m.set_tag("runhcs");
  m.set_sub_path("../escape");
  m.set_guest_path("/mnt/x");
  pb::ExecProcessRequest e;  // in the VM: its programs are on the system disk
  e.mutable_id()->set_exec_id("e1");
  auto soon = [] { return Clock::now() + std::chrono::milliseconds(50); };
  auto r = ttrpc::CallDirect(&agent, &AgentService::CreateContainer, c, soon());
  EXPECT_EQ(r.status().code(), Code::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("system disk"), std::string::npos);
  EXPECT_EQ(ttrpc::CallDirect(&agent, &AgentService::MountShare, m, soon()).status().code(),
            Code::kUnavailable);
  EXPECT_EQ(ttrpc::CallDirect(&agent, &AgentService::ExecProcess, e, soon()).status().code(),
            Code::kUnavailable);
  // Calls that need no module do not wait.
  EXPECT_TRUE(ttrpc::CallDirect(&agent, &AgentService::Ping, pb::PingRequest(), soon()).ok());
  // The reason arrives before the caller's own deadline (a tenth of its
  // time, at most a second, early): the host sees why, not a bare timeout.
  auto deadline = Clock::now() + std::chrono::seconds(3);
  EXPECT_EQ(ttrpc::CallDirect(&agent, &AgentService::MountShare, m, deadline).status().code(),
            Code::kUnavailable);
  EXPECT_LT(Clock::now(), deadline - std::chrono::milliseconds(150));
  // A waiting call goes on when the setup is done.
  auto later = std::async(std::launch::async, [&] {
    return ttrpc::CallDirect(&agent, &AgentService::CreateContainer, c,
                             Clock::now() + std::chrono::seconds(10));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  setup->done.Open();
  EXPECT_EQ(later.get().status().code(), Code::kInvalidArgument);  // the spec, checked now
  EXPECT_EQ(ttrpc::CallDirect(&agent, &AgentService::MountShare, m, soon()).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(ttrpc::CallDirect(&agent, &AgentService::ExecProcess, e, soon()).status().code(),
            Code::kInvalidArgument);  // no args
}

// A VM whose system disk did not mount cannot run containers or programs:
// those calls say why instead of failing on a missing crun or sh.
TEST_F(AgentServiceTest, AFailedSetupFailsTheCallsNeedingItWithItsError) {
  auto setup = std::make_shared<GuestSetup>();
  setup->status = NotFoundError("no disk with serial \"runhcs-system\" appeared in /sys/block");
  setup->done.Open();
  AgentService agent(
      AgentConfig{.state_dir = ::testing::TempDir() + "/agent-setup-failed", .setup = setup});
  pb::CreateContainerRequest c;
  c.set_container_id("m1");
  c.set_spec_json("{}");
  pb::ExecProcessRequest e;
  e.mutable_id()->set_exec_id("e1");
  e.add_args("sh");
  for (auto st : {ttrpc::CallDirect(&agent, &AgentService::CreateContainer, c).status(),
                  ttrpc::CallDirect(&agent, &AgentService::ExecProcess, e).status()}) {
    EXPECT_EQ(st.code(), Code::kFailedPrecondition) << st.ToString();
    EXPECT_NE(st.message().find("runhcs-system"), std::string::npos) << st.ToString();
  }
  EXPECT_TRUE(ttrpc::CallDirect(&agent, &AgentService::Ping, pb::PingRequest()).ok());
}

// A VM restored from a template: the entropy and the clock reach the kernel
// (through the seams), then the call waits until the plugged devices serve:
// the share tag mounts, a NIC has each MAC.
TEST_F(AgentServiceTest, RestoredReseedsSetsTheClockAndWaitsForPluggedDevices) {
  namespace fs = std::filesystem;
  std::string root = ::testing::TempDir() + "/agent-restored";
  fs::remove_all(root);
  fs::create_directories(root + "/net/lo");
  ASSERT_TRUE(WriteFileAtomic(root + "/net/lo/address", "00:00:00:00:00:00\n", 0644).ok());
  std::string entropy;
  int64_t clock = 0;
  std::atomic<bool> plugged{false};
  std::atomic<int> mounts{0};
  AgentService agent(AgentConfig{.state_dir = root + "/state",
                                 .sys_class_net = root + "/net",
                                 .mount_virtiofs =
                                     [&](const std::string& tag, const std::string& where) {
                                       ++mounts;
                                       EXPECT_EQ(where, root + "/state/shares/" + tag);
                                       return plugged ? OkStatus()
                                                      : InvalidArgumentError("no such tag {}", tag);
                                     },
                                 .add_entropy =
                                     [&](const std::string& e) {
                                       entropy = e;
                                       return OkStatus();
                                     },
                                 .set_realtime =
                                     [&](int64_t ns) {
                                       clock = ns;
                                       return OkStatus();
                                     }});
  pb::RestoredRequest r;
  r.set_entropy(std::string(16, 'x'));
  EXPECT_EQ(ttrpc::CallDirect(&agent, &AgentService::Restored, r).status().code(),
            Code::kInvalidArgument);  // too little entropy
  EXPECT_EQ(entropy, "");
  r.set_entropy(std::string(32, 'e'));
  r.set_realtime_ns(1234567890123456789);
  r.add_virtiofs_tags("runhcs");
  r.add_macs("0E:AA:00:00:00:01");
  auto soon = [] { return Clock::now() + std::chrono::milliseconds(100); };
  auto st = ttrpc::CallDirect(&agent, &AgentService::Restored, r, soon()).status();
  EXPECT_EQ(st.code(), Code::kDeadlineExceeded) << st.ToString();
  EXPECT_NE(st.message().find("share runhcs: no such tag"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("no NIC 0e:aa:00:00:00:01"), std::string::npos) << st.message();
  EXPECT_GT(mounts.load(), 1);  // tried again while it waited
  EXPECT_EQ(entropy, std::string(32, 'e'));
  EXPECT_EQ(clock, 1234567890123456789);
  // The devices come up while it waits (the kernel probing them).
  auto call = std::async(std::launch::async, [&] {
    return ttrpc::CallDirect(&agent, &AgentService::Restored, r,
                             Clock::now() + std::chrono::seconds(10));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  plugged = true;
  fs::create_directories(root + "/net/eth0");
  ASSERT_TRUE(WriteFileAtomic(root + "/net/eth0/address", "0e:aa:00:00:00:01\n", 0644).ok());
  auto done = call.get();
  EXPECT_TRUE(done.ok()) << done.status().ToString();
}

std::string DropCaches(const std::string& root) {
  auto s = ReadFile(root + "/sys/vm/drop_caches");
  return s.ok() ? *s : "?";
}

// Before the host saves a template: modules in, clean caches dropped.
TEST_F(AgentServiceTest, PrepareTemplateWaitsForModulesThenDropsCaches) {
  std::string root = ::testing::TempDir() + "/agent-template";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root + "/sys/vm");
  ASSERT_TRUE(WriteFileAtomic(root + "/sys/vm/drop_caches", "", 0644).ok());
  auto setup = std::make_shared<GuestSetup>();
  AgentService agent(
      AgentConfig{.state_dir = root + "/state", .proc_sys = root + "/sys", .setup = setup});
  auto soon = [] { return Clock::now() + std::chrono::milliseconds(50); };
  EXPECT_EQ(ttrpc::CallDirect(&agent, &AgentService::PrepareTemplate, pb::Empty(), soon())
                .status()
                .code(),
            Code::kUnavailable);
  EXPECT_EQ(DropCaches(root), "");
  setup->done.Open();
  EXPECT_TRUE(ttrpc::CallDirect(&agent, &AgentService::PrepareTemplate, pb::Empty(), soon()).ok());
  EXPECT_EQ(DropCaches(root), "3");
}

// The runtime warm-up: a successful Restored starts it (a restored VM has
// nothing translated), a second start while it runs is a no-op, and
// PrepareTemplate does not drop caches (and let the host save) while it
// runs: the template would hold its half-made container.
TEST_F(AgentServiceTest, RestoredStartsTheWarmUpAndPrepareTemplateWaitsForIt) {
  std::string root = ::testing::TempDir() + "/agent-warm-up";
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root + "/sys/vm");
  ASSERT_TRUE(WriteFileAtomic(root + "/sys/vm/drop_caches", "", 0644).ok());
  std::atomic<int> runs{0};
  Latch release;
  AgentService agent(AgentConfig{.state_dir = root + "/state",
                                 .proc_sys = root + "/sys",
                                 .add_entropy = [](const std::string&) { return OkStatus(); },
                                 .warm_up =
                                     [&] {
                                       ++runs;
                                       release.Wait();
                                       return OkStatus();
                                     },
                                 .online_cpus = 2});
  pb::RestoredRequest r;
  r.set_entropy(std::string(32, 'e'));
  ASSERT_TRUE(ttrpc::CallDirect(&agent, &AgentService::Restored, r).ok());
  for (int i = 0; i < 500 && runs.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(runs.load(), 1);
  agent.StartWarmUp();  // one at a time
  auto soon = [] { return Clock::now() + std::chrono::milliseconds(50); };
  auto st = ttrpc::CallDirect(&agent, &AgentService::PrepareTemplate, pb::Empty(), soon()).status();
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_EQ(DropCaches(root), "");
  auto prepared = std::async(std::launch::async, [&] {
    return ttrpc::CallDirect(&agent, &AgentService::PrepareTemplate, pb::Empty(),
                             Clock::now() + std::chrono::seconds(10));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(DropCaches(root), "");
  release.Open();
  EXPECT_TRUE(prepared.get().ok());
  EXPECT_EQ(DropCaches(root), "3");
  EXPECT_EQ(runs.load(), 1);
  // Done: the next start runs it again.
  agent.StartWarmUp();
  for (int i = 0; i < 500 && runs.load() == 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(runs.load(), 2);
}

// A guest with one CPU gets no warm-up: it would only compete with the
// first container for that CPU.
TEST_F(AgentServiceTest, OneCpuMeansNoWarmUp) {
  std::string root = ::testing::TempDir() + "/agent-one-cpu";
  std::filesystem::remove_all(root);
  std::atomic<int> runs{0};
  AgentService agent(AgentConfig{.state_dir = root + "/state",
                                 .add_entropy = [](const std::string&) { return OkStatus(); },
                                 .warm_up =
                                     [&] {
                                       ++runs;
                                       return OkStatus();
                                     },
                                 .online_cpus = 1});
  pb::RestoredRequest r;
  r.set_entropy(std::string(32, 'e'));
  ASSERT_TRUE(ttrpc::CallDirect(&agent, &AgentService::Restored, r).ok());
  agent.StartWarmUp();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(runs.load(), 0);
}

}  // namespace
}  // namespace runhcs::guest
