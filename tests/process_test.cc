// Process-isolated containers through a real containerd 1.6 and plain `ctr`
// (`--runtime io.containerd.runhcs.v1 --rootfs DIR`), with runc and crun.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "base/io.h"
#include "containerd/task/v2/shim.ttrpc.h"
#include "tests/subprocess.h"
#include "ttrpc/client.h"

namespace runhcs::testing {
namespace {

using namespace std::chrono_literals;

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ctrd_.ok()) << ctrd_.log();
    rootfs_ = ctrd_.dir() + "/rootfs";
    ASSERT_TRUE(MakeBusyboxRootfs(rootfs_));
  }

  // `ctr run --runtime io.containerd.runhcs.v1 FLAGS --rootfs ROOTFS ID CMD...`
  RunResult CtrRun(const std::vector<std::string>& flags, const std::string& id,
                   const std::vector<std::string>& cmd, const RunOptions& opts = {}) {
    std::vector<std::string> args = {"run", "--runtime", "io.containerd.runhcs.v1"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"--rootfs", rootfs_, id});
    args.insert(args.end(), cmd.begin(), cmd.end());
    return ctrd_.Ctr(args, opts);
  }
  std::string TaskStatus(const std::string& id) { return ctrd_.TaskStatus(id); }
  std::string Bundle(const std::string& id) {
    return ctrd_.dir() + "/state/io.containerd.runtime.v2.task/default/" + id;
  }
  pid_t ShimPid(const std::string& id) {
    return std::atoi(ReadFileOr(Bundle(id) + "/shim.pid", "0").c_str());
  }
  pid_t InitPid(const std::string& id) {
    return std::atoi(ReadFileOr(Bundle(id) + "/init.pid", "0").c_str());
  }
  // A container that runs until told otherwise and exits 42 on SIGTERM
  // (PID 1 ignores signals it has no handler for).
  void RunDetached(const std::string& id, const std::vector<std::string>& flags = {}) {
    std::vector<std::string> f = {"-d"};
    f.insert(f.end(), flags.begin(), flags.end());
    RunResult r =
        CtrRun(f, id, {"/bin/sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"});
    ASSERT_EQ(r.exit_code, 0) << r.err << ctrd_.log();
    ASSERT_TRUE(WaitFor([&] { return TaskStatus(id) == "RUNNING"; }, 10s)) << TaskStatus(id);
  }
  // A --runtime-config-path file (containerd.runhcs.v1.Options as JSON).
  std::string RuntimeConfig(const std::string& name, const std::string& json) {
    std::string path = ctrd_.dir() + "/" + name + ".json";
    EXPECT_TRUE(WriteFileAtomic(path, json, 0644).ok());
    return path;
  }
  void KillAndDelete(const std::string& id) {
    ctrd_.Ctr({"task", "kill", "-s", "SIGKILL", id});
    WaitFor([&] { return TaskStatus(id) == "STOPPED"; }, 10s);
    ctrd_.Ctr({"task", "delete", id});
    ctrd_.Ctr({"container", "delete", id});
  }

  Containerd ctrd_{DirName(RUNHCS_SHIM_BINARY)};
  std::string rootfs_;
};

