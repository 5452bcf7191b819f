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
  bool seen = WaitFor(
      [&] {
        fwd.Publish(exit);
        fwd.Flush(5s);
        return ReadFileOr(out).find("runhcs-evt-c1") != std::string::npos;
      },
      10s);
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

// The helper itself: a containerd that exits at start (here, a config it
// cannot parse) is reported as not ok at once, with its log, instead of
// being asked for its version for minutes.
TEST(Containerd, OneThatExitsAtStartIsNotOkWithItsLog) {
  Containerd ctrd(Containerd::Options{{}, {}, "this is not = = toml\n", {}});
  EXPECT_FALSE(ctrd.ok());
  EXPECT_NE(ctrd.log().find("toml"), std::string::npos) << ctrd.log();
}

// A child that exits without reading its stdin: the test goes on (no
// SIGPIPE), and the child's exit code comes back.
TEST(RunCommandHelper, AChildThatReadsNoStdinDoesNotEndTheTest) {
  RunOptions o;
  o.stdin_data = std::string(1 << 20, 'x');  // more than a pipe holds
  for (int i = 0; i < 20; ++i) EXPECT_EQ(RunCommand({"sh", "-c", "exit 3"}, o).exit_code, 3);
}

}  // namespace
}  // namespace runhcs::testing
