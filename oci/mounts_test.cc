#include "oci/mounts.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "base/io.h"

namespace runhcs::oci {
namespace {

TEST(Mounts, ParseOptions) {
  MountFlags f = ParseMountOptions({"ro", "nosuid", "lowerdir=/a", "upperdir=/b", "rbind"});
  EXPECT_EQ(f.flags, static_cast<unsigned long>(MS_RDONLY | MS_NOSUID | MS_BIND | MS_REC));
  EXPECT_EQ(f.data, "lowerdir=/a,upperdir=/b");
  EXPECT_EQ(ParseMountOptions({"ro", "rw"}).flags, 0ul);
}

TEST(Mounts, BindMountAndUnmount) {
  char src[] = "/tmp/runhcs-msrc-XXXXXX";
  char dst[] = "/tmp/runhcs-mdst-XXXXXX";
  ASSERT_NE(::mkdtemp(src), nullptr);
  ASSERT_NE(::mkdtemp(dst), nullptr);
  ASSERT_TRUE(WriteFileAtomic(std::string(src) + "/marker", "x", 0644).ok());
  ASSERT_TRUE(MountAll({{"bind", src, "", {"rbind", "ro"}}}, dst).ok());
  EXPECT_EQ(::access((std::string(dst) + "/marker").c_str(), F_OK), 0);
  EXPECT_TRUE(UnmountAll(dst).ok());
  EXPECT_NE(::access((std::string(dst) + "/marker").c_str(), F_OK), 0);
  EXPECT_TRUE(UnmountAll(dst).ok());  // idempotent
  EXPECT_EQ(MountAll({{"bind", "/nonexistent-src", "", {"rbind"}}}, dst).code(), Code::kNotFound);
  ::unlink((std::string(src) + "/marker").c_str());
  ::rmdir(src);
  ::rmdir(dst);
}

}  // namespace
}  // namespace runhcs::oci
