// A private containerd and pods shaped as containerd's CRI shapes them
// (container-type/sandbox-id annotations), driven with plain `ctr`. TearDown
// checks that every hypervisor pod's VM (QEMU, virtiofsd, state dir) is gone.
#pragma once

#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "base/sha256.h"
#include "tests/subprocess.h"

namespace runhcs::testing {

using namespace std::chrono_literals;

class PodFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ctrd_.ok()) << ctrd_.log();
    rootfs_ = ctrd_.dir() + "/rootfs";
    ASSERT_TRUE(MakeBusyboxRootfs(rootfs_));
  }
  void TearDown() override {
    for (const auto& pod : pods_) {
      std::string dir = VmDir(pod);
      EXPECT_TRUE(WaitFor([&] { return CountProcesses(dir) == 0; }, 10s))
          << RunCommand({"pgrep", "-fa", dir}).out;
      EXPECT_NE(::access(dir.c_str(), F_OK), 0) << dir;
    }
  }
  static std::string VmDir(const std::string& pod) {
    return "/run/runhcs/vm/" + Sha256Hex("default/" + pod).substr(0, 24);
  }
  std::vector<std::string> Cri(const std::string& type, const std::string& pod, bool hypervisor) {
    std::vector<std::string> a = {"--annotation", "io.kubernetes.cri.container-type=" + type,
                                  "--annotation", "io.kubernetes.cri.sandbox-id=" + pod};
    if (hypervisor) {
      a.insert(a.end(), {"--annotation", "io.containerd.runhcs.v1.isolation=hypervisor",
                         "--annotation", "io.containerd.runhcs.v1.vm-accelerator=tcg"});
    }
    return a;
  }
  void RunDetached(const std::string& id, const std::vector<std::string>& flags) {
    std::vector<std::string> args = {"run", "-d", "--runtime", "io.containerd.runhcs.v1"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"--rootfs", rootfs_, id, "/bin/sleep", "1000"});
    RunResult r = ctrd_.Ctr(args);
    ASSERT_EQ(r.exit_code, 0) << id << ": " << r.err << ctrd_.log();
    ASSERT_TRUE(WaitFor([&] { return ctrd_.TaskStatus(id) == "RUNNING"; }, 15s))
        << ctrd_.TaskStatus(id);
  }
  void StartPod(const std::string& pod, const std::vector<std::string>& workloads,
                bool hypervisor) {
    pods_.push_back(pod);
    RunDetached(pod, Cri("sandbox", pod, hypervisor));
    for (const auto& w : workloads) RunDetached(w, Cri("container", pod, false));
  }
  void Remove(const std::vector<std::string>& ids) {
    for (const auto& id : ids) ctrd_.KillAndDelete(id);
  }
  std::string BootId(const std::string& id, const std::string& exec_id) {
    RunResult r = ctrd_.Ctr(
        {"task", "exec", "--exec-id", exec_id, id, "/bin/cat", "/proc/sys/kernel/random/boot_id"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return TrimNewlines(r.out);
  }

  Containerd ctrd_{DirName(RUNHCS_SHIM_BINARY)};
  std::string rootfs_;
  std::vector<std::string> pods_;
};

}  // namespace runhcs::testing
