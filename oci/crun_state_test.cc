#include "oci/crun_state.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "base/io.h"
#include "oci/runtime.h"

namespace runhcs::oci {
namespace {

class CrunStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/runhcs-crun-state.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    root_ = dir_ + "/state";
    ASSERT_TRUE(MkdirAll(root_ + "/c1", 0700).ok());
    ASSERT_TRUE(WriteFileAtomic(root_ + "/c1/status", "{}", 0600).ok());
  }
  void TearDown() override {
    if (child_ > 0) {  // a test that failed before reaping it
      ::kill(child_, SIGKILL);
      ::waitpid(child_, nullptr, 0);
    }
    if (!cgroup_mount_.empty()) {
      ::rmdir((cgroup_ + "/sub").c_str());
      ::rmdir(cgroup_.c_str());
      ::umount2(cgroup_mount_.c_str(), MNT_DETACH);
    }
    (void)RemoveTree(dir_);
  }
  // A cgroup v2 directory of the test's own, on a cgroup2 mount of its own
  // (the host's hierarchy, hybrid or not).
  void MakeCgroup() {
    cgroup_mount_ = dir_ + "/cgroup2";
    ASSERT_EQ(::mkdir(cgroup_mount_.c_str(), 0700), 0);
    ASSERT_EQ(::mount("none", cgroup_mount_.c_str(), "cgroup2", 0, nullptr), 0)
        << std::strerror(errno);
    cgroup_ = cgroup_mount_ + "/runhcs-crun-state-" + std::to_string(::getpid());
    ASSERT_EQ(::mkdir(cgroup_.c_str(), 0755), 0) << std::strerror(errno);
  }
  // A process of the test's own (a paused fork) in that cgroup: child_,
  // killed and reaped by TearDown unless the test reaps it.
  void StartChildInCgroup() {
    MakeCgroup();
    ASSERT_FALSE(HasFatalFailure());
    child_ = ::fork();
    if (child_ == 0) {
      ::pause();
      ::_exit(0);
    }
    ASSERT_GT(child_, 0);
    ASSERT_TRUE(WriteExistingFile(cgroup_ + "/cgroup.procs", std::to_string(child_)).ok());
  }
  // Reaps child_ (SIGKILLed already); its wait status.
  int ReapChild() {
    int status = 0;
    EXPECT_EQ(::waitpid(child_, &status, 0), child_);
    child_ = 0;
    return status;
  }
  // The container's init as crun leaves it after create: the read end of
  // exec.fifo held open, non-blocking.
  UniqueFd MakeFifo() {
    std::string fifo = root_ + "/c1/exec.fifo";
    EXPECT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    return UniqueFd(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  }
  bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

  std::string dir_, root_, cgroup_mount_, cgroup_;
  pid_t child_ = 0;
};

TEST_F(CrunStateTest, ReleaseCreatedWritesOneByteAndUnlinksTheFifo) {
  UniqueFd init = MakeFifo();
  ASSERT_TRUE(init);
  auto done = crun::ReleaseCreated(root_, "c1");
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_TRUE(*done);
  char buf[4];
  EXPECT_EQ(::read(init.get(), buf, sizeof buf), 1);
  EXPECT_FALSE(Exists(root_ + "/c1/exec.fifo"));
  // Started: no fifo, so crun answers a second start.
  done = crun::ReleaseCreated(root_, "c1");
  ASSERT_TRUE(done.ok());
  EXPECT_FALSE(*done);
}

TEST_F(CrunStateTest, ReleaseCreatedWithoutAReaderIsFailedPreconditionAndNeverBlocks) {
  { UniqueFd init = MakeFifo(); }  // the init died before its start
  auto done = crun::ReleaseCreated(root_, "c1");
  EXPECT_EQ(done.status().code(), Code::kFailedPrecondition) << done.status().ToString();
  EXPECT_NE(done.status().message().find("\"c1\" is not running"), std::string::npos);
  EXPECT_TRUE(Exists(root_ + "/c1/exec.fifo"));  // delete's to remove
}

TEST_F(CrunStateTest, ReleaseCreatedLeavesAnythingElseToTheRuntime) {
  ASSERT_TRUE(WriteFileAtomic(root_ + "/c1/exec.fifo", "", 0600).ok());  // not a fifo
  for (auto [root, id] :
       {std::pair{root_, std::string("c1")}, std::pair{root_, std::string("none")},
        std::pair{std::string(), std::string("c1")},
        std::pair{root_, std::string("../state/c1")}}) {
    auto done = crun::ReleaseCreated(root, id);
    ASSERT_TRUE(done.ok()) << id << ": " << done.status().ToString();
    EXPECT_FALSE(*done) << root << " " << id;
  }
  EXPECT_TRUE(Exists(root_ + "/c1/exec.fifo"));
}

TEST_F(CrunStateTest, RemoveExitedRemovesTheCgroupThenTheStateOnceNothingIsLeft) {
  StartChildInCgroup();
  ASSERT_FALSE(HasFatalFailure());
  // A process left: crun's to kill.
  auto done = crun::RemoveExited(root_, "c1", cgroup_);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_FALSE(*done);
  EXPECT_TRUE(Exists(cgroup_));
  EXPECT_TRUE(Exists(root_ + "/c1/status"));

  ::kill(child_, SIGKILL);
  ReapChild();
  done = crun::RemoveExited(root_, "c1", cgroup_);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_TRUE(*done);
  EXPECT_FALSE(Exists(cgroup_));
  EXPECT_FALSE(Exists(root_ + "/c1"));
  EXPECT_TRUE(Exists(root_));
  // Gone already: removed.
  done = crun::RemoveExited(root_, "c1", cgroup_);
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(*done);
}

TEST_F(CrunStateTest, RemoveExitedLeavesASubCgroupAnUnknownCgroupOrAPlainDirectoryToTheRuntime) {
  MakeCgroup();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(::mkdir((cgroup_ + "/sub").c_str(), 0755), 0);
  auto done = crun::RemoveExited(root_, "c1", cgroup_);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_FALSE(*done);
  EXPECT_TRUE(Exists(cgroup_ + "/sub"));
  EXPECT_TRUE(Exists(root_ + "/c1/status"));

  for (const std::string& cg : {std::string(), dir_}) {  // "" and not a cgroup
    done = crun::RemoveExited(root_, "c1", cg);
    ASSERT_TRUE(done.ok()) << done.status().ToString();
    EXPECT_FALSE(*done) << cg;
    EXPECT_TRUE(Exists(root_ + "/c1/status"));
  }
}

TEST_F(CrunStateTest, KillAllWritesCgroupKillForSigkillOnly) {
  StartChildInCgroup();
  ASSERT_FALSE(HasFatalFailure());
  // Not SIGKILL, or no cgroup: crun's (it signals one by one).
  for (auto [cg, sig] :
       {std::pair{cgroup_, SIGTERM}, std::pair{std::string(), SIGKILL}, std::pair{dir_, SIGKILL}}) {
    auto done = crun::KillAll(cg, sig);
    ASSERT_TRUE(done.ok()) << done.status().ToString();
    EXPECT_FALSE(*done) << cg << " " << sig;
  }
  EXPECT_EQ(::kill(child_, 0), 0);  // untouched
  auto done = crun::KillAll(cgroup_, SIGKILL);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_TRUE(*done);
  int status = ReapChild();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
}

// Runtime: the shortcuts when its Config allows them, the runtime binary
// otherwise; a stand-in binary records what it was asked.
class RuntimeShortcutTest : public CrunStateTest {
 protected:
  void SetUp() override {
    CrunStateTest::SetUp();
    bin_ = dir_ + "/crun";
    calls_ = dir_ + "/calls";
    ASSERT_TRUE(WriteFileAtomic(bin_,
                                "#!/bin/sh\n"
                                "shift 6\n"  // --root R --log L --log-format json
                                "echo \"$*\" >> " +
                                    calls_ + "\n",
                                0755)
                    .ok());
  }
  Runtime Make(bool in_process, const std::string& binary = "") {
    return Runtime({.binary = binary.empty() ? bin_ : binary,
                    .root = root_,
                    .in_process_start = in_process,
                    .in_process_delete = in_process,
                    .in_process_kill_all = in_process},
                   dir_);
  }
  std::string Calls() {
    auto calls = ReadFile(calls_);
    return calls.ok() ? *calls : "";
  }
  std::string bin_, calls_;
};

TEST_F(RuntimeShortcutTest, StartAndDeleteExitedRunNoRuntimeWhenTheyCan) {
  Runtime rt = Make(true);
  UniqueFd init = MakeFifo();
  ASSERT_TRUE(rt.Start("c1").ok());
  char buf[4];
  EXPECT_EQ(::read(init.get(), buf, sizeof buf), 1);
  ASSERT_TRUE(rt.DeleteExited("c1", dir_ + "/no-such-cgroup").ok());
  EXPECT_FALSE(Exists(root_ + "/c1"));
  EXPECT_EQ(Calls(), "");
}

TEST_F(RuntimeShortcutTest, WhatTheShortcutsCannotTakeGoesToTheRuntime) {
  Runtime rt = Make(true);
  ASSERT_TRUE(rt.Start("c1").ok());             // no fifo
  ASSERT_TRUE(rt.DeleteExited("c1", "").ok());  // no cgroup known
  ASSERT_TRUE(rt.KillAll("c1", SIGKILL, "").ok());
  ASSERT_TRUE(rt.KillAll("c1", SIGTERM, dir_).ok());
  EXPECT_EQ(Calls(), "start c1\ndelete --force c1\nkill --all c1 9\nkill --all c1 15\n");
  EXPECT_TRUE(Exists(root_ + "/c1/status"));  // the stand-in removes nothing

  { UniqueFd init = MakeFifo(); }
  Status st = rt.Start("c1");
  EXPECT_EQ(st.code(), Code::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("OCI runtime start failed"), std::string::npos) << st.ToString();
}

TEST_F(RuntimeShortcutTest, WithoutTheConfigEveryStepRunsTheRuntime) {
  Runtime rt = Make(false);
  UniqueFd init = MakeFifo();
  ASSERT_TRUE(rt.Start("c1").ok());
  ASSERT_TRUE(rt.DeleteExited("c1", dir_ + "/no-such-cgroup").ok());
  EXPECT_EQ(Calls(), "start c1\ndelete --force c1\n");
  EXPECT_TRUE(Exists(root_ + "/c1/exec.fifo"));
}

TEST_F(RuntimeShortcutTest, ARuntimeThatIsNotCrunRunsEveryStepWhateverTheConfig) {
  const std::string runc = dir_ + "/runc";  // the same stand-in, by another name
  ASSERT_EQ(::link(bin_.c_str(), runc.c_str()), 0);
  Runtime rt = Make(true, runc);
  UniqueFd init = MakeFifo();
  ASSERT_TRUE(rt.Start("c1").ok());
  ASSERT_TRUE(rt.DeleteExited("c1", dir_ + "/no-such-cgroup").ok());
  EXPECT_EQ(Calls(), "start c1\ndelete --force c1\n");
  EXPECT_TRUE(Exists(root_ + "/c1/exec.fifo"));
}

}  // namespace
}  // namespace runhcs::oci
