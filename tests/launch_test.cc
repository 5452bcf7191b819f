// Runs the shim binary the way containerd 1.6 does (see
// shared protocol notes: `start`, the daemon, `delete`) and checks each
// promise of the launch protocol.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "base/io.h"
#include "containerd/runc/options/oci.pb.h"
#include "containerd/task/v2/shim.ttrpc.h"
#include "tests/subprocess.h"
#include "ttrpc/client.h"

namespace runhcs::testing {
namespace {

using namespace std::chrono_literals;
namespace v2 = containerd::task::v2;

v2::TaskClient Task(const std::unique_ptr<ttrpc::Client>& c) { return v2::TaskClient(c.get()); }

constexpr char kShim[] = RUNHCS_SHIM_BINARY;

bool WaitGone(pid_t pid, std::chrono::milliseconds limit = 5000ms) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (!Alive(pid)) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

std::string FdTarget(pid_t pid, int fd) {
  char buf[512];
  std::string link = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

class LaunchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    id_ = std::string("launch-") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    bundle_ = MakeBundle(id_, R"({"ociVersion":"1.0.2"})");
  }
  void TearDown() override {
    // SIGTERM: a daemon removes its socket and shimdiag entry on the way
    // out; SIGKILL only for one that does not go.
    for (pid_t pid : daemons_) {
      if (Alive(pid)) ::kill(pid, SIGTERM);
    }
    for (pid_t pid : daemons_) {
      if (!WaitGone(pid, 3000ms)) ::kill(pid, SIGKILL);
    }
    for (const auto& b : bundles_) {
      auto addr = ReadFileOr(b + "/address");
      if (!addr.empty()) ::unlink(UnixAddress::Parse(addr).path.c_str());
      RunCommand({"rm", "-rf", b});
    }
  }
  std::string MakeBundle(const std::string& id, const std::string& config) {
    std::string b = MakeTempDir("runhcs-bundle-" + id);
    EXPECT_TRUE(WriteFileAtomic(b + "/config.json", config, 0644).ok());
    bundles_.push_back(b);
    return b;
  }
  RunResult Start(const std::string& id, const std::string& bundle,
                  const std::string& stdin_data = "", std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {kShim,    "-namespace",      "runhcs-test",         "-address",
                                     address_, "-publish-binary", "/usr/bin/containerd", "-id",
                                     id};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("start");
    RunResult r = RunCommand(argv, {.cwd = bundle,
                                    .stdin_data = stdin_data,
                                    .env = {{"TTRPC_ADDRESS", address_ + ".ttrpc"}},
                                    .combined = true});
    pid_t pid = std::atoi(ReadFileOr(bundle + "/shim.pid", "0").c_str());
    if (pid > 0) daemons_.push_back(pid);
    return r;
  }
  pid_t DaemonPid(const std::string& bundle) {
    return std::atoi(ReadFileOr(bundle + "/shim.pid", "0").c_str());
  }
  std::unique_ptr<ttrpc::Client> Dial(const std::string& address) {
    auto c = ttrpc::Client::Dial(UnixAddress::Parse(address));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(c).value() : nullptr;
  }

  std::string id_, bundle_;
  std::string address_ = "/run/runhcs-test/containerd.sock";
  std::vector<pid_t> daemons_;
  std::vector<std::string> bundles_;
};

TEST_F(LaunchTest, Start_PrintsOnlyTheAddressAndDetachesTheDaemon) {
  auto t0 = std::chrono::steady_clock::now();
  RunResult r = Start(id_, bundle_);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);  // not held by the daemon
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(std::regex_match(r.out, std::regex("unix:///run/containerd/s/[0-9a-f]{64}")))
      << r.out;
  EXPECT_EQ(ReadFileOr(bundle_ + "/address"), r.out);  // atomic, no newline
  struct stat sb;
  std::string sock = UnixAddress::Parse(r.out).path;
  ASSERT_EQ(::stat(sock.c_str(), &sb), 0);
  EXPECT_TRUE(S_ISSOCK(sb.st_mode));
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  pid_t pid = DaemonPid(bundle_);
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(Alive(pid));
  // stdin carries the options to the daemon, which then swaps it for
  // /dev/null; none of its stdio may stay on containerd's pipe.
  for (int fd : {0, 1, 2}) {
    for (int i = 0; i < 100 && FdTarget(pid, fd) != "/dev/null"; ++i)
      std::this_thread::sleep_for(20ms);
    EXPECT_EQ(FdTarget(pid, fd), "/dev/null") << "fd " << fd;
  }
  EXPECT_EQ(::getsid(pid), pid);  // its own session, off containerd's
  std::string cmdline = ReadFileOr("/proc/" + std::to_string(pid) + "/cmdline");
  EXPECT_NE(cmdline.find("serve"), std::string::npos);
}

