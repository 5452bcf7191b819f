// Stats and OOM of process-isolated tasks through a real containerd 1.6 and
// plain `ctr`: `ctr task metrics` decodes what the shim answers, and the
// numbers are the container's cgroup files.
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/io.h"
#include "stats/cgroup.h"
#include "tests/subprocess.h"

namespace runhcs::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class StatsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ctrd_.ok()) << ctrd_.log();
    rootfs_ = ctrd_.dir() + "/rootfs";
    ASSERT_TRUE(MakeBusyboxRootfs(rootfs_));
  }
  // The `METRIC VALUE` table of `ctr task metrics`.
  std::map<std::string, std::string> Metrics(const std::string& id) {
    RunResult r = ctrd_.Ctr({"task", "metrics", id});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::map<std::string, std::string> m;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
      std::istringstream ls(line);
      std::string k, v;
      if (ls >> k >> v) m[k] = v;
    }
    return m;
  }
  uint64_t CgroupValue(pid_t pid, const std::string& controller, const std::string& file) {
    auto cg = stats::CgroupsOf(pid);
    EXPECT_TRUE(cg.ok());
    std::string path =
        std::string(stats::kCgroupRoot) + "/" + controller + cg->v1[controller] + "/" + file;
    return std::strtoull(ReadFileOr(path).c_str(), nullptr, 10);
  }
  pid_t InitPid(const std::string& id) {
    RunResult r = ctrd_.Ctr({"task", "ls"});
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
      std::istringstream ls(line);
      std::string task, pid;
      if (ls >> task >> pid && task == id) return std::atoi(pid.c_str());
    }
    return 0;
  }

  Containerd ctrd_{DirName(RUNHCS_SHIM_BINARY)};
  std::string rootfs_;
};

TEST_F(StatsTest, CtrTaskMetricsPrintsTheContainersCgroupFiles) {
  ASSERT_FALSE(stats::IsUnified()) << "these hosts are cgroup v1; v2 is covered by unit tests";
  RunResult r =
      ctrd_.Ctr({"run", "-d", "--runtime", "io.containerd.runhcs.v1", "--memory-limit", "67108864",
                 "--rootfs", rootfs_, "m1", "/bin/sh", "-c", "sleep 1000 & sleep 1000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WaitFor([&] { return ctrd_.TaskStatus("m1") == "RUNNING"; }, 15s));
  pid_t pid = InitPid("m1");
  ASSERT_GT(pid, 0);
  // sh execs its last command: two processes.
  ASSERT_TRUE(WaitFor([&] { return Metrics("m1")["pids.current"] == "2"; }, 5s))
      << ctrd_.Ctr({"task", "metrics", "m1"}).out;

  auto m = Metrics("m1");
  EXPECT_EQ(m["memory.limit_in_bytes"], "67108864");
  EXPECT_EQ(m["memory.limit_in_bytes"],
            std::to_string(CgroupValue(pid, "memory", "memory.limit_in_bytes")));
  EXPECT_EQ(m["pids.current"], std::to_string(CgroupValue(pid, "pids", "pids.current")));
  uint64_t usage = std::strtoull(m["memory.usage_in_bytes"].c_str(), nullptr, 10);
  EXPECT_GT(usage, 0u);
  uint64_t cpu = std::strtoull(m["cpuacct.usage"].c_str(), nullptr, 10);
  EXPECT_GT(cpu, 0u);
  EXPECT_LE(cpu, CgroupValue(pid, "cpuacct", "cpuacct.usage"));  // read before, so not more

  // The whole message, as JSON: block I/O and the rest decode too.
  RunResult j = ctrd_.Ctr({"task", "metrics", "--format", "json", "m1"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto doc = nlohmann::json::parse(j.out.substr(j.out.find('{')));
  EXPECT_TRUE(doc.contains("memory")) << j.out;
  EXPECT_TRUE(doc.contains("cpu")) << j.out;
  EXPECT_EQ(doc["memory"]["usage"]["limit"], 67108864);
  ctrd_.KillAndDelete("m1");
}

TEST_F(StatsTest, MetricsOfAnUnknownTaskIsAnError) {
  RunResult r = ctrd_.Ctr({"task", "metrics", "nope"});
  EXPECT_NE(r.exit_code, 0);
}

TEST_F(StatsTest, AContainerPastItsMemoryLimitGetsTaskOomThenExit137) {
  std::string events = ctrd_.dir() + "/events.txt";
  pid_t ev = ctrd_.CtrBackground({"events"}, events);
  std::this_thread::sleep_for(300ms);
  // dd reads 256 MiB of zeros into one buffer: past a 32 MiB limit.
  RunResult r = ctrd_.Ctr({"run", "--runtime", "io.containerd.runhcs.v1", "--memory-limit",
                           "33554432", "--rootfs", rootfs_, "oom1", "/bin/busybox", "dd",
                           "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"});
  EXPECT_EQ(r.exit_code, 137) << r.out << r.err;
  std::this_thread::sleep_for(300ms);
  ::kill(ev, SIGTERM);
  std::string text = ReadFileOr(events);
  size_t oom = text.find(R"(/tasks/oom {"container_id":"oom1"})");
  size_t exit = text.find(R"(/tasks/exit {"container_id":"oom1")");
  ASSERT_NE(oom, std::string::npos) << text;
  ASSERT_NE(exit, std::string::npos) << text;
  EXPECT_LT(oom, exit) << text;
  EXPECT_THAT(text.substr(exit, text.find('\n', exit) - exit), HasSubstr(R"("exit_status":137)"));
  EXPECT_EQ(text.find("/tasks/oom", oom + 1), std::string::npos) << "one OOM, one event: " << text;
  ctrd_.Ctr({"container", "delete", "oom1"});
}

}  // namespace
}  // namespace runhcs::testing
