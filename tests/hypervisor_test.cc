// Hypervisor-isolated containers through a real containerd 1.6 and plain
// `ctr`: each container runs in its own QEMU utility VM (TCG here), selected
// by a runtime config file or by a per-container annotation.
#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <sstream>
#include <thread>

#include "base/io.h"
#include "base/sha256.h"
#include "containerd/task/v2/shim.ttrpc.h"
#include "runhcs/stats.pb.h"
#include "tests/ctrd_client.h"
#include "tests/subprocess.h"
#include "ttrpc/client.h"

namespace runhcs::testing {
namespace {

using namespace std::chrono_literals;

const std::vector<std::string> kHypervisor = {
    "--annotation", "io.containerd.runhcs.v1.isolation=hypervisor", "--annotation",
    "io.containerd.runhcs.v1.vm-accelerator=tcg"};

class HypervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ctrd_.ok()) << ctrd_.log();
    rootfs_ = ctrd_.dir() + "/rootfs";
    ASSERT_TRUE(MakeBusyboxRootfs(rootfs_));
    guest_kernel_ = TrimNewlines(ReadFileOr(std::string(RUNHCS_BOOT_DIR) + "/kernel.release"));
    ASSERT_FALSE(guest_kernel_.empty());
  }
  void TearDown() override {
    // Nothing of this test's VMs survives it: no QEMU, no virtiofsd, no
    // state directory. (Other tests may run VMs at the same time.)
    for (const auto& id : ids_) {
      std::string dir = VmDir(id);
      EXPECT_TRUE(WaitFor(
          [&] {
            return RunCommand({"pgrep", "-f", dir}).out.empty();
          },
          10s))
          << RunCommand({"pgrep", "-fa", dir}).out;
      EXPECT_NE(::access(dir.c_str(), F_OK), 0) << dir;
    }
  }
  // The VM state directory the shim uses for container `id` (namespace
  // "default"): see VmTask::VmStateDir.
  static std::string VmDir(const std::string& id) {
    return "/run/runhcs/vm/" + Sha256Hex("default/" + id).substr(0, 24);
  }

  RunResult CtrRun(const std::vector<std::string>& flags, const std::string& id,
                   const std::vector<std::string>& cmd, const RunOptions& opts = {}) {
    ids_.push_back(id);
    std::vector<std::string> args = {"run", "--runtime", "io.containerd.runhcs.v1"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"--rootfs", rootfs_, id});
    args.insert(args.end(), cmd.begin(), cmd.end());
    return ctrd_.Ctr(args, opts);
  }
  std::vector<std::string> With(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }
  std::string TaskStatus(const std::string& id) { return ctrd_.TaskStatus(id); }
  // Task.Stats of task `id`, straight from its shim, as containerd asks.
  containerd::runhcs::stats::v1::Statistics ShimStats(const std::string& id) {
    std::string address =
        ReadFileOr(ctrd_.dir() + "/state/io.containerd.runtime.v2.task/default/" + id + "/address");
    containerd::runhcs::stats::v1::Statistics s;
    auto client = ttrpc::Client::Dial(UnixAddress::Parse(address));
    EXPECT_TRUE(client.ok()) << address;
    if (!client.ok()) return s;
    containerd::task::v2::StatsRequest req;
    req.set_id(id);
    containerd::task::v2::StatsResponse resp;
    Status st = containerd::task::v2::TaskClient(client->get()).Stats(req, &resp);
    EXPECT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(resp.stats().type_url(), "containerd.runhcs.stats.v1.Statistics");
    EXPECT_TRUE(s.ParseFromString(resp.stats().value()));
    return s;
  }
  // Runs container `id` detached in its own VM (`/bin/sleep 1000`) and waits
  // until it is RUNNING; call it under ASSERT_NO_FATAL_FAILURE.
  void RunVmSleeper(const std::string& id, std::chrono::seconds running_within = 10s) {
    RunResult r = CtrRun(With({"-d"}, kHypervisor), id, {"/bin/sleep", "1000"});
    ASSERT_EQ(r.exit_code, 0) << r.err << ctrd_.log();
    ASSERT_TRUE(WaitFor([&] { return TaskStatus(id) == "RUNNING"; }, running_within));
  }
  // The QEMU of container `id`.
  pid_t QemuPid(const std::string& id) {
    auto r = RunCommand({"pgrep", "-f", "qemu-system.*" + VmDir(id)});
    return std::atoi(r.out.c_str());
  }

  Containerd ctrd_{DirName(RUNHCS_SHIM_BINARY)};
  std::string rootfs_;
  std::string guest_kernel_;
  std::vector<std::string> ids_;
};