TEST_F(LaunchTest, Daemon_ServesConnectAndErrorsThenShutsDownCleanly) {
  RunResult r = Start(id_, bundle_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  pid_t pid = DaemonPid(bundle_);
  auto client = Dial(r.out);
  ASSERT_TRUE(client);
  v2::ConnectRequest creq;
  creq.set_id(id_);
  v2::ConnectResponse cresp;
  ASSERT_TRUE(Task(client).Connect(creq, &cresp).ok());
  EXPECT_EQ(cresp.shim_pid(), static_cast<uint32_t>(pid));
  EXPECT_NE(cresp.version().find("runhcs"), std::string::npos);
  v2::StateRequest sreq;
  sreq.set_id(id_);
  v2::StateResponse sresp;
  Status st = Task(client).State(sreq, &sresp);
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_EQ(
      client->Call(containerd::task::v2::TaskClient::kServiceName, "Bogus", sreq, nullptr).code(),
      Code::kNotImplemented);
  v2::ShutdownRequest sd;
  sd.set_id(id_);
  EXPECT_TRUE(Task(client).Shutdown(sd, nullptr).ok());
  EXPECT_TRUE(WaitGone(pid));
  EXPECT_NE(::access(UnixAddress::Parse(r.out).path.c_str(), F_OK), 0) << "socket left behind";
}

TEST_F(LaunchTest, Daemon_SigtermExitsAndRemovesSocket) {
  RunResult r = Start(id_, bundle_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  pid_t pid = DaemonPid(bundle_);
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  EXPECT_TRUE(WaitGone(pid));
  EXPECT_NE(::access(UnixAddress::Parse(r.out).path.c_str(), F_OK), 0);
}

TEST_F(LaunchTest, Daemon_LogsToContainerdsLogFifo) {
  std::string fifo = bundle_ + "/log";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0700), 0);
  // As containerd: open it read-write, non-blocking, before `start`.
  UniqueFd reader(::open(fifo.c_str(), O_RDWR | O_NONBLOCK));
  ASSERT_TRUE(reader);
  RunResult r = Start(id_, bundle_, "", {"-debug"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  pid_t pid = DaemonPid(bundle_);
  std::string got;
  for (int i = 0; i < 100 && got.find("serving") == std::string::npos; ++i) {
    char buf[4096];
    ssize_t n = ::read(reader.get(), buf, sizeof buf);
    if (n > 0) got.append(buf, static_cast<size_t>(n));
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_NE(got.find("serving"), std::string::npos) << got;
  EXPECT_EQ(FdTarget(pid, 2), fifo);
}

TEST_F(LaunchTest, Start_AcceptsKnownOptionsAndRejectsOthers) {
  containerd::runc::v1::Options runc;
  runc.set_binary_name("crun");
  runhcs::wkt::Any any;
  any.set_type_url("containerd.runc.v1.Options");
  any.set_value(runc.SerializeAsString());
  RunResult ok = Start(id_, bundle_, any.SerializeAsString());
  EXPECT_EQ(ok.exit_code, 0) << ok.out;

  std::string b2 = MakeBundle(id_ + "-2", "{}");
  any.set_type_url("containerd.unknown.v1.Options");
  RunResult bad = Start(id_ + "-2", b2, any.SerializeAsString());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("containerd.unknown.v1.Options"), std::string::npos) << bad.out;
  EXPECT_EQ(DaemonPid(b2), 0);

  RunResult garbage = Start(id_ + "-2", b2, "\xff\xfe garbage");
  EXPECT_NE(garbage.exit_code, 0);
  EXPECT_NE(garbage.out.find("invalid argument"), std::string::npos) << garbage.out;
}

TEST_F(LaunchTest, Start_BadInputFailsClearly) {
  RunResult no_id = RunCommand({kShim, "-namespace", "n", "-address", address_, "start"},
                               {.cwd = bundle_, .combined = true});
  EXPECT_NE(no_id.exit_code, 0);
  EXPECT_NE(no_id.out.find("-id"), std::string::npos) << no_id.out;

  std::string bad_cri =
      MakeBundle(id_ + "-cri", R"({"annotations":{"io.kubernetes.cri.sandbox-id":"p"}})");
  RunResult cri = Start(id_ + "-cri", bad_cri);
  EXPECT_NE(cri.exit_code, 0);
  EXPECT_NE(cri.out.find("io.kubernetes.cri.container-type"), std::string::npos) << cri.out;

  std::string no_spec = MakeTempDir("runhcs-nospec");
  bundles_.push_back(no_spec);
  RunResult ns = Start(id_ + "-nospec", no_spec);
  EXPECT_NE(ns.exit_code, 0);
  EXPECT_NE(ns.out.find("config.json"), std::string::npos) << ns.out;

  RunResult unknown = RunCommand({kShim, "-id", "x", "frobnicate"}, {.combined = true});
  EXPECT_EQ(unknown.exit_code, 2);
}

TEST_F(LaunchTest, Start_SameIdTwiceWhileAliveIsRefused) {
  ASSERT_EQ(Start(id_, bundle_).exit_code, 0);
  std::string b2 = MakeBundle(id_ + "-again", "{}");
  RunResult again = Start(id_, b2);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.out.find("already"), std::string::npos) << again.out;
}

TEST_F(LaunchTest, Delete_PrintsOnlyDeleteResponseIsIdempotentAndCleansStaleSocket) {
  RunResult r = Start(id_, bundle_);
  ASSERT_EQ(r.exit_code, 0);
  pid_t pid = DaemonPid(bundle_);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);  // the shim dies without cleaning up
  ASSERT_TRUE(WaitGone(pid));
  std::string sock = UnixAddress::Parse(r.out).path;
  ASSERT_EQ(::access(sock.c_str(), F_OK), 0);
  for (int i = 0; i < 2; ++i) {
    RunResult d =
        RunCommand({kShim, "-namespace", "runhcs-test", "-address", address_, "-publish-binary",
                    "/usr/bin/containerd", "-id", id_, "-bundle", bundle_, "delete"},
                   {.cwd = bundle_});
    ASSERT_EQ(d.exit_code, 0) << d.err;
    v2::DeleteResponse resp;
    ASSERT_TRUE(resp.ParseFromString(d.out));
    EXPECT_EQ(resp.exit_status(), 137u);
    EXPECT_GT(resp.exited_at().seconds(), 0);
    EXPECT_EQ(resp.SerializeAsString(), d.out);  // nothing but the message
  }
  EXPECT_NE(::access(sock.c_str(), F_OK), 0);
}

