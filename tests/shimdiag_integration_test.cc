// shimdiag against real shims: a hypervisor-isolated pod (real containerd,
// real QEMU) and a process-isolated one, driven with the shimdiag binary.
#include <sys/stat.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "base/io.h"
#include "tests/pod_fixture.h"
#include "tests/subprocess.h"

namespace runhcs::testing {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

class ShimdiagTest : public PodFixture {
 protected:
  RunResult Diag(std::vector<std::string> args, const std::string& input = "") {
    args.insert(args.begin(), RUNHCS_SHIMDIAG_BINARY);
    RunOptions o;
    o.stdin_data = input;
    o.timeout = std::chrono::seconds(120);
    return RunCommand(args, o);
  }
  std::string ShimPid(const std::string& pod) {
    return TrimNewlines(
        RunCommand({"pgrep", "-f", "containerd-shim-runhcs-v1 .*-id " + pod + " "}).out);
  }
};

TEST_F(ShimdiagTest, OnALiveHypervisorPod) {
  StartPod("diagvm", {"diagvm-w"}, /*hypervisor=*/true);
  const std::string shim = "default-diagvm";
  const std::string pid = ShimPid("diagvm");
  ASSERT_FALSE(pid.empty());

  {
    SCOPED_TRACE("list, pid");
    RunResult r = Diag({"list"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr(shim + "\n"));
    r = Diag({"list", "--pids"});
    // Columns are as wide as the longest name: other tests' shims (a CRI
    // pod's 64-hex id) may be listed too.
    EXPECT_THAT(r.out, ContainsRegex("(^|\n)" + shim + " +" + pid + "\n")) << r.out;
    r = Diag({"pid", "default-diagv"});  // a unique prefix
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(TrimNewlines(r.out), pid);
  }
  {
    SCOPED_TRACE("exec in the VM");
    std::string guest_kernel =
        TrimNewlines(ReadFileOr(std::string(RUNHCS_BOOT_DIR) + "/kernel.release"));
    ASSERT_FALSE(guest_kernel.empty());
    RunResult r = Diag({"exec", shim, "uname", "-r"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(TrimNewlines(r.out), guest_kernel);
    r = Diag({"exec", shim, "sh", "-c", "echo to-stderr >&2; exit 3"});
    EXPECT_EQ(r.exit_code, 3);
    EXPECT_THAT(r.err, HasSubstr("to-stderr"));
    r = Diag({"exec", shim, "tr", "a-z", "A-Z"}, "piped through the VM\n");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "PIPED THROUGH THE VM\n");
    r = Diag({"exec", shim, "/no/such/binary"});
    EXPECT_NE(r.exit_code, 0);
  }
  {
    SCOPED_TRACE("tasks");
    RunResult r = Diag({"tasks", "--execs", shim});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("diagvm\n|----> \trunning: diagvm\n"));
    EXPECT_THAT(r.out, HasSubstr("diagvm-w\n|----> \trunning: diagvm-w\n"));
    r = Diag({"tasks", "--json", shim});
    EXPECT_THAT(r.out, HasSubstr("\"id\": \"diagvm-w\""));
  }
  {
    SCOPED_TRACE("share");
    std::string dir = ctrd_.dir() + "/shared";
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    std::ofstream(dir + "/hello.txt") << "hello from the host\n";
    RunResult r = Diag({"share", "--ro", shim, dir, "/mnt/ro"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "Shared " + dir + " into " + shim + " at /mnt/ro (read-only)\n");
    r = Diag({"exec", shim, "cat", "/mnt/ro/hello.txt"});
    EXPECT_EQ(r.out, "hello from the host\n") << r.err;
    r = Diag({"exec", shim, "sh", "-c", "echo x > /mnt/ro/new.txt"});
    EXPECT_NE(r.exit_code, 0);
    EXPECT_THAT(r.err, HasSubstr("Read-only"));
    EXPECT_NE(::access((dir + "/new.txt").c_str(), F_OK), 0);

    r = Diag({"share", shim, dir, "/mnt/rw"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    r = Diag({"exec", shim, "sh", "-c", "echo written in the VM > /mnt/rw/new.txt"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(ReadFileOr(dir + "/new.txt"), "written in the VM\n");

    // A symlink is resolved on the host before anything is mounted: the VM
    // gets the target, and a dangling link is refused like a missing path.
    std::string link = ctrd_.dir() + "/link-to-shared";
    ASSERT_EQ(::symlink(dir.c_str(), link.c_str()), 0);
    r = Diag({"share", "--ro", shim, link, "/mnt/via-link"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    r = Diag({"exec", shim, "cat", "/mnt/via-link/hello.txt"});
    EXPECT_EQ(r.out, "hello from the host\n") << r.err;
    std::string dangling = ctrd_.dir() + "/dangling";
    ASSERT_EQ(::symlink((ctrd_.dir() + "/nothing-here").c_str(), dangling.c_str()), 0);
    r = Diag({"share", shim, dangling, "/mnt/y"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr("does not exist"));

    r = Diag({"share", shim, ctrd_.dir() + "/no-such-dir", "/mnt/x"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr("does not exist"));
    r = Diag({"share", shim, "relative/path", "/mnt/x"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_THAT(r.err, HasSubstr("not absolute"));
    // What the VM runs on is never mounted over; the VM still answers after.
    for (const char* bad :
         {"/", "/proc", "/dev", "/sys/fs", "/run", "/mnt/../../etc", "/init", "mnt"}) {
      r = Diag({"share", shim, dir, bad});
      EXPECT_EQ(r.exit_code, 1) << bad;
      EXPECT_THAT(r.err, HasSubstr(fmt::format("{:?}", bad))) << bad;
    }
    r = Diag({"exec", shim, "cat", "/proc/self/comm"});
    EXPECT_EQ(r.out, "cat\n") << r.err;
  }
  {
    SCOPED_TRACE("stacks");
    RunResult r = Diag({"stacks", shim});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("Stacks:\nthread "));
    EXPECT_THAT(r.out, HasSubstr("\nthread " + pid + " containerd-shim:\n"));  // the main thread
    // Real functions of the shim, with their sources.
    EXPECT_THAT(r.out, HasSubstr("runhcs::CaptureThreadStacks()"));
    EXPECT_THAT(r.out, HasSubstr("runhcs::ttrpc::"));
    EXPECT_THAT(r.out, HasSubstr("runhcs::shim::Serve"));
    EXPECT_THAT(r.out, HasSubstr("launch.cc:"));
    EXPECT_THAT(r.out, HasSubstr("\nGuest Stacks:\n"));
    EXPECT_THAT(r.out, HasSubstr("pid 1 (init)"));  // the agent
  }
  {
    SCOPED_TRACE("exec -t through tmux");
    std::string sock = "runhcs-shimdiag-" + std::to_string(::getpid());
    std::string done = ctrd_.dir() + "/tty-exit";
    auto tmux = [&](std::vector<std::string> a) {
      a.insert(a.begin(), {"tmux", "-L", sock});
      return RunCommand(a);
    };
    auto screen = [&] { return tmux({"capture-pane", "-p", "-t", "t"}).out; };
    std::string cmd = std::string(RUNHCS_SHIMDIAG_BINARY) + " exec -t " + shim +
                      " /bin/sh; echo EXIT=$? > " + done + "; sleep 30";
    ASSERT_EQ(tmux({"new-session", "-d", "-s", "t", "-x", "120", "-y", "30", cmd}).exit_code, 0);
    EXPECT_TRUE(WaitFor([&] { return screen().find('#') != std::string::npos; }, 30s)) << screen();
    tmux({"send-keys", "-t", "t", "echo MARK-$((6*7)); tty; [ -t 0 ] && echo IS-A-TTY", "Enter"});
    // The output line, not the echoed command line that also names it.
    EXPECT_TRUE(WaitFor([&] { return screen().find("\nIS-A-TTY\n") != std::string::npos; }, 30s))
        << screen();
    std::string s = screen();
    EXPECT_THAT(s, HasSubstr("MARK-42"));
    EXPECT_THAT(s, HasSubstr("/dev/pts/"));
    tmux({"send-keys", "-t", "t", "exit 5", "Enter"});
    EXPECT_TRUE(WaitFor([&] { return ReadFileOr(done) == "EXIT=5\n"; }, 30s))
        << ReadFileOr(done) << screen();
    tmux({"kill-server"});
  }

  {
    // The agent takes crun's start and delete in-process (oci/crun_state.h):
    // what crun made for the workload goes with it all the same.
    SCOPED_TRACE("a workload's removal leaves nothing in the VM");
    const std::vector<std::string> look = {"exec", shim, "sh", "-c",
                                           "ls /run/crun; find /sys/fs/cgroup -type d -name "
                                           "diagvm-w; ps -o comm | grep -c crun; true"};
    RunResult r = Diag(look);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "diagvm-w\n/sys/fs/cgroup/default/diagvm-w\n0\n");
    Remove({"diagvm-w"});
    r = Diag(look);
    EXPECT_EQ(r.out, "0\n") << r.err;
  }

  Remove({"diagvm"});
  EXPECT_TRUE(WaitFor([&] { return ShimPid("diagvm").empty(); }, 15s));
  EXPECT_THAT(Diag({"list"}).out, Not(HasSubstr(shim + "\n")));
  RunResult gone = Diag({"pid", shim});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_THAT(gone.err, HasSubstr("no such shim"));
}

TEST_F(ShimdiagTest, AProcessIsolatedPodHasNoVmToExecOrShareIn) {
  StartPod("diagproc", {}, /*hypervisor=*/false);
  pods_.pop_back();  // no VM to check for
  const std::string shim = "default-diagproc";
  RunResult r = Diag({"exec", shim, "true"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not isolated"));
  r = Diag({"share", shim, "/tmp", "/mnt"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("not isolated"));
  r = Diag({"tasks", shim});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "diagproc\n");
  r = Diag({"stacks", shim});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("runhcs::CaptureThreadStacks()"));
  EXPECT_THAT(r.out, Not(HasSubstr("Guest Stacks:")));
  Remove({"diagproc"});
}

}  // namespace
}  // namespace runhcs::testing
