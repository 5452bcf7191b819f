#include "stats/cgroup.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace runhcs::stats {
namespace {

namespace fs = std::filesystem;

class CgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cgroup-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }
  void Put(const std::string& rel, const std::string& text) {
    fs::create_directories(fs::path(root_ + "/" + rel).parent_path());
    std::ofstream(root_ + "/" + rel) << text;
  }
  std::string root_;
};

TEST(ParseProcCgroup, SplitsJoinedControllersAndKeepsTheUnifiedPath) {
  auto cg = ParseProcCgroup(
      "12:cpu,cpuacct:/default/c1\n4:memory:/default/c1\n1:name=systemd:/x\n0::/u/c1\n");
  EXPECT_EQ(cg.v1.at("cpu"), "/default/c1");
  EXPECT_EQ(cg.v1.at("cpuacct"), "/default/c1");
  EXPECT_EQ(cg.v1.at("memory"), "/default/c1");
  EXPECT_EQ(cg.v1.count("name=systemd"), 0u);
  EXPECT_TRUE(cg.has_v2);
  EXPECT_EQ(cg.v2, "/u/c1");
}

TEST_F(CgroupTest, V1ReadsEveryControllerInTheMessagesUnits) {
  const std::string p = "/default/c1";
  Put("pids" + p + "/pids.current", "3\n");
  Put("pids" + p + "/pids.max", "max\n");
  Put("cpuacct" + p + "/cpuacct.usage", "123456789\n");
  Put("cpuacct" + p + "/cpuacct.usage_percpu", "100000000 23456789 \n");
  Put("cpuacct" + p + "/cpuacct.stat", "user 7\nsystem 3\n");
  Put("cpu" + p + "/cpu.stat", "nr_periods 10\nnr_throttled 2\nthrottled_time 5000\n");
  Put("memory" + p + "/memory.stat",
      "cache 4096\nrss 8192\npgfault 11\ntotal_rss 8192\nhierarchical_memory_limit 33554432\n");
  Put("memory" + p + "/memory.usage_in_bytes", "12288\n");
  Put("memory" + p + "/memory.limit_in_bytes", "33554432\n");
  Put("memory" + p + "/memory.max_usage_in_bytes", "20480\n");
  Put("memory" + p + "/memory.failcnt", "1\n");
  Put("memory" + p + "/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
  Put("blkio" + p + "/blkio.io_service_bytes_recursive", "Total 0\n");
  Put("blkio" + p + "/blkio.throttle.io_service_bytes_recursive",
      "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n");
  Put("blkio" + p + "/blkio.throttle.io_serviced_recursive", "8:0 Read 1\n8:0 Write 2\nTotal 3\n");
  Put("hugetlb" + p + "/hugetlb.2MB.usage_in_bytes", "2097152\n");
  Put("hugetlb" + p + "/hugetlb.2MB.max_usage_in_bytes", "4194304\n");
  Put("hugetlb" + p + "/hugetlb.2MB.failcnt", "0\n");
  Put("hugetlb" + p + "/hugetlb.2MB.rsvd.usage_in_bytes", "0\n");
  ProcessCgroups cg;
  for (const char* c : {"pids", "cpu", "cpuacct", "memory", "blkio", "hugetlb"}) cg.v1[c] = p;

  auto m = ReadV1(root_, cg);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->pids().current(), 3u);
  EXPECT_EQ(m->pids().limit(), 0u);  // max
  EXPECT_EQ(m->cpu().usage().total(), 123456789u);
  ASSERT_EQ(m->cpu().usage().per_cpu_size(), 2);
  EXPECT_EQ(m->cpu().usage().per_cpu(1), 23456789u);
  uint64_t tick = 1000000000ULL / static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
  EXPECT_EQ(m->cpu().usage().user(), 7 * tick);
  EXPECT_EQ(m->cpu().usage().kernel(), 3 * tick);
  EXPECT_EQ(m->cpu().throttling().throttled_periods(), 2u);
  EXPECT_EQ(m->cpu().throttling().throttled_time(), 5000u);
  EXPECT_EQ(m->memory().cache(), 4096u);
  EXPECT_EQ(m->memory().rss(), 8192u);
  EXPECT_EQ(m->memory().pg_fault(), 11u);
  EXPECT_EQ(m->memory().total_rss(), 8192u);
  EXPECT_EQ(m->memory().hierarchical_memory_limit(), 33554432u);
  EXPECT_EQ(m->memory().usage().usage(), 12288u);
  EXPECT_EQ(m->memory().usage().limit(), 33554432u);
  EXPECT_EQ(m->memory().usage().max(), 20480u);
  EXPECT_EQ(m->memory().usage().failcnt(), 1u);
  EXPECT_EQ(m->memory().swap().usage(), 0u);  // no swap accounting: zero, not an error
  EXPECT_EQ(m->memory_oom_control().oom_kill(), 2u);
  // The throttle files, since the proportional ones are empty.
  ASSERT_EQ(m->blkio().io_service_bytes_recursive_size(), 3);
  EXPECT_EQ(m->blkio().io_service_bytes_recursive(1).op(), "Write");
  EXPECT_EQ(m->blkio().io_service_bytes_recursive(1).major(), 8u);
  EXPECT_EQ(m->blkio().io_service_bytes_recursive(1).value(), 8192u);
  EXPECT_EQ(m->blkio().io_serviced_recursive_size(), 2);
  ASSERT_EQ(m->hugetlb_size(), 1);
  EXPECT_EQ(m->hugetlb(0).pagesize(), "2MB");
  EXPECT_EQ(m->hugetlb(0).max(), 4194304u);
}

