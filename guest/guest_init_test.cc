// The PID-1 helpers that can run on a host: whether the VM has PCI devices
// (which module list it loads before serving), which disk is the system disk.
#include "guest/guest_init.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <thread>

#include "base/io.h"
#include "proto/agent_channel.h"

namespace runhcs::guest {
namespace {

// The system disk is found by its serial, not its name (vda is whichever
// virtio disk probed first), and only once its /dev node exists.
TEST(FindBlockDeviceTest, TheDiskWithTheSerialOnceItsNodeExists) {
  namespace fs = std::filesystem;
  std::string root = ::testing::TempDir() + "/block-" + std::to_string(::getpid());
  fs::remove_all(root);
  ASSERT_TRUE(MkdirAll(root + "/sys/vda", 0755).ok());
  ASSERT_TRUE(MkdirAll(root + "/sys/vdb", 0755).ok());
  ASSERT_TRUE(MkdirAll(root + "/sys/loop0", 0755).ok());  // no serial file
  ASSERT_TRUE(MkdirAll(root + "/dev", 0755).ok());
  ASSERT_TRUE(WriteFileAtomic(root + "/sys/vda/serial", "other-disk\n", 0644).ok());
  ASSERT_TRUE(WriteFileAtomic(root + "/sys/vdb/serial", "runhcs-system", 0644).ok());
  auto st = FindBlockDevice(agent::kSystemDiskSerial, 30, root + "/sys", root + "/dev");
  EXPECT_EQ(st.status().code(), Code::kNotFound);  // no /dev/vdb yet
  EXPECT_NE(st.status().message().find("runhcs-system"), std::string::npos);
  auto later = std::async(std::launch::async, [&] {
    return FindBlockDevice(agent::kSystemDiskSerial, 5000, root + "/sys", root + "/dev");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(WriteFileAtomic(root + "/dev/vdb", "", 0644).ok());
  auto found = later.get();
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(*found, "vdb");
  EXPECT_EQ(FindBlockDevice("none", 0, root + "/sys", root + "/dev").status().code(),
            Code::kNotFound);
  EXPECT_EQ(FindBlockDevice("x", 0, root + "/missing", root + "/dev").status().code(),
            Code::kNotFound);
  fs::remove_all(root);
}

// Both kernel knobs are written in place (never created: a kernel without
// one must be reported, not papered over with a new file), and a missing one
// does not stop the other.
TEST(TuneMemoryReturnTest, WritesBothKnobsInPlaceAndReportsAMissingOne) {
  namespace fs = std::filesystem;
  std::string root = ::testing::TempDir() + "/mem-" + std::to_string(::getpid());
  fs::remove_all(root);
  std::string pcp = root + "/proc/sys/vm/percpu_pagelist_high_fraction";
  std::string order = root + "/sys/module/page_reporting/parameters/page_reporting_order";
  ASSERT_TRUE(MkdirAll(root + "/proc/sys/vm", 0755).ok());
  ASSERT_TRUE(MkdirAll(root + "/sys/module/page_reporting/parameters", 0755).ok());
  ASSERT_TRUE(WriteFileAtomic(pcp, "0\n", 0644).ok());
  ASSERT_TRUE(WriteFileAtomic(order, "9\n", 0644).ok());
  ASSERT_TRUE(TuneMemoryReturn(root + "/proc/sys", root + "/sys/module").ok());
  EXPECT_EQ(*ReadFile(pcp), std::to_string(kPcpFraction));
  EXPECT_EQ(*ReadFile(order), "0");

  ASSERT_TRUE(WriteFileAtomic(order, "9\n", 0644).ok());
  fs::remove(pcp);
  Status st = TuneMemoryReturn(root + "/proc/sys", root + "/sys/module");
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_NE(st.message().find("percpu_pagelist_high_fraction"), std::string::npos) << st.ToString();
  EXPECT_FALSE(fs::exists(pcp));
  EXPECT_EQ(*ReadFile(order), "0");  // still written
  fs::remove_all(root);
}

}  // namespace
}  // namespace runhcs::guest