TEST_F(HypervisorTest, AnnotationSelectsTheVmAndUnameIsTheGuestKernel) {
  RunResult r = CtrRun(With({"--rm"}, kHypervisor), "uname1", {"/bin/uname", "-r"});
  ASSERT_EQ(r.exit_code, 0) << r.err << ctrd_.log();
  utsname host;
  ::uname(&host);
  EXPECT_EQ(TrimNewlines(r.out), guest_kernel_);
  EXPECT_NE(TrimNewlines(r.out), host.release);
}

TEST_F(HypervisorTest, SizingAnnotationsGiveTheVmItsCpusAndMemory) {
  // hcsshim's memory name, runhcs's cpu name (the default would be 2 and
  // 1024 MiB on these hosts).
  RunResult r = CtrRun(
      With({"--rm"},
           With(kHypervisor, {"--annotation", "io.containerd.runhcs.v1.vm-cpus=1", "--annotation",
                              "io.microsoft.virtualmachine.computetopology.memory."
                              "sizeinmb=384"})),
      "sized1", {"/bin/sh", "-c", "grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo"});
  ASSERT_EQ(r.exit_code, 0) << r.err << ctrd_.log();
  std::istringstream out(r.out);
  int cpus = 0;
  std::string key;
  long mem_kib = 0;
  out >> cpus >> key >> mem_kib;
  EXPECT_EQ(cpus, 1) << r.out;
  // The guest sees a little less than it was given (the kernel's own).
  EXPECT_GT(mem_kib, 300 * 1024) << r.out;
  EXPECT_LE(mem_kib, 384 * 1024) << r.out;
  // A bad value is refused with the annotation's name, and nothing starts.
  RunResult bad = CtrRun(
      With({"--rm"}, With(kHypervisor, {"--annotation", "io.containerd.runhcs.v1.vm-cpus=0"})),
      "sized2", {"/bin/true"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("io.containerd.runhcs.v1.vm-cpus"), std::string::npos) << bad.err;
}

TEST_F(HypervisorTest, BindMountsOfHostPathsReachTheGuest) {
  // A directory (read-only), a file (read-write) and a symlink to a
  // directory, as CRI's volumes and /etc/hosts come.
  std::string dir = ctrd_.dir() + "/vol";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  ASSERT_TRUE(WriteFileAtomic(dir + "/hello", "hello from the host\n", 0644).ok());
  std::string file = ctrd_.dir() + "/hosts";
  ASSERT_TRUE(WriteFileAtomic(file, "10.0.0.1 pod\n", 0644).ok());
  std::string link = ctrd_.dir() + "/vol-link";
  ASSERT_EQ(::symlink(dir.c_str(), link.c_str()), 0);
  RunResult r = CtrRun(
      With({"--rm"}, With(kHypervisor,
                          {"--mount", "type=bind,src=" + dir + ",dst=/data,options=rbind:ro",
                           "--mount", "type=bind,src=" + file + ",dst=/hosts,options=rbind:rw",
                           "--mount", "type=bind,src=" + link + ",dst=/linked,options=rbind:ro"})),
      "mounts1",
      {"/bin/sh", "-c",
       "cat /data/hello /hosts /linked/hello; echo '10.0.0.2 other' >> /hosts;"
       " if touch /data/new 2>/dev/null; then echo WROTE; else echo READONLY; fi"});
  ASSERT_EQ(r.exit_code, 0) << r.err << ctrd_.log();
  EXPECT_EQ(r.out, "hello from the host\n10.0.0.1 pod\nhello from the host\nREADONLY\n");
  // The read-write file's change is the host's file.
  EXPECT_EQ(ReadFileOr(file), "10.0.0.1 pod\n10.0.0.2 other\n");
  EXPECT_NE(::access((dir + "/new").c_str(), F_OK), 0);
  // Nothing of its shares is left mounted on the host (other tests' VMs
  // may have theirs).
  EXPECT_EQ(ReadFileOr("/proc/self/mountinfo").find(VmDir("mounts1") + "/shares/"),
            std::string::npos);
  // A source that does not exist fails the create, naming it.
  RunResult bad = CtrRun(
      With({"--rm"}, With(kHypervisor,
                          {"--mount", "type=bind,src=" + dir + "-missing,dst=/x,options=rbind"})),
      "mounts2", {"/bin/true"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find(dir + "-missing"), std::string::npos) << bad.err;
}

TEST_F(HypervisorTest, RuntimeConfigFileSelectsTheVm) {
  std::string cfg = ctrd_.dir() + "/hv.json";
  ASSERT_TRUE(WriteFileAtomic(
                  cfg,
                  R"({"sandboxIsolation":"HYPERVISOR","vmAccelerator":"TCG","vmMemorySizeInMb":384,
              "vmTcgCacheSizeInMb":32})",
                  0644)
                  .ok());
  RunResult r = CtrRun({"--rm", "--runtime-config-path", cfg}, "uname2", {"/bin/uname", "-r"});
  ASSERT_EQ(r.exit_code, 0) << r.err << ctrd_.log();
  EXPECT_EQ(TrimNewlines(r.out), guest_kernel_);
  // The file's VM settings reached QEMU (a smaller translation cache boots).
  EXPECT_NE(ctrd_.log().find("384 MiB, TCG cache 32 MiB"), std::string::npos) << ctrd_.log();
}