TEST_F(CgroupTest, V1OfAGoneCgroupIsNotFound) {
  ProcessCgroups cg;
  cg.v1["memory"] = "/gone";
  EXPECT_EQ(ReadV1(root_, cg).status().code(), Code::kNotFound);
}

TEST_F(CgroupTest, V2ReadsTheUnifiedFiles) {
  const std::string d = root_ + "/u/c1";
  Put("u/c1/pids.current", "2\n");
  Put("u/c1/pids.max", "100\n");
  Put("u/c1/cpu.stat",
      "usage_usec 500\nuser_usec 300\nsystem_usec 200\nnr_periods 0\nnr_throttled "
      "0\nthrottled_usec 0\n");
  Put("u/c1/memory.stat",
      "anon 4096\nfile 8192\nworkingset_refault_anon 1\nworkingset_refault_file 2\npgfault 9\n");
  Put("u/c1/memory.current", "12288\n");
  Put("u/c1/memory.max", "max\n");
  Put("u/c1/memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
  Put("u/c1/io.stat", "8:0 rbytes=4096 wbytes=512 rios=1 wios=2 dbytes=0 dios=0\n");
  Put("u/c1/hugetlb.2MB.current", "4194304\n");
  Put("u/c1/hugetlb.2MB.max", "max\n");
  Put("u/c1/hugetlb.2MB.rsvd.current", "0\n");
  Put("u/c1/hugetlb.1GB.current", "0\n");
  Put("u/c1/hugetlb.1GB.max", "1073741824\n");
  Put("cgroup.controllers", "cpu memory pids io hugetlb\n");

  auto m = ReadV2(d);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->pids().current(), 2u);
  EXPECT_EQ(m->pids().limit(), 100u);
  EXPECT_EQ(m->cpu().usage_usec(), 500u);
  EXPECT_EQ(m->cpu().system_usec(), 200u);
  EXPECT_EQ(m->memory().anon(), 4096u);
  EXPECT_EQ(m->memory().workingset_refault(), 3u);
  EXPECT_EQ(m->memory().usage(), 12288u);
  EXPECT_EQ(m->memory().usage_limit(), UINT64_MAX);
  EXPECT_EQ(m->memory_events().max(), 4u);
  EXPECT_EQ(m->memory_events().oom_kill(), 1u);
  ASSERT_EQ(m->io().usage_size(), 1);
  EXPECT_EQ(m->io().usage(0).wbytes(), 512u);
  EXPECT_EQ(m->io().usage(0).wios(), 2u);
  // One entry per page size (the reservation files are not page sizes).
  ASSERT_EQ(m->hugetlb_size(), 2);
  EXPECT_EQ(m->hugetlb(0).pagesize(), "1GB");
  EXPECT_EQ(m->hugetlb(0).max(), 1073741824u);
  EXPECT_EQ(m->hugetlb(1).pagesize(), "2MB");
  EXPECT_EQ(m->hugetlb(1).current(), 4194304u);
  EXPECT_EQ(m->hugetlb(1).max(), UINT64_MAX);

  // A unified root answers with the v2 message and its type URL.
  ProcessCgroups cg;
  cg.has_v2 = true;
  cg.v2 = "/u/c1";
  EXPECT_TRUE(IsUnified(root_));
  auto any = ReadMetricsAny(root_, cg);
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->type_url(), "io.containerd.cgroups.v2.Metrics");
  io::containerd::cgroups::v2::Metrics back;
  ASSERT_TRUE(back.ParseFromString(any->value()));
  EXPECT_EQ(back.memory().usage(), 12288u);
  EXPECT_EQ(MemoryDir(root_, cg), d);
}

TEST_F(CgroupTest, AV1RootAnswersWithTheV1TypeUrl) {
  Put("memory/c/memory.usage_in_bytes", "1\n");
  ProcessCgroups cg;
  cg.v1["memory"] = "/c";
  EXPECT_FALSE(IsUnified(root_));
  auto any = ReadMetricsAny(root_, cg);
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->type_url(), "io.containerd.cgroups.v1.Metrics");
  EXPECT_EQ(MemoryDir(root_, cg), root_ + "/memory/c");
}

}  // namespace
}  // namespace runhcs::stats
