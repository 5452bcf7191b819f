// RuntimeProcess against a stand-in OCI runtime (oci/fake_runtime.h).
#include "proctask/runtime_process.h"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include <gtest/gtest.h>

#include "base/io.h"
#include "base/polled_reaper.h"
#include "oci/fake_runtime.h"

namespace runhcs::proctask {
namespace {

using namespace std::chrono_literals;

// An exec that asked for a terminal the runtime never sends is not
// started: Start fails with the reason (the console socket's wait runs out)
// and its process is killed and reaped, not left running with no stdio, as
// the agent does in a VM.
TEST(RuntimeProcessTest, AnExecWhoseTerminalNeverComesIsKilledAndFails) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // the sleeper is ours to reap
  PolledReaper reaper;                               // the shim's SIGCHLD loop
  std::string dir = ::testing::TempDir() + "/rtproc.XXXXXX";
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  std::string rt = dir + "/fake-runtime";
  ASSERT_TRUE(oci::WriteFakeRuntime(rt, "sleep 60", dir + "/sleeper.pid").ok());
  auto runtime =
      std::make_shared<oci::Runtime>(oci::Runtime::Config{rt, dir + "/root", false}, dir);
  exec::Stdio stdio{"", "", "", /*terminal=*/true};
  auto p = RuntimeProcess::ForExec(runtime, "c1", "e1", dir, R"({"args":["sh"],"terminal":true})",
                                   stdio, {"c1", "ns", dir});
  bool exited = false;
  auto pid = p->Start([&](uint32_t) { exited = true; });
  EXPECT_EQ(pid.status().code(), Code::kDeadlineExceeded) << pid.status().ToString();
  EXPECT_NE(pid.status().message().find("e1"), std::string::npos) << pid.status().ToString();
  auto sleeper_pid = ReadFile(dir + "/sleeper.pid");
  ASSERT_TRUE(sleeper_pid.ok()) << sleeper_pid.status().ToString();
  int sleeper = std::atoi(sleeper_pid->c_str());
  ASSERT_GT(sleeper, 0);
  std::string proc = "/proc/" + std::to_string(sleeper);
  for (int i = 0; i < 100 && ::access(proc.c_str(), F_OK) == 0; ++i)
    std::this_thread::sleep_for(50ms);
  EXPECT_NE(::access(proc.c_str(), F_OK), 0) << "the exec's process is still there";
  EXPECT_FALSE(exited);  // a start that failed reports no exit
  p.reset();
  (void)RemoveTree(dir);
}

}  // namespace
}  // namespace runhcs::proctask
