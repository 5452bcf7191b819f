// Faults around a process-isolated container, through a real containerd and
// plain `ctr`: each ends with clear errors, the right exit codes and events,
// and nothing left behind (processes, runtime state, mounts, sockets).
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "base/io.h"
#include "tests/subprocess.h"

namespace runhcs::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ctrd_.ok()) << ctrd_.log();
    rootfs_ = ctrd_.dir() + "/rootfs";
    ASSERT_TRUE(MakeBusyboxRootfs(rootfs_));
    runc_root_ = ctrd_.dir() + "/runc-root";
  }
  // A runtime config naming `runtime` (a wrapper of runc) with a root of its
  // own, so its state can be listed.
  std::string Config(const std::string& runtime) {
    std::string cfg = ctrd_.dir() + "/" + DirBase(runtime) + ".json";
    EXPECT_TRUE(WriteFileAtomic(cfg,
                                "{\"ociRuntime\":\"" + runtime + "\",\"ociRuntimeRoot\":\"" +
                                    runc_root_ + "\"}",
                                0644)
                    .ok());
    return cfg;
  }
  // A runc wrapper: `on_create` runs after a real `runc create` succeeded.
  std::string Wrapper(const std::string& name, const std::string& on_create) {
    std::string path = ctrd_.dir() + "/" + name;
    std::ofstream(path) << "#!/bin/sh\n"
                           "for a in \"$@\"; do\n"
                           "  if [ \"$a\" = create ]; then runc \"$@\" || exit $?; "
                        << on_create
                        << "; fi\n"
                           "done\n"
                           "exec runc \"$@\"\n";
    ::chmod(path.c_str(), 0755);
    return path;
  }
  static std::string DirBase(const std::string& p) { return p.substr(p.rfind('/') + 1); }
  std::string RuncList() { return RunCommand({"runc", "--root", runc_root_, "list", "-q"}).out; }
  bool Mounted(const std::string& id) {
    return ReadFileOr("/proc/self/mountinfo").find("/" + id + "/rootfs") != std::string::npos;
  }
  void ExpectNothingLeft(const std::string& id) {
    EXPECT_TRUE(WaitFor(
        [&] { return CountProcesses("containerd-shim-runhcs-v1 .*-id " + id + " ") == 0; }, 15s))
        << id;
    EXPECT_EQ(RuncList(), "") << id;
    EXPECT_FALSE(Mounted(id)) << id;
    EXPECT_EQ(::access(("/run/runhcs/shims/default-" + id).c_str(), F_OK), -1)
        << "registry entry left: " << id;
  }
  void KillAndDelete(const std::string& id) {
    ctrd_.Ctr({"task", "kill", "-s", "SIGKILL", id});
    EXPECT_TRUE(WaitFor([&] { return ctrd_.TaskStatus(id) == "STOPPED"; }, 15s))
        << ctrd_.TaskStatus(id);
    EXPECT_EQ(ctrd_.Ctr({"task", "delete", id}).exit_code, 0);
    EXPECT_EQ(ctrd_.Ctr({"container", "delete", id}).exit_code, 0);
  }
  std::vector<std::string> Run(const std::string& cfg) {
    std::vector<std::string> a = {"run", "--runtime", "io.containerd.runhcs.v1"};
    if (!cfg.empty()) a.insert(a.end(), {"--runtime-config-path", cfg});
    return a;
  }
  std::vector<std::string> With(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }

  Containerd ctrd_{DirName(RUNHCS_SHIM_BINARY)};
  std::string rootfs_;
  std::string runc_root_;
};

