#include "oci/runtime.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "base/io.h"

namespace runhcs::oci {
namespace {

using namespace std::chrono_literals;

// A runtime that hangs on every command (a runc stuck on a frozen cgroup).
class HungRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/runhcs-runtime-test.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    bin_ = dir_ + "/hung-runtime";
    ASSERT_TRUE(WriteFileAtomic(bin_, "#!/bin/sh\nexec sleep 600\n", 0755).ok());
  }
  void TearDown() override {
    ::unlink(bin_.c_str());
    ::unlink((dir_ + "/log.json").c_str());
    ::rmdir(dir_.c_str());
  }
  std::string dir_, bin_;
};

TEST_F(HungRuntimeTest, EveryCommandIsKilledAtItsTimeoutWithDeadlineExceeded) {
  Runtime rt({bin_, "", false, 300ms}, dir_);
  auto t0 = std::chrono::steady_clock::now();
  Status st = rt.Pause("c");
  EXPECT_EQ(st.code(), Code::kDeadlineExceeded) << st.ToString();
  EXPECT_NE(st.message().find("pause"), std::string::npos) << st.message();
  auto ps = rt.Ps("c");  // reads the runtime's output: bounded too
  EXPECT_EQ(ps.status().code(), Code::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

}  // namespace
}  // namespace runhcs::oci