TEST_F(HypervisorTest, ExitCodesStdinAndStderrBehaveAsInProcessIsolation) {
  EXPECT_EQ(CtrRun(With({"--rm"}, kHypervisor), "exit7", {"/bin/sh", "-c", "exit 7"}).exit_code, 7);
  RunResult in = CtrRun(With({"--rm"}, kHypervisor), "stdin1", {"/bin/head", "-n1"},
                        {.stdin_data = "data\nmore\n"});
  EXPECT_EQ(in.exit_code, 0) << in.err;
  EXPECT_EQ(in.out, "data\n");
  RunResult err =
      CtrRun(With({"--rm"}, kHypervisor), "stderr1", {"/bin/sh", "-c", "echo oops >&2"});
  EXPECT_EQ(err.err, "oops\n") << ctrd_.log();
}

// Stdin into a VM: every byte arrives, counted inside the guest's container.
TEST_F(HypervisorTest, StdinEveryByteArrivesInTheGuest) {
  RunResult d = CtrRun(With({"-d"}, kHypervisor), "vmstdin", {"/bin/sleep", "1000"});
  ASSERT_EQ(d.exit_code, 0) << d.err << ctrd_.log();
  ASSERT_TRUE(WaitFor([&] { return TaskStatus("vmstdin") == "RUNNING"; }, 10s));
  for (size_t n : {size_t{1}, size_t{4096}, size_t{65537}, size_t{100000}, size_t{10 << 20}}) {
    SCOPED_TRACE(n);
    std::string data = TestBytes(n, static_cast<uint32_t>(n) + 3);
    std::vector<std::string> exec = {"task", "exec", "--exec-id", "in" + std::to_string(n),
                                     "vmstdin"};
    auto cmd = CountStdinCommand();
    exec.insert(exec.end(), cmd.begin(), cmd.end());
    RunResult ex = ctrd_.Ctr(exec, {.stdin_data = data, .timeout = 120s});
    EXPECT_EQ(ex.exit_code, 0) << ex.err;
    EXPECT_EQ(ex.out, CountStdinExpected(data));
  }
  std::string data = TestBytes(70000, 5);
  RunResult run = CtrRun(With({"--rm"}, kHypervisor), "vmstdinrun", CountStdinCommand(),
                         {.stdin_data = data, .timeout = 60s});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, CountStdinExpected(data)) << "ctr run";
  ctrd_.KillAndDelete("vmstdin");
}

