#include "stats/oom_watcher.h"

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

namespace runhcs::stats {
namespace {

using namespace std::chrono_literals;

class OomWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/oom-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    Events(0);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  // memory.events as the kernel rewrites it.
  void Events(int oom_kills) {
    std::ofstream(dir_ + "/memory.events")
        << "low 0\nhigh 0\nmax 0\noom " << oom_kills << "\noom_kill " << oom_kills << "\n";
  }
  std::string dir_;
};

TEST_F(OomWatcherTest, V2ReportsEachNewOomKillOnce) {
  OomWatcher w;
  std::atomic<int> n{0};
  ASSERT_TRUE(w.Add("c1", dir_, /*unified=*/true, [&] { ++n; }).ok());
  Events(1);
  for (int i = 0; i < 200 && n < 1; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(n.load(), 1);
  Events(1);  // rewritten, no new kill
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(n.load(), 1);
  Events(2);
  for (int i = 0; i < 200 && n < 2; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(n.load(), 2);
}

TEST_F(OomWatcherTest, DrainReportsWhatIsPendingOnTheCallersThread) {
  OomWatcher w;
  std::atomic<int> n{0};
  ASSERT_TRUE(w.Add("c1", dir_, true, [&] { ++n; }).ok());
  Events(3);
  w.Drain("c1");  // whoever gets there first reports it; only once
  for (int i = 0; i < 20 && n < 1; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(n.load(), 1);
  w.Drain("c1");
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(n.load(), 1);
}

TEST_F(OomWatcherTest, RemovedIsNotReportedAndUnknownIdsAreIgnored) {
  OomWatcher w;
  std::atomic<int> n{0};
  ASSERT_TRUE(w.Add("c1", dir_, true, [&] { ++n; }).ok());
  w.Remove("c1");
  w.Remove("never-added");
  w.Drain("never-added");
  Events(5);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(n.load(), 0);
}

TEST_F(OomWatcherTest, AddFailsWhenTheCgroupIsNotThere) {
  OomWatcher w;
  EXPECT_EQ(w.Add("c1", dir_ + "/gone", true, [] {}).code(), Code::kNotFound);
  EXPECT_EQ(w.Add("c1", dir_ + "/gone", false, [] {}).code(), Code::kNotFound);
}

}  // namespace
}  // namespace runhcs::stats