// `delete` cleans up after a shim only when none serves: a live shim (a
// pod's, serving other tasks) keeps its socket; a socket that accepts but
// never answers (held by a process the dead shim was forking) is a dead
// shim's.
TEST_F(LaunchTest, Delete_LeavesALiveShimAloneAndTakesASocketThatOnlyAccepts) {
  RunResult r = Start(id_, bundle_);
  ASSERT_EQ(r.exit_code, 0);
  std::string sock = UnixAddress::Parse(r.out).path;
  auto del = [&] {
    return RunCommand({kShim, "-namespace", "runhcs-test", "-address", address_, "-publish-binary",
                       "/usr/bin/containerd", "-id", id_, "-bundle", bundle_, "delete"},
                      {.cwd = bundle_});
  };
  ASSERT_EQ(del().exit_code, 0);
  EXPECT_EQ(::access(sock.c_str(), F_OK), 0) << "a live shim lost its socket";
  pid_t pid = DaemonPid(bundle_);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(WaitGone(pid));
  ::unlink(sock.c_str());
  auto mute = ListenUnix({sock, false});  // accepts, never answers
  ASSERT_TRUE(mute.ok()) << mute.status().ToString();
  RunResult d = del();
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_NE(::access(sock.c_str(), F_OK), 0) << "a socket nobody answers on was kept";
}

TEST_F(LaunchTest, Start_WorkloadJoinsItsSandboxShimAndSpawnsNothing) {
  std::string pod = id_ + "-pod";
  std::string sb = MakeBundle(pod, R"({"annotations":{"io.kubernetes.cri.container-type":"sandbox",
                                      "io.kubernetes.cri.sandbox-id":")" +
                                       pod + R"("}})");
  std::string wl =
      MakeBundle(id_ + "-wl", R"({"annotations":{"io.kubernetes.cri.container-type":"container",
                                      "io.kubernetes.cri.sandbox-id":")" +
                                  pod + R"("}})");
  // No sandbox shim yet: a clear error.
  RunResult early = Start(id_ + "-wl", wl);
  EXPECT_NE(early.exit_code, 0);
  EXPECT_NE(early.out.find("failed to connect to hosting shim"), std::string::npos) << early.out;

  RunResult s = Start(pod, sb);
  ASSERT_EQ(s.exit_code, 0) << s.out;
  std::string cmdline = ReadFileOr("/proc/" + std::to_string(DaemonPid(sb)) + "/cmdline");
  EXPECT_NE(cmdline.find("-is-sandbox"), std::string::npos);
  RunResult w = Start(id_ + "-wl", wl);
  ASSERT_EQ(w.exit_code, 0) << w.out;
  EXPECT_EQ(w.out, s.out);
  EXPECT_EQ(ReadFileOr(wl + "/address"), s.out);
  EXPECT_EQ(DaemonPid(wl), 0);  // no second shim
}

