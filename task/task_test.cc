#include "task/task.h"

#include <gtest/gtest.h>

namespace runhcs::task {
namespace {

TEST(ValidateShareTarget, AcceptsCleanPathsOutsideTheVmsOwn) {
  for (const char* ok :
       {"/mnt", "/mnt/x", "/data/a/b", "/procfs", "/devices", "/running", "/library"}) {
    EXPECT_TRUE(ValidateShareTarget(ok).ok()) << ok << ": " << ValidateShareTarget(ok).ToString();
  }
}

TEST(ValidateShareTarget, RefusesWithInvalidArgumentNamingThePath) {
  for (const char* bad : {"",
                          "mnt",
                          "/",
                          "/mnt/",
                          "//mnt",
                          "/mnt//x",
                          "/mnt/./x",
                          "/mnt/..",
                          "/mnt/../../etc",
                          "/proc",
                          "/proc/1",
                          "/sys",
                          "/sys/fs/cgroup",
                          "/dev",
                          "/dev/shm",
                          "/run",
                          "/run/runhcs",
                          "/init",
                          "/bin/sh",
                          "/sbin",
                          "/usr/bin/crun",
                          "/lib",
                          "/lib64"}) {
    Status st = ValidateShareTarget(bad);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find(fmt::format("{:?}", std::string_view(bad))), std::string::npos)
        << st.message();
  }
}

}  // namespace
}  // namespace runhcs::task
