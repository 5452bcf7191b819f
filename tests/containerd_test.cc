// Against a real containerd 1.6: events forwarded over its TTRPC socket are
// decoded by `ctr events`, and `ctr run` drives this shim's launch protocol.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <thread>

#include "containerd/events/task.pb.h"
#include "events/forwarder.h"
#include "tests/subprocess.h"

namespace runhcs::testing {
namespace {

using namespace std::chrono_literals;

std::string ShimDir() {
  std::string bin = RUNHCS_SHIM_BINARY;
  return bin.substr(0, bin.rfind('/'));
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return pred();
}

TEST(Containerd, ForwardedEventIsDecodedByCtrEvents) {
  Containerd ctrd;
  ASSERT_TRUE(ctrd.ok()) << ctrd.log();
  std::string out = ctrd.dir() + "/events.txt";
  pid_t events = ctrd.CtrBackground({"events"}, out);
  // Subscribed once a first event shows up: publish until one arrives.
  events::Forwarder fwd({.address = ctrd.ttrpc_address(), .ns = "default"});
  containerd::events::TaskExit exit;
  exit.set_container_id("runhcs-evt-c1");
  exit.set_id("runhcs-evt-e1");
  exit.set_pid(4242);
  exit.set_exit_status(3);
  bool seen = WaitFor([&] {
    fwd.Publish(exit);
    fwd.Flush(5s);
    return ReadFileOr(out).find("runhcs-evt-c1") != std::string::npos;
  }, 10s);
  ::kill(events, SIGTERM);
  ::waitpid(events, nullptr, 0);
  std::string text = ReadFileOr(out);
  ASSERT_TRUE(seen) << text << "\n--- containerd log:\n" << ctrd.log();
  EXPECT_EQ(fwd.dropped(), 0u);
  EXPECT_NE(text.find("/tasks/exit"), std::string::npos) << text;
  EXPECT_NE(text.find("\"exit_status\":3"), std::string::npos) << text;
  EXPECT_NE(text.find("runhcs-evt-e1"), std::string::npos) << text;
  EXPECT_EQ(text.find("cannot unmarshal"), std::string::npos) << text;
}

TEST(Containerd, CtrRunDrivesTheLaunchProtocolAndLeavesNothingBehind) {
  Containerd ctrd(ShimDir());
  ASSERT_TRUE(ctrd.ok()) << ctrd.log();
  std::string rootfs = ctrd.dir() + "/rootfs";
  ASSERT_EQ(RunCommand({"mkdir", "-p", rootfs + "/bin"}).exit_code, 0);
  ASSERT_EQ(RunCommand({"cp", "/bin/busybox", rootfs + "/bin/busybox"}).exit_code, 0);
  std::string id = "runhcs-launch-ctr";
  RunResult r = ctrd.Ctr({"run", "--rm", "--runtime", "io.containerd.runhcs.v1", "--rootfs", rootfs,
                          id, "/bin/busybox", "true"});
  // containerd started the shim and got Create's error back through it.
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("not available in this build"), std::string::npos)
      << r.err << "\n--- containerd log:\n" << ctrd.log();
  // containerd shut the shim down (Shutdown, then `delete`): no daemon left
  // for this id, no socket, no task.
  bool gone = WaitFor([&] {
    return RunCommand({"pgrep", "-f", "containerd-shim-runhcs-v1 .*-id " + id + " "}).exit_code != 0;
  }, 10s);
  EXPECT_TRUE(gone) << RunCommand({"ps", "-ef"}).out;
  RunResult tasks = ctrd.Ctr({"task", "ls", "-q"});
  EXPECT_EQ(tasks.out, "");
  std::string bundle = ctrd.dir() + "/state/io.containerd.runtime.v2.task/default/" + id;
  EXPECT_NE(::access(bundle.c_str(), F_OK), 0) << "bundle left behind";
}

}  // namespace
}  // namespace runhcs::testing