TEST_F(LaunchTest, Create_BadStdioAndOptionsFailClearlyAndLeaveNothing) {
  RunResult r = Start(id_, bundle_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto client = Dial(r.out);
  ASSERT_TRUE(client);
  v2::CreateTaskRequest req;
  req.set_id(id_);
  req.set_bundle(bundle_);
  req.set_stdout("/nonexistent-dir/fifo-stdout");
  Status st = Task(client).Create(req, nullptr);
  EXPECT_EQ(st.code(), Code::kNotFound) << st.ToString();
  EXPECT_NE(st.message().find("/nonexistent-dir/fifo-stdout"), std::string::npos);
  req.clear_stdout();
  req.mutable_options()->set_type_url("example.com/unknown.v1.Options");
  st = Task(client).Create(req, nullptr);
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find("unknown.v1.Options"), std::string::npos);
  // Nothing was created: no task, no runtime state.
  v2::StateRequest sreq;
  sreq.set_id(id_);
  EXPECT_EQ(Task(client).State(sreq, nullptr).code(), Code::kNotFound);
  EXPECT_NE(::access(("/run/containerd/runc/runhcs-test/" + id_).c_str(), F_OK), 0);
}

TEST_F(LaunchTest, Create_MountsRootfsAndDeleteUnmountsIt) {
  // A real bundle: `runc spec`, a busybox rootfs mounted from a request.
  std::string src = MakeTempDir("runhcs-rootfs-src");
  bundles_.push_back(src);
  ASSERT_TRUE(MakeBusyboxRootfs(src));
  ::unlink((bundle_ + "/config.json").c_str());
  ASSERT_EQ(RunCommand({"runc", "spec", "--bundle", bundle_}).exit_code, 0);
  auto spec = nlohmann::json::parse(ReadFileOr(bundle_ + "/config.json"));
  spec["process"]["terminal"] = false;
  spec["process"]["args"] = {"/bin/sleep", "100"};
  ASSERT_TRUE(WriteFileAtomic(bundle_ + "/config.json", spec.dump(), 0644).ok());
  ::mkdir((bundle_ + "/rootfs").c_str(), 0755);
  RunResult r = Start(id_, bundle_);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto client = Dial(r.out);
  ASSERT_TRUE(client);
  v2::CreateTaskRequest req;
  req.set_id(id_);
  req.set_bundle(bundle_);
  auto* m = req.add_rootfs();
  m->set_type("bind");
  m->set_source(src);
  m->add_options("rbind");
  m->add_options("ro");
  v2::CreateTaskResponse created;
  Status st = Task(client).Create(req, &created);
  ASSERT_TRUE(st.ok()) << st.ToString() << ReadFileOr(bundle_ + "/log.json");
  EXPECT_GT(created.pid(), 0u);
  std::string rootfs = bundle_ + "/rootfs";
  EXPECT_NE(ReadFileOr("/proc/self/mountinfo").find(" " + rootfs + " "), std::string::npos);
  EXPECT_EQ(::access((rootfs + "/bin/busybox").c_str(), F_OK), 0);
  // Never started: Delete kills the created container and unmounts.
  v2::DeleteRequest del;
  del.set_id(id_);
  v2::DeleteResponse deleted;
  st = Task(client).Delete(del, &deleted);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(ReadFileOr("/proc/self/mountinfo").find(" " + rootfs + " "), std::string::npos);
  EXPECT_FALSE(Alive(static_cast<pid_t>(created.pid())));
  EXPECT_NE(::access(("/run/containerd/runc/runhcs-test/" + id_).c_str(), F_OK), 0);
  v2::ShutdownRequest sd;
  sd.set_id(id_);
  EXPECT_TRUE(Task(client).Shutdown(sd, nullptr).ok());
  EXPECT_TRUE(WaitGone(DaemonPid(bundle_)));
}

}  // namespace
}  // namespace runhcs::testing