TEST_F(ProcessTest, RunRm_EchoPrintsAndExitCodesPropagate) {
  auto t0 = std::chrono::steady_clock::now();
  RunResult r = CtrRun({"--rm"}, "echo1", {"/bin/echo", "hi"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  RunResult three = CtrRun({"--rm"}, "exit3", {"/bin/sh", "-c", "exit 3"});
  EXPECT_EQ(three.exit_code, 3) << three.err;
  RunResult err = CtrRun({"--rm"}, "stderr1", {"/bin/sh", "-c", "echo oops >&2"});
  EXPECT_EQ(err.err, "oops\n");
  // --rm left nothing behind.
  EXPECT_EQ(ctrd_.Ctr({"task", "ls", "-q"}).out, "");
  EXPECT_EQ(RunCommand({"pgrep", "-f", "containerd-shim-runhcs-v1 .*-id (echo1|exit3|stderr1) "})
                .exit_code,
            1);
}

TEST_F(ProcessTest, Stdin_PipedDataReachesTheProcess) {
  RunResult r = CtrRun({"--rm"}, "stdin1", {"/bin/head", "-n1"}, {.stdin_data = "data\nmore\n"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "data\n");
}

// Every byte of stdin arrives, counted inside the container, at the sizes
// where pipes and fifos change behaviour; ctr sends CloseIO before an exec's
// Start (small inputs: the client closes before the process starts) or while
// it still copies (large ones: during and after the start).
TEST_F(ProcessTest, Stdin_EveryByteArrivesForRunAndExec) {
  RunDetached("stdinx");
  const size_t kSizes[] = {1, 4095, 4096, 5000, 65536, 65537, 1 << 20, 10 << 20};
  for (size_t n : kSizes) {
    SCOPED_TRACE(n);
    std::string data = TestBytes(n, static_cast<uint32_t>(n));
    // Not 0 through ctr: when ctr's stdin ends before its Create (or Exec)
    // returns it neither opens the fifo nor sends CloseIO, and the process
    // waits for ever; runc-v2 the same (measured: 2 of 3 empty-stdin execs
    // hang). ProcessIo's unit tests cover the empty stream.
    std::string id = "stdin-run-" + std::to_string(n);
    RunResult run = CtrRun({"--rm"}, id, CountStdinCommand(), {.stdin_data = data, .timeout = 60s});
    EXPECT_EQ(run.exit_code, 0) << run.err;
    EXPECT_EQ(run.out, CountStdinExpected(data)) << "ctr run";
    std::vector<std::string> exec = {"task", "exec", "--exec-id", "in" + std::to_string(n),
                                     "stdinx"};
    auto cmd = CountStdinCommand();
    exec.insert(exec.end(), cmd.begin(), cmd.end());
    RunResult ex = ctrd_.Ctr(exec, {.stdin_data = data, .timeout = 60s});
    EXPECT_EQ(ex.exit_code, 0) << ex.err;
    EXPECT_EQ(ex.out, CountStdinExpected(data)) << "ctr task exec";
  }
  // A process that starts reading late still gets all of it.
  std::string data = TestBytes(300000, 7);
  RunResult late =
      ctrd_.Ctr({"task", "exec", "--exec-id", "late", "stdinx", "/bin/sh", "-c", "sleep 1; wc -c"},
                {.stdin_data = data, .timeout = 60s});
  EXPECT_EQ(late.out, "300000\n") << late.err;
  // 100 MB through one exec.
  std::string big = TestBytes(100 << 20, 9);
  RunResult ex = ctrd_.Ctr({"task", "exec", "--exec-id", "big", "stdinx", "/bin/wc", "-c"},
                           {.stdin_data = big, .timeout = 120s});
  EXPECT_EQ(ex.out, std::to_string(big.size()) + "\n") << ex.err;
  KillAndDelete("stdinx");
}

// With a terminal the bytes cross a line discipline: the process switches
// it to raw and reads exactly what was sent. (Only a byte: past a few
// hundred, `script` feeding ctr's terminal from a file loses the input
// itself, with runc-v2 just the same.)
TEST_F(ProcessTest, Stdin_TerminalDeliversTheByte) {
  for (size_t n : {1}) {
    SCOPED_TRACE(n);
    std::string data = TestText(n);
    std::string file = ctrd_.dir() + "/tty-in";
    ASSERT_TRUE(WriteFileAtomic(file, data, 0644).ok());
    std::string id = "ttyin" + std::to_string(n);
    std::string cmd = "ctr --address " + ctrd_.grpc_address() +
                      " run -t --rm --runtime io.containerd.runhcs.v1 --rootfs " + rootfs_ + " " +
                      id + " /bin/sh -c 'stty raw -echo; echo n=$(head -c " + std::to_string(n) +
                      " | wc -c)' <" + file;
    RunResult r = RunCommand({"script", "-qec", cmd, "/dev/null"}, {.timeout = 60s});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("n=" + std::to_string(n) + "\r"), std::string::npos)
        << r.out.substr(r.out.size() > 300 ? r.out.size() - 300 : 0);
  }
}

// A container joining another's pid namespace (a pod's shared one, CRI's
// shareProcessNamespace; hostPID is the same case): when init exits, a child holding its stdout is
// killed at once, as runc-v2 does, so the exit is not held up by the 2 s output drain.
TEST_F(ProcessTest, NoPidNamespaceOfItsOwn_InitExitEndsTheRestAtOnce) {
  RunDetached("pidholder");  // the pod's shared pid namespace
  std::string ns = fmt::format("pid:/proc/{}/ns/pid", InitPid("pidholder"));
  auto t0 = std::chrono::steady_clock::now();
  RunResult r = CtrRun({"--rm", "--with-ns", ns}, "sharedpid1",
                       {"/bin/sh", "-c", "sleep 4242 & echo started"});
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "started\n");
  EXPECT_LT(took, 1500ms) << "the exit waited for the child's stdout";
  EXPECT_TRUE(WaitFor([] { return CountProcesses("^sleep 4242$") == 0; }, 2s))
      << "the child outlived init";
  EXPECT_EQ(ctrd_.log().find("output still open"), std::string::npos)
      << "the output drain timed out";
  KillAndDelete("pidholder");
}

TEST_F(ProcessTest, Detached_ExecPsKillDelete) {
  RunDetached("det1");
  RunResult ex =
      ctrd_.Ctr({"task", "exec", "--exec-id", "x1", "det1", "/bin/cat", "/proc/self/status"});
  EXPECT_EQ(ex.exit_code, 0) << ex.err;
  EXPECT_NE(ex.out.find("Name:\tcat"), std::string::npos) << ex.out;
  RunResult ex5 = ctrd_.Ctr({"task", "exec", "--exec-id", "x2", "det1", "/bin/sh", "-c", "exit 5"});
  EXPECT_EQ(ex5.exit_code, 5) << ex5.err;
  RunResult ps = ctrd_.Ctr({"task", "ps", "det1"});
  EXPECT_EQ(ps.exit_code, 0) << ps.err;
  EXPECT_NE(ps.out.find(std::to_string(InitPid("det1"))), std::string::npos) << ps.out;
  // SIGTERM reaches the trap: exit 42.
  RunResult kill = ctrd_.Ctr({"task", "kill", "det1"});
  EXPECT_EQ(kill.exit_code, 0) << kill.err;
  ASSERT_TRUE(WaitFor([&] { return TaskStatus("det1") == "STOPPED"; }, 10s));
  RunResult del = ctrd_.Ctr({"task", "delete", "det1"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_EQ(TaskStatus("det1"), "");
  EXPECT_EQ(ctrd_.Ctr({"container", "delete", "det1"}).exit_code, 0);
}

TEST_F(ProcessTest, Sigkill_Gives137) {
  pid_t ctr = ::fork();
  if (ctr == 0) {
    ::execlp("ctr", "ctr", "--address", ctrd_.grpc_address().c_str(), "run", "--rm", "--runtime",
             "io.containerd.runhcs.v1", "--rootfs", rootfs_.c_str(), "kill137", "/bin/sleep",
             "1000", nullptr);
    ::_exit(127);
  }
  ASSERT_TRUE(WaitFor([&] { return TaskStatus("kill137") == "RUNNING"; }, 10s));
  EXPECT_EQ(ctrd_.Ctr({"task", "kill", "-s", "SIGKILL", "kill137"}).exit_code, 0);
  int ws = 0;
  ASSERT_TRUE(WaitFor([&] { return ::waitpid(ctr, &ws, WNOHANG) == ctr; }, 10s));
  EXPECT_TRUE(WIFEXITED(ws));
  EXPECT_EQ(WEXITSTATUS(ws), 137);
}

TEST_F(ProcessTest, Terminal_RunsAndSeesTheResize) {
  // `script` gives ctr a terminal; ctr sends its size with ResizePty.
  std::string cmd = "stty cols 77 rows 21; ctr --address " + ctrd_.grpc_address() +
                    " run -t --rm --runtime io.containerd.runhcs.v1 --rootfs " + rootfs_ +
                    " tty1 /bin/sh -c 'sleep 0.3; stty size; tty'";
  RunResult r = RunCommand({"script", "-qec", cmd, "/dev/null"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("21 77"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("/dev/pts/"), std::string::npos) << r.out;
}

TEST_F(ProcessTest, LogUri_FileAndBinaryCaptureOutput) {
  std::string log = ctrd_.dir() + "/logs/file.log";
  RunResult r = CtrRun({"--rm", "--log-uri", "file://" + log}, "logfile",
                       {"/bin/sh", "-c", "echo to-out; echo to-err >&2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string got = ReadFileOr(log);
  EXPECT_NE(got.find("to-out\n"), std::string::npos) << got;
  EXPECT_NE(got.find("to-err\n"), std::string::npos) << got;

  std::string logger = ctrd_.dir() + "/logger.sh";
  std::string captured = ctrd_.dir() + "/binary.log";
  ASSERT_TRUE(WriteFileAtomic(logger,
                              "#!/bin/sh\n"
                              "exec 5>&-\n"
                              "cat <&3 > \"$2\" &\n"
                              "cat <&4 > \"$2.err\"\n"
                              "wait\n",
                              0755)
                  .ok());
  RunResult b = CtrRun({"--rm", "--log-uri", "binary://" + logger + "?out=" + captured}, "logbin",
                       {"/bin/sh", "-c", "echo bin-out; echo bin-err >&2"});
  EXPECT_EQ(b.exit_code, 0) << b.err;
  EXPECT_TRUE(WaitFor([&] { return ReadFileOr(captured) == "bin-out\n"; }, 5s))
      << ReadFileOr(captured);
  EXPECT_TRUE(WaitFor([&] { return ReadFileOr(captured + ".err") == "bin-err\n"; }, 5s));
}

TEST_F(ProcessTest, UpdateAndCheckpoint) {
  RunDetached("upd1");
  // ctr 1.6 has no `task update`: send Update as containerd would, on the
  // shim's socket.
  auto client = ttrpc::Client::Dial(UnixAddress::Parse(ReadFileOr(Bundle("upd1") + "/address")));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  containerd::task::v2::UpdateTaskRequest req;
  req.set_id("upd1");
  req.mutable_resources()->set_type_url(
      "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources");
  req.mutable_resources()->set_value(R"({"memory":{"limit":67108864}})");
  Status st = containerd::task::v2::TaskClient(client->get()).Update(req, nullptr);
  EXPECT_TRUE(st.ok()) << st.ToString();
  std::string limit = ReadFileOr("/sys/fs/cgroup/memory/default/upd1/memory.limit_in_bytes");
  if (limit.empty()) limit = ReadFileOr("/sys/fs/cgroup/default/upd1/memory.max");
  EXPECT_EQ(limit, "67108864\n");
  req.mutable_resources()->set_value("{not json");
  EXPECT_EQ(containerd::task::v2::TaskClient(client->get()).Update(req, nullptr).code(),
            Code::kInvalidArgument);
  RunResult cp = ctrd_.Ctr({"task", "checkpoint", "upd1"});
  EXPECT_NE(cp.exit_code, 0);
  EXPECT_NE((cp.out + cp.err).find("not implemented"), std::string::npos) << cp.out << cp.err;
  KillAndDelete("upd1");
}

TEST_F(ProcessTest, Events_InOrderForAScriptedLifecycle) {
  std::string events = ctrd_.dir() + "/events.txt";
  pid_t ev = ctrd_.CtrBackground({"events"}, events);
  std::this_thread::sleep_for(300ms);
  RunDetached("evt1");
  EXPECT_EQ(ctrd_.Ctr({"task", "exec", "--exec-id", "e1", "evt1", "/bin/true"}).exit_code, 0);
  EXPECT_EQ(ctrd_.Ctr({"task", "pause", "evt1"}).exit_code, 0);
  EXPECT_EQ(TaskStatus("evt1"), "PAUSED");
  EXPECT_EQ(ctrd_.Ctr({"task", "resume", "evt1"}).exit_code, 0);
  EXPECT_EQ(TaskStatus("evt1"), "RUNNING");
  EXPECT_EQ(ctrd_.Ctr({"task", "kill", "evt1"}).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return TaskStatus("evt1") == "STOPPED"; }, 10s));
  EXPECT_EQ(ctrd_.Ctr({"task", "delete", "evt1"}).exit_code, 0);
  std::vector<std::string> want = {"/tasks/create",       "/tasks/start",   "/tasks/exec-added",
                                   "/tasks/exec-started", "/tasks/exit",    "/tasks/delete",
                                   "/tasks/paused",       "/tasks/resumed", "/tasks/exit",
                                   "/tasks/delete"};
  std::vector<std::string> got;
  ASSERT_TRUE(WaitFor(
      [&] {
        got.clear();
        std::stringstream ss(ReadFileOr(events));
        std::regex topic(R"((/tasks/[a-z-]+) \{"container_id":"evt1")");
        for (std::string line; std::getline(ss, line);) {
          std::smatch m;
          if (std::regex_search(line, m, topic)) got.push_back(m[1]);
        }
        return got.size() >= want.size();
      },
      10s));
  ::kill(ev, SIGTERM);
  ::waitpid(ev, nullptr, 0);
  EXPECT_EQ(got, want) << ReadFileOr(events);
  std::string text = ReadFileOr(events);
  // The exec's exit names the exec; init's names the container.
  EXPECT_NE(text.find(R"("container_id":"evt1","id":"e1")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("container_id":"evt1","id":"evt1")"), std::string::npos) << text;
  EXPECT_NE(text.find(R"("exit_status":42)"), std::string::npos) << text;
}

TEST_F(ProcessTest, TwoContainers_EachHasItsOwnShim) {
  RunDetached("twoA");
  RunDetached("twoB");
  pid_t a = ShimPid("twoA"), b = ShimPid("twoB");
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  EXPECT_NE(a, b);
  EXPECT_EQ(ctrd_.Ctr({"task", "exec", "--exec-id", "x", "twoA", "/bin/true"}).exit_code, 0);
  KillAndDelete("twoA");
  EXPECT_EQ(TaskStatus("twoB"), "RUNNING");
  EXPECT_TRUE(Alive(b));
  EXPECT_EQ(ctrd_.Ctr({"task", "exec", "--exec-id", "x", "twoB", "/bin/true"}).exit_code, 0);
  KillAndDelete("twoB");
}

TEST_F(ProcessTest, ShimSigkilled_ContainerdCleansUpEverything) {
  RunDetached("orphan1", {"--null-io"});
  pid_t shim = ShimPid("orphan1");
  pid_t init = InitPid("orphan1");
  std::string sock = UnixAddress::Parse(ReadFileOr(Bundle("orphan1") + "/address")).path;
  ASSERT_GT(shim, 0);
  ASSERT_GT(init, 0);
  ASSERT_EQ(::kill(shim, SIGKILL), 0);
  // containerd sees the connection drop and runs `delete`.
  EXPECT_TRUE(WaitFor([&] { return !Alive(init); }, 15s)) << "container process left";
  EXPECT_TRUE(WaitFor([&] { return ::access(sock.c_str(), F_OK) != 0; }, 15s)) << "socket left";
  EXPECT_NE(::access("/run/containerd/runc/default/orphan1", F_OK), 0) << "runc state left";
  EXPECT_EQ(ReadFileOr("/proc/self/mountinfo").find(Bundle("orphan1")), std::string::npos);
  EXPECT_TRUE(WaitFor([&] { return TaskStatus("orphan1") != "RUNNING"; }, 10s));
  ctrd_.Ctr({"task", "delete", "orphan1"});
  ctrd_.Ctr({"container", "delete", "orphan1"});
}

TEST_F(ProcessTest, ContainerdRestart_ReconnectsThroughAddressFile) {
  RunDetached("restart1", {"--null-io"});
  pid_t shim = ShimPid("restart1");
  ASSERT_TRUE(ctrd_.Restart()) << ctrd_.log();
  EXPECT_TRUE(WaitFor([&] { return TaskStatus("restart1") == "RUNNING"; }, 10s)) << ctrd_.log();
  EXPECT_EQ(ShimPid("restart1"), shim);
  EXPECT_TRUE(Alive(shim));
  EXPECT_EQ(ctrd_.Ctr({"task", "kill", "-s", "SIGKILL", "restart1"}).exit_code, 0);
  EXPECT_TRUE(WaitFor([&] { return TaskStatus("restart1") == "STOPPED"; }, 10s));
  EXPECT_EQ(ctrd_.Ctr({"task", "delete", "restart1"}).exit_code, 0);
  EXPECT_TRUE(WaitFor([&] { return !Alive(shim); }, 10s)) << "shim did not exit after delete";
}

TEST_F(ProcessTest, BadInput_ClearErrorsAndNothingLeft) {
  RunResult nobin = CtrRun({"--rm", "--runtime-config-path",
                            RuntimeConfig("nobin", R"({"ociRuntime":"/nonexistent/runc"})")},
                           "badbin", {"/bin/true"});
  EXPECT_NE(nobin.exit_code, 0);
  EXPECT_NE(nobin.err.find("not found"), std::string::npos) << nobin.err;
  RunResult noexe = CtrRun({"--rm"}, "badexe", {"/bin/does-not-exist"});
  EXPECT_NE(noexe.exit_code, 0);
  EXPECT_NE(noexe.err.find("OCI runtime create failed"), std::string::npos) << noexe.err;
  RunDetached("dup1");
  auto t0 = std::chrono::steady_clock::now();
  RunResult badexec = ctrd_.Ctr({"task", "exec", "--exec-id", "nope", "dup1", "/bin/nope"});
  EXPECT_NE(badexec.exit_code, 0);
  EXPECT_NE(badexec.err.find("OCI runtime exec failed"), std::string::npos) << badexec.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "ctr must not wait on the fifos";
  RunResult first =
      ctrd_.Ctr({"task", "exec", "-d", "--exec-id", "same", "dup1", "/bin/sleep", "100"});
  EXPECT_EQ(first.exit_code, 0) << first.err;
  RunResult second =
      ctrd_.Ctr({"task", "exec", "-d", "--exec-id", "same", "dup1", "/bin/sleep", "100"});
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.err.find("already exists"), std::string::npos) << second.err;
  KillAndDelete("dup1");
  ctrd_.Ctr({"container", "delete", "badbin"});
  ctrd_.Ctr({"container", "delete", "badexe"});
  EXPECT_EQ(RunCommand({"pgrep", "-f", "containerd-shim-runhcs-v1 .*-id (badbin|badexe|dup1) "})
                .exit_code,
            1);
}

TEST_F(ProcessTest, CrunOnHybridCgroupHost_FailsWithTheReason) {
  std::string crun = RuntimeConfig("crun", R"({"ociRuntime":"crun"})");
  RunResult r = CtrRun({"--rm", "--runtime-config-path", crun}, "crunhybrid", {"/bin/echo", "hi"});
  if (ReadFileOr("/sys/fs/cgroup/unified/cgroup.controllers").empty()) {
    EXPECT_EQ(r.exit_code, 0) << r.err;  // not a hybrid host with controllers: crun just works
  } else {
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("cgroup.controllers"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("failed precondition"), std::string::npos) << r.err;
  }
  ctrd_.Ctr({"container", "delete", "crunhybrid"});
}

// crun, selected through the runtime config file (--runc-binary), in a private
// mount namespace that hides the unified controllers crun 1.8 refuses.
class CrunTest : public ProcessTest {
 protected:
  static void SetUpTestSuite() {
    scratch_ = MakeTempDir("runhcs-crun");
    ASSERT_TRUE(MaskUnifiedControllersForCrun(scratch_));
  }
  // The empty file stays mounted in this process's namespace; unlinking it
  // here leaves nothing in /tmp.
  static void TearDownTestSuite() { RunCommand({"rm", "-rf", scratch_}); }
  static inline std::string scratch_;
};

TEST_F(CrunTest, RunPauseResumeWithCrun) {
  std::string crun = RuntimeConfig("crun", R"({"ociRuntime":"crun"})");
  RunResult r =
      CtrRun({"--rm", "--runtime-config-path", crun}, "crun1", {"/bin/echo", "hi from crun"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hi from crun\n");
  RunDetached("crun2", {"--runtime-config-path", crun});
  EXPECT_EQ(ctrd_.Ctr({"task", "pause", "crun2"}).exit_code, 0);
  EXPECT_EQ(TaskStatus("crun2"), "PAUSED");
  EXPECT_EQ(ctrd_.Ctr({"task", "resume", "crun2"}).exit_code, 0);
  EXPECT_EQ(TaskStatus("crun2"), "RUNNING");
  RunResult ex = ctrd_.Ctr({"task", "exec", "--exec-id", "x", "crun2", "/bin/sh", "-c", "exit 7"});
  EXPECT_EQ(ex.exit_code, 7) << ex.err;
  KillAndDelete("crun2");
}

}  // namespace
}  // namespace runhcs::testing