TEST_F(FaultTest, RuntimeDyingMidCreateFailsTheCreateAndLeavesNothing) {
  std::string cfg = Config(Wrapper("runc-dies", "kill -9 $$"));
  RunResult r = ctrd_.Ctr(With(Run(cfg), {"--rootfs", rootfs_, "rdie", "/bin/true"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("create")) << r.err;
  EXPECT_THAT(r.err, HasSubstr("runc-dies exit status 137 (signal 9)"))
      << r.err;  // which runtime, how
  ExpectNothingLeft("rdie");
  ctrd_.Ctr({"container", "delete", "rdie"});
}

TEST_F(FaultTest, ShimKilledDuringCreateIsCleanedUpByDelete) {
  // The runtime hangs after creating: the shim is killed while it waits.
  std::string cfg = Config(Wrapper("runc-hangs", "exec sleep 19"));
  pid_t run = ctrd_.CtrBackground(With(Run(cfg), {"--rootfs", rootfs_, "half", "/bin/true"}),
                                  ctrd_.dir() + "/half.out");
  ASSERT_TRUE(WaitFor([&] { return CountProcesses("runc-hangs") > 0 && !RuncList().empty(); }, 15s))
      << RuncList();
  std::string shim =
      TrimNewlines(RunCommand({"pgrep", "-f", "containerd-shim-runhcs-v1 .*-id half "}).out);
  ASSERT_FALSE(shim.empty());
  ASSERT_EQ(::kill(std::atoi(shim.c_str()), SIGKILL), 0);
  // containerd fails the create and runs the shim's `delete`.
  int status = 0;
  ASSERT_TRUE(WaitFor([&] { return ::waitpid(run, &status, WNOHANG) == run; }, 30s));
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_TRUE(WaitFor([&] { return RuncList().empty(); }, 15s)) << RuncList();
  ExpectNothingLeft("half");
  RunCommand({"pkill", "-f", "^sleep 19$"});
  ctrd_.Ctr({"task", "delete", "half"});
  ctrd_.Ctr({"container", "delete", "half"});
}

TEST_F(FaultTest, AFifoReaderThatGoesAwayLeavesTheShimServingAndTheExitRight) {
  std::string events = ctrd_.dir() + "/events.txt";
  pid_t ev = ctrd_.CtrBackground({"events"}, events);
  std::this_thread::sleep_for(300ms);
  // An attached `ctr run` reads the fifos; it dies while output streams.
  pid_t reader = ctrd_.CtrBackground(With(Run(""), {"--rootfs", rootfs_, "chatty", "/bin/sh", "-c",
                                                    "while true; do echo lots of output; done"}),
                                     ctrd_.dir() + "/chatty.out");
  ASSERT_TRUE(WaitFor([&] { return ctrd_.TaskStatus("chatty") == "RUNNING"; }, 15s));
  std::this_thread::sleep_for(300ms);
  ::kill(reader, SIGKILL);
  ::waitpid(reader, nullptr, 0);
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(ctrd_.TaskStatus("chatty"), "RUNNING");
  RunResult ex =
      ctrd_.Ctr({"task", "exec", "--exec-id", "e1", "chatty", "/bin/echo", "still serving"});
  EXPECT_EQ(ex.exit_code, 0) << ex.err;
  EXPECT_EQ(ex.out, "still serving\n");
  KillAndDelete("chatty");
  std::this_thread::sleep_for(300ms);
  ::kill(ev, SIGTERM);
  std::string text = ReadFileOr(events);
  EXPECT_THAT(text, HasSubstr(R"(/tasks/exit {"container_id":"chatty","id":"chatty")"));
  EXPECT_THAT(text, HasSubstr(R"("exit_status":137)"));
  ExpectNothingLeft("chatty");
}

TEST_F(FaultTest, AFileLogOnAFullFilesystemKeepsTheContainerRunningAndIsLogged) {
  std::string tiny = ctrd_.dir() + "/tiny";
  ::mkdir(tiny.c_str(), 0755);
  ASSERT_EQ(::mount("tmpfs", tiny.c_str(), "tmpfs", 0, "size=64k"), 0) << std::strerror(errno);
  RunResult r = ctrd_.Ctr(With(Run(""), {"-d", "--log-uri", "file://" + tiny + "/log", "--rootfs",
                                         rootfs_, "full", "/bin/sh", "-c",
                                         "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; "
                                         "echo line $i of output that will not fit; done"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto count = [&] { return std::atoi(ReadFileOr(rootfs_ + "/tmp/n").c_str()); };
  // 64 KiB of log is ~1700 lines: well past that, it still runs.
  EXPECT_TRUE(WaitFor([&] { return count() > 5000; }, 90s)) << count();
  struct statvfs vfs;
  ASSERT_EQ(::statvfs(tiny.c_str(), &vfs), 0);
  EXPECT_EQ(vfs.f_bavail, 0u) << "the log filesystem should be full";
  // (A read can land between the shell's truncate and write: take the
  // largest of a few.)
  int before = 0;
  for (int i = 0; i < 5; ++i) before = std::max(before, count());
  EXPECT_TRUE(WaitFor([&] { return count() > before; }, 5s))
      << "the container stopped while its log is full";
  EXPECT_EQ(ctrd_.TaskStatus("full"), "RUNNING");
  EXPECT_THAT(ctrd_.log(), HasSubstr("No space left on device"));
  KillAndDelete("full");
  ExpectNothingLeft("full");
  ::umount2(tiny.c_str(), MNT_DETACH);
}

TEST_F(FaultTest, ContainerdKilledDuringAnExecReconnectsAndTheTaskStaysManageable) {
  RunResult r =
      ctrd_.Ctr(With(Run(""), {"-d", "--rootfs", rootfs_, "survive", "/bin/sleep", "1000"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WaitFor([&] { return ctrd_.TaskStatus("survive") == "RUNNING"; }, 15s));
  pid_t exec =
      ctrd_.CtrBackground({"task", "exec", "--exec-id", "long", "survive", "/bin/sleep", "2"},
                          ctrd_.dir() + "/exec.out");
  ASSERT_TRUE(WaitFor(
      [&] {
        return ctrd_.Ctr({"task", "ps", "survive"}).out.find('\n') != std::string::npos &&
               CountProcesses("^/bin/sleep 2$") > 0;
      },
      15s));
  ASSERT_TRUE(ctrd_.CrashAndRestart()) << ctrd_.log();
  ::waitpid(exec, nullptr, 0);  // its containerd went away
  // The shim kept running: containerd reconnects through the bundle's address.
  EXPECT_TRUE(WaitFor([&] { return ctrd_.TaskStatus("survive") == "RUNNING"; }, 15s))
      << ctrd_.TaskStatus("survive");
  EXPECT_TRUE(WaitFor([&] { return CountProcesses("^/bin/sleep 2$") == 0; },
                      10s));  // the exec ran to its end
  RunResult ex =
      ctrd_.Ctr({"task", "exec", "--exec-id", "after", "survive", "/bin/echo", "after restart"});
  EXPECT_EQ(ex.exit_code, 0) << ex.err;
  EXPECT_EQ(ex.out, "after restart\n");
  KillAndDelete("survive");
  ExpectNothingLeft("survive");
}

}  // namespace
}  // namespace runhcs::testing