TEST_F(HypervisorTest, TerminalRunsInTheGuestAndSeesTheResize) {
  // `script` gives ctr a terminal; ctr sends its size with ResizePty.
  ids_.push_back("tty1");
  std::string cmd = "stty cols 77 rows 21; ctr --address " + ctrd_.grpc_address() +
                    " run -t --rm --runtime io.containerd.runhcs.v1 --annotation "
                    "io.containerd.runhcs.v1.isolation=hypervisor --annotation "
                    "io.containerd.runhcs.v1.vm-accelerator=tcg --rootfs " +
                    rootfs_ + " tty1 /bin/sh -c 'sleep 0.3; stty size; tty; uname -r; exit 4'";
  RunResult r = RunCommand({"script", "-qec", cmd, "/dev/null"});
  EXPECT_EQ(r.exit_code, 4) << r.out << r.err;
  EXPECT_NE(r.out.find("21 77"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("/dev/pts/"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(guest_kernel_), std::string::npos) << r.out;
}

TEST_F(HypervisorTest, ExecKillDeleteAndEventOrder) {
  std::string events = ctrd_.dir() + "/events.txt";
  pid_t ev = ctrd_.CtrBackground({"events"}, events);
  std::this_thread::sleep_for(300ms);
  RunResult r = CtrRun(With({"-d"}, kHypervisor), "det1",
                       {"/bin/sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"});
  ASSERT_EQ(r.exit_code, 0) << r.err << ctrd_.log();
  ASSERT_TRUE(WaitFor([&] { return TaskStatus("det1") == "RUNNING"; }, 10s));
  RunResult ex = ctrd_.Ctr({"task", "exec", "--exec-id", "x1", "det1", "/bin/sh", "-c",
                            "uname -r; cat /proc/1/personality /proc/self/personality; exit 5"});
  EXPECT_EQ(ex.exit_code, 5) << ex.err;
  // The guest's runtime runs unrandomized; the container's init and execs
  // are randomized (personality 0, no ADDR_NO_RANDOMIZE).
  EXPECT_EQ(TrimNewlines(ex.out), guest_kernel_ + "\n00000000\n00000000");
  // ctr deleted exec x1 once it exited: its id may be used again.
  RunResult again = ctrd_.Ctr({"task", "exec", "--exec-id", "x1", "det1", "/bin/echo", "again"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(TrimNewlines(again.out), "again");
  EXPECT_EQ(ctrd_.Ctr({"task", "kill", "det1"}).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return TaskStatus("det1") == "STOPPED"; }, 15s));
  RunResult del = ctrd_.Ctr({"task", "delete", "det1"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_EQ(ctrd_.Ctr({"container", "delete", "det1"}).exit_code, 0);
  std::this_thread::sleep_for(500ms);
  ::kill(ev, SIGTERM);
  // Topics in order for det1: create, start, exec-added, exec-started,
  // exit (x1), delete (x1: ctr deletes the exec), the same for x1 again,
  // exit (init 42), delete.
  std::string text = ReadFileOr(events);
  std::vector<std::string> order;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) {
    if (line.find("det1") == std::string::npos) continue;
    for (const char* t : {"/tasks/create", "/tasks/start", "/tasks/exec-added",
                          "/tasks/exec-started", "/tasks/exit", "/tasks/delete"}) {
      if (line.find(std::string(t) + " ") != std::string::npos) order.push_back(t);
    }
  }
  ASSERT_GE(order.size(), 6u) << text;
  EXPECT_EQ(order[0], "/tasks/create");
  EXPECT_EQ(order[1], "/tasks/start");
  EXPECT_EQ(order.back(), "/tasks/delete");
  EXPECT_EQ(order[order.size() - 2], "/tasks/exit") << text;
  EXPECT_NE(text.find(R"("id":"det1","pid":)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("exit_status":42)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("id":"x1","pid":)"), std::string::npos) << text;
}

TEST_F(HypervisorTest, QemuKilledEndsEveryTaskAndLeavesNothing) {
  ASSERT_NO_FATAL_FAILURE(RunVmSleeper("kvm1"));
  pid_t qemu = QemuPid("kvm1");
  ASSERT_GT(qemu, 0);
  ASSERT_EQ(::kill(qemu, SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] { return TaskStatus("kvm1") == "STOPPED"; }, 15s)) << TaskStatus("kvm1");
  RunResult del = ctrd_.Ctr({"task", "delete", "kvm1"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  // The reference shim's status for a task whose host went away.
  EXPECT_NE(del.err.find("exit code 1"), std::string::npos) << del.out << del.err;
  EXPECT_EQ(ctrd_.Ctr({"container", "delete", "kvm1"}).exit_code, 0);
}

// A guest that answers nothing (its QEMU stopped: no vCPU runs, no device
// answers) must not make its container unkillable: SIGKILL finds the agent
// silent, a ping confirms it, and the shim kills the VM. The task stops,
// deletes, and nothing of the VM is left.
TEST_F(HypervisorTest, SigkillOfAHungGuestKillsItsVmAndLeavesNothing) {
  ASSERT_NO_FATAL_FAILURE(RunVmSleeper("vmhung"));
  pid_t qemu = QemuPid("vmhung");
  ASSERT_GT(qemu, 0);
  ASSERT_EQ(::kill(qemu, SIGSTOP), 0);
  RunResult kill = ctrd_.Ctr({"task", "kill", "-s", "SIGKILL", "vmhung"}, {.timeout = 60s});
  EXPECT_EQ(kill.exit_code, 0) << kill.err;
  EXPECT_TRUE(WaitFor([&] { return TaskStatus("vmhung") == "STOPPED"; }, 15s))
      << TaskStatus("vmhung");
  EXPECT_TRUE(WaitFor([&] { return QemuPid("vmhung") == 0; }, 10s)) << "qemu left";
  EXPECT_NE(ctrd_.log().find("nor a ping"), std::string::npos);
  if (QemuPid("vmhung") > 0) ::kill(qemu, SIGKILL);  // not leave it stopped
  RunResult del = ctrd_.Ctr({"task", "delete", "vmhung"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_EQ(ctrd_.Ctr({"container", "delete", "vmhung"}).exit_code, 0);
}

// A VM never outlives its shim: SIGKILL the shim, and containerd's cleanup
// (the shim's `delete` action) leaves no QEMU, virtiofsd, state directory,
// share mount, socket or shimdiag entry.
TEST_F(HypervisorTest, ShimKilledLeavesNoVmNoMountsNoSocket) {
  ASSERT_NO_FATAL_FAILURE(RunVmSleeper("vmorphan"));
  std::string bundle = ctrd_.dir() + "/state/io.containerd.runtime.v2.task/default/vmorphan";
  pid_t shim = std::atoi(ReadFileOr(bundle + "/shim.pid", "0").c_str());
  std::string sock = UnixAddress::Parse(ReadFileOr(bundle + "/address")).path;
  std::string entry = "/run/runhcs/shims/default-vmorphan";
  ASSERT_GT(shim, 0);
  ASSERT_GT(QemuPid("vmorphan"), 0);
  ASSERT_EQ(::access(entry.c_str(), F_OK), 0) << entry;
  ASSERT_EQ(::kill(shim, SIGKILL), 0);
  EXPECT_TRUE(WaitFor([&] { return QemuPid("vmorphan") == 0; }, 10s)) << "qemu outlived its shim";
  EXPECT_TRUE(WaitFor(
      [&] {
        return RunCommand({"pgrep", "-f", VmDir("vmorphan")}).out.empty();
      },
      10s))
      << RunCommand({"pgrep", "-fa", VmDir("vmorphan")}).out;
  EXPECT_TRUE(WaitFor([&] { return TaskStatus("vmorphan") != "RUNNING"; }, 15s));
  ctrd_.Ctr({"task", "delete", "vmorphan"});
  ctrd_.Ctr({"container", "delete", "vmorphan"});
  EXPECT_TRUE(WaitFor([&] { return ::access(VmDir("vmorphan").c_str(), F_OK) != 0; }, 10s))
      << VmDir("vmorphan");
  EXPECT_EQ(ReadFileOr("/proc/self/mountinfo").find(VmDir("vmorphan")), std::string::npos);
  EXPECT_EQ(ReadFileOr("/proc/self/mountinfo").find(bundle), std::string::npos);
  EXPECT_NE(::access(sock.c_str(), F_OK), 0) << "socket left: " << sock;
  EXPECT_NE(::access(entry.c_str(), F_OK), 0) << "shimdiag entry left: " << entry;
}

TEST_F(HypervisorTest, OomInTheGuestGivesTaskOomThenExit137) {
  std::string events = ctrd_.dir() + "/events.txt";
  pid_t ev = ctrd_.CtrBackground({"events"}, events);
  std::this_thread::sleep_for(300ms);
  // dd reads 256 MiB of zeros into one buffer: past a 32 MiB limit.
  RunResult r =
      CtrRun(With({"--rm", "--memory-limit", "33554432"}, kHypervisor), "oomvm",
             {"/bin/busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"});
  EXPECT_EQ(r.exit_code, 137) << r.out << r.err;
  std::this_thread::sleep_for(300ms);
  ::kill(ev, SIGTERM);
  std::string text = ReadFileOr(events);
  size_t oom = text.find(R"(/tasks/oom {"container_id":"oomvm"})");
  size_t exit = text.find(R"(/tasks/exit {"container_id":"oomvm")");
  ASSERT_NE(oom, std::string::npos) << text;
  ASSERT_NE(exit, std::string::npos) << text;
  EXPECT_LT(oom, exit) << text;
  EXPECT_NE(text.find(R"("exit_status":137)", exit), std::string::npos) << text;
}

TEST_F(HypervisorTest, PauseFreezesTheContainerInTheGuestAndResumeThawsIt) {
  std::string events = ctrd_.dir() + "/events.txt";
  pid_t ev = ctrd_.CtrBackground({"events"}, events);
  std::this_thread::sleep_for(300ms);
  // A counter in the container's /tmp: the rootfs is shared with the host.
  RunResult r = CtrRun(
      With({"-d"}, kHypervisor), "pause1",
      {"/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WaitFor([&] { return TaskStatus("pause1") == "RUNNING"; }, 30s));
  std::string counter = rootfs_ + "/tmp/n";
  auto count = [&] { return std::atoi(ReadFileOr(counter).c_str()); };
  ASSERT_TRUE(WaitFor([&] { return count() > 2; }, 30s));

  ASSERT_EQ(ctrd_.Ctr({"task", "pause", "pause1"}).exit_code, 0);
  EXPECT_EQ(TaskStatus("pause1"), "PAUSED");
  int frozen = count();
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(count(), frozen) << "the container kept running while paused";

  ASSERT_EQ(ctrd_.Ctr({"task", "resume", "pause1"}).exit_code, 0);
  EXPECT_EQ(TaskStatus("pause1"), "RUNNING");
  EXPECT_TRUE(WaitFor([&] { return count() > frozen; }, 10s));
  ctrd_.Ctr({"task", "kill", "-s", "SIGKILL", "pause1"});
  EXPECT_TRUE(WaitFor([&] { return TaskStatus("pause1") == "STOPPED"; }, 15s));
  std::this_thread::sleep_for(300ms);
  ::kill(ev, SIGTERM);
  std::string text = ReadFileOr(events);
  size_t paused = text.find(R"(/tasks/paused {"container_id":"pause1"})");
  size_t resumed = text.find(R"(/tasks/resumed {"container_id":"pause1"})");
  ASSERT_NE(paused, std::string::npos) << text;
  ASSERT_NE(resumed, std::string::npos) << text;
  EXPECT_LT(paused, resumed);
  ctrd_.Ctr({"task", "delete", "pause1"});
  ctrd_.Ctr({"container", "delete", "pause1"});
}

// Every process in a VM keeps long polls open on the agent's one connection
// (its output streams and its exit): fifteen running execs must not starve
// a sixteenth call (it would wait for a poll to time out, 30 s).
TEST_F(HypervisorTest, ManyRunningExecsInOneVmDoNotStarveNewCalls) {
  ASSERT_NO_FATAL_FAILURE(RunVmSleeper("many1", 30s));
  RunResult r;
  for (int i = 0; i < 15; ++i) {
    r = ctrd_.Ctr(
        {"task", "exec", "-d", "--exec-id", "bg" + std::to_string(i), "many1", "/bin/sleep", "60"});
    ASSERT_EQ(r.exit_code, 0) << i << ": " << r.err;
  }
  RunOptions quick;
  quick.timeout = 20s;
  r = ctrd_.Ctr({"task", "exec", "--exec-id", "fg", "many1", "/bin/echo", "still answering"},
                quick);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "still answering\n");
  EXPECT_TRUE(ctrd_.KillAndDelete("many1"));
}

// The spec's limits are the container's guest cgroup's, and Update (CRI's
// UpdateContainerResources, through containerd's API) changes them there.
// Read back through Task.Stats: the guest cgroup's own files.
TEST_F(HypervisorTest, LimitsAreTheGuestCgroupsAndUpdateChangesThem) {
  RunResult r = CtrRun(With({"-d", "--memory-limit", "67108864"}, kHypervisor), "limits1",
                       {"/bin/sleep", "1000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WaitFor([&] { return TaskStatus("limits1") == "RUNNING"; }, 30s));
  auto stats = [&] { return ShimStats("limits1"); };
  EXPECT_EQ(stats().linux_v2().memory().usage_limit(), 67108864u);

  CtrdClient client(ctrd_.grpc_address(), "default");
  tasks::UpdateTaskRequest up;
  up.set_container_id("limits1");
  up.mutable_resources()->set_type_url(
      "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources");
  up.mutable_resources()->set_value(R"({"memory":{"limit":134217728},"pids":{"limit":64}})");
  runhcs::wkt::Empty e;
  grpc::Status st = client.tasks().Update(client.Ctx().get(), up, &e);
  ASSERT_TRUE(st.ok()) << st.error_message();
  auto s = stats();
  EXPECT_EQ(s.linux_v2().memory().usage_limit(), 134217728u);
  EXPECT_EQ(s.linux_v2().pids().limit(), 64u);

  up.mutable_resources()->set_value("not json");
  st = client.tasks().Update(client.Ctx().get(), up, &e);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_EQ(stats().linux_v2().memory().usage_limit(), 134217728u);
  EXPECT_TRUE(ctrd_.KillAndDelete("limits1"));
}

TEST_F(HypervisorTest, StatsHoldTheContainersGuestCgroupAndTheVmsOwnFigures) {
  RunResult r = CtrRun(With({"-d", "--memory-limit", "67108864"}, kHypervisor), "stats1",
                       {"/bin/sh", "-c", "sleep 1000 & sleep 1000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WaitFor([&] { return TaskStatus("stats1") == "RUNNING"; }, 30s));
  containerd::runhcs::stats::v1::Statistics s;
  auto fetch = [&] { s = ShimStats("stats1"); };
  // The container's cgroup in the guest (v2): both sleeps, once the shell
  // has started the second.
  EXPECT_TRUE(WaitFor(
      [&] {
        fetch();
        return s.linux_v2().pids().current() == 2;
      },
      10s))
      << s.linux_v2().pids().current();
  EXPECT_EQ(s.linux_v2().memory().usage_limit(), 67108864u);
  EXPECT_GT(s.linux_v2().memory().usage(), 0u);
  EXPECT_GT(s.linux_v2().cpu().usage_usec(), 0u);
  // The VM: QEMU on the host, meminfo in the guest.
  EXPECT_GT(s.vm().memory().working_set_bytes(), 0u);
  EXPECT_GT(s.vm().processor().total_runtime_ns(), 0u);
  EXPECT_GT(s.vm().memory().vm_memory().assigned_memory(), 0u);
  EXPECT_TRUE(s.has_timestamp());
  ctrd_.Ctr({"task", "kill", "-s", "SIGKILL", "stats1"});
  EXPECT_TRUE(WaitFor([&] { return TaskStatus("stats1") == "STOPPED"; }, 15s));
  ctrd_.Ctr({"task", "delete", "stats1"});
  ctrd_.Ctr({"container", "delete", "stats1"});
}

}  // namespace
}  // namespace runhcs::testing
