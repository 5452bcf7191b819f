// The PID-1 helpers that can run on a host: whether the VM has PCI devices
// (which module list it loads before serving).
#include "guest/guest_init.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "base/io.h"

namespace runhcs::guest {
namespace {

TEST(HasPciDevicesTest, OnlyADirectoryWithAnEntryHasDevices) {
  std::string dir = ::testing::TempDir() + "/pci-" + std::to_string(::getpid());
  EXPECT_FALSE(HasPciDevices(dir));  // missing (microvm without a PCI bus)
  ASSERT_TRUE(MkdirAll(dir, 0755).ok());
  EXPECT_FALSE(HasPciDevices(dir));  // empty (microvm with pci=off)
  ASSERT_TRUE(WriteFileAtomic(dir + "/0000:00:00.0", "", 0644).ok());
  EXPECT_TRUE(HasPciDevices(dir));  // q35
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace runhcs::guest
