// The runtime warm-up against a stand-in runtime: a script that records each
// call, and whose "container" is a shell that exits once `start` ran.
#include "guest/warm_up.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "base/io.h"
#include "base/polled_reaper.h"

namespace runhcs::guest {
namespace {

class WarmUpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The stand-in's "container" outlives the runtime call that started
    // it: it must come back to this process, as a real one comes to PID 1.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    reaper_ = new PolledReaper();
  }
  static void TearDownTestSuite() { delete reaper_; }

  void SetUp() override {
    top_ = ::testing::TempDir() + "/warm-up-" + std::to_string(::getpid());
    std::filesystem::remove_all(top_);
    ASSERT_TRUE(MkdirAll(top_ + "/usr", 0755).ok());
    cfg_ = {.runtime = top_ + "/runtime",
            .dir = top_ + "/warm",
            .system_dir = top_ + "/usr",
            .timeout = std::chrono::seconds(10),
            .exit_wait = std::chrono::seconds(10)};
  }
  void TearDown() override { std::filesystem::remove_all(top_); }

  // `on_create`/`on_start`: shell run for that verb (in the bundle).
  void Runtime(const std::string& on_create, const std::string& on_start) {
    ASSERT_TRUE(WriteFileAtomic(cfg_.runtime,
                                R"sh(#!/bin/sh
top=$(dirname "$0")
args="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --root|--log|--log-format|--pid-file) [ "$1" = --pid-file ] && pidfile=$2; shift ;;
    create|start|delete) verb=$1 ;;
  esac
  shift
done
echo "$verb${args##*$verb}" >> "$top/calls"
case "$verb" in
  create) cp config.json "$top/config.json"; )sh" +
                                    on_create + R"sh( ;;
  start) )sh" + on_start + R"sh( ;;
esac
exit 0
)sh",
                                0700)
                    .ok());
  }
  std::string Calls() {
    auto s = ReadFile(top_ + "/calls");
    return s.ok() ? *s : "";
  }

  std::string top_;
  WarmUpConfig cfg_;
  static inline PolledReaper* reaper_ = nullptr;
};

// The "container" waits for `start` to make a file, then exits; it also
// exits once the test's directory is gone (a test that never starts it).
constexpr char kCreate[] =
    "(while [ ! -e \"$top/started\" ] && [ -d \"$top\" ]; do sleep 0.01; done) "
    "</dev/null >/dev/null 2>&1 & "
    "echo $! > \"$pidfile\"; echo $! > \"$top/container.pid\"";

TEST_F(WarmUpTest, RunsACriLikeContainerToItsExitThenLeavesNothing) {
  Runtime(kCreate, "touch \"$top/started\"");
  Status st = WarmUpRuntime(cfg_);
  EXPECT_TRUE(st.ok()) << st.ToString();
  // A runtime that is not crun runs every step (no in-process shortcut).
  EXPECT_EQ(Calls(), "create --bundle " + cfg_.dir + " --pid-file " + cfg_.dir +
                         "/init.pid --no-pivot runhcs-warm-up\nstart runhcs-warm-up\n"
                         "delete --force runhcs-warm-up\n");
  EXPECT_FALSE(std::filesystem::exists(cfg_.dir));
  auto text = ReadFile(top_ + "/config.json");
  ASSERT_TRUE(text.ok());
  auto spec = nlohmann::json::parse(*text);
  EXPECT_EQ(spec["root"]["path"], cfg_.dir + "/rootfs");
  EXPECT_EQ(spec["linux"]["cgroupsPath"], kWarmUpCgroupPath);
  bool usr = false;
  for (const auto& m : spec["mounts"])
    usr |= m["destination"] == "/usr" && m["source"] == cfg_.system_dir;
  EXPECT_TRUE(usr) << spec["mounts"].dump();
}

TEST_F(WarmUpTest, AContainerThatDoesNotExitIsForceDeleted) {
  Runtime(kCreate, "true");  // start never lets it go
  cfg_.exit_wait = std::chrono::milliseconds(100);
  Status st = WarmUpRuntime(cfg_);
  EXPECT_EQ(st.code(), Code::kDeadlineExceeded) << st.ToString();
  EXPECT_NE(Calls().find("delete --force runhcs-warm-up\n"), std::string::npos) << Calls();
  EXPECT_FALSE(std::filesystem::exists(cfg_.dir));
  // The stand-in's delete kills nothing: let its "container" go, and see
  // it gone (nothing of a test may outlive it).
  auto read_pid = ReadPidFile(top_ + "/container.pid", "the stand-in's container");
  ASSERT_TRUE(read_pid.ok()) << read_pid.status().ToString();
  pid_t pid = *read_pid;
  ASSERT_TRUE(WriteFileAtomic(top_ + "/started", "", 0600).ok());
  for (int i = 0; i < 500 && ::kill(pid, 0) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_NE(::kill(pid, 0), 0) << "the stand-in's container " << pid << " still runs";
}

TEST_F(WarmUpTest, AFailedCreateIsReportedAndStillCleanedUp) {
  Runtime("exit 1", "true");
  Status st = WarmUpRuntime(cfg_);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(Calls().find("start"), std::string::npos) << Calls();
  EXPECT_NE(Calls().find("delete --force runhcs-warm-up\n"), std::string::npos) << Calls();
  EXPECT_FALSE(std::filesystem::exists(cfg_.dir));
}

TEST_F(WarmUpTest, LeftoversOfAnEarlierRunAreReplaced) {
  ASSERT_TRUE(MkdirAll(cfg_.dir + "/rootfs/bin", 0755).ok());
  ASSERT_TRUE(WriteFileAtomic(cfg_.dir + "/rootfs/bin/x", "x", 0644).ok());
  Runtime(kCreate, "touch \"$top/started\"");
  Status st = WarmUpRuntime(cfg_);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_FALSE(std::filesystem::exists(cfg_.dir));
}

}  // namespace
}  // namespace runhcs::guest
