// shimdiag against fake shims: in-process TTRPC servers that answer the diag
// service, registered in a temporary registry.
#include "cmd/shimdiag/shimdiag.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/fd.h"
#include "base/io.h"
#include "base/version.h"
#include "runhcs/diag.ttrpc.h"
#include "service/shim_registry.h"
#include "ttrpc/server.h"

namespace runhcs::shimdiag {
namespace {

namespace diag = containerd::runhcs::v1::diag;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using ttrpc::CallContext;

struct FakeShim : diag::ShimDiagServer {
  Status DiagPid(const CallContext&, const diag::PidRequest&, diag::PidResponse* r) override {
    r->set_pid(pid);
    return OkStatus();
  }
  Status DiagTasks(const CallContext&, const diag::TasksRequest& req,
                   diag::TasksResponse* r) override {
    for (const char* id : {"sandbox", "web"}) {
      auto* t = r->add_tasks();
      t->set_id(id);
      if (!req.execs()) continue;
      auto* e = t->add_execs();
      e->set_id(std::string(id) == "web" ? "web" : "sandbox");
      e->set_state("running");
      if (std::string(id) == "web") {
        auto* x = t->add_execs();
        x->set_id("debug1");
        x->set_state("exited");
      }
    }
    return OkStatus();
  }
  Status DiagStacks(const CallContext&, const diag::StacksRequest&,
                    diag::StacksResponse* r) override {
    r->set_stacks("thread 1 shim:\n  #0 Main\n");
    r->set_guest_stacks("thread 1 agent:\n");
    return OkStatus();
  }
  Status DiagShare(const CallContext&, const diag::ShareRequest& req,
                   diag::ShareResponse*) override {
    last_share = req;
    if (req.host_path() == "/missing")
      return NotFoundError("share: host path /missing does not exist");
    return OkStatus();
  }
  // Echoes stdin to stdout upper-cased, writes "err" to stderr, exits 7;
  // "fail" as the command is refused.
  Status DiagExecInHost(const CallContext&, const diag::ExecProcessRequest& req,
                        diag::ExecProcessResponse* r) override {
    last_exec = req;
    if (req.args(0) == "fail") return FailedPreconditionError("task is not isolated");
    UniqueFd in(::open(req.stdin().c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd out(::open(req.stdout().c_str(), O_WRONLY | O_CLOEXEC));
    UniqueFd err;
    if (!req.stderr().empty()) err.reset(::open(req.stderr().c_str(), O_WRONLY | O_CLOEXEC));
    auto data = ReadAll(in.get());
    std::string up = data.ok() ? *data : "";
    for (auto& c : up) c = static_cast<char>(std::toupper(c));
    (void)WriteAll(out.get(), up);
    if (err) (void)WriteAll(err.get(), "err");
    r->set_exit_code(7);
    return OkStatus();
  }

  std::unique_ptr<ttrpc::Server> server = std::make_unique<ttrpc::Server>();
  std::string socket;
  int32_t pid = 0;
  diag::ShareRequest last_share;
  diag::ExecProcessRequest last_exec;
};

class ShimdiagTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shimdiag-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    registry_ = std::make_unique<service::ShimRegistry>(root_ + "/shims");
  }
  void TearDown() override {
    for (auto& s : shims_) s->server->Shutdown(std::chrono::milliseconds(500));
    shims_.clear();
    std::filesystem::remove_all(root_);
  }

  FakeShim* AddShim(const std::string& name, int32_t pid) {
    auto s = std::make_unique<FakeShim>();
    s->pid = pid;
    s->socket = root_ + "/" + std::to_string(shims_.size()) + ".sock";
    FakeShim* raw = s.get();
    diag::RegisterShimDiagServer(s->server.get(), raw);
    auto l = ListenUnix(UnixAddress::Parse("unix://" + s->socket));
    EXPECT_TRUE(l.ok());
    s->server->ServeListener(std::move(*l));
    EXPECT_TRUE(registry_->Register(name, s->socket).ok());
    shims_.push_back(std::move(s));
    return raw;
  }

  struct Result {
    int code;
    std::string out, err;
  };
  Result RunCli(std::vector<std::string> args, const std::string& input = "") {
    int in[2], out[2], err[2];
    EXPECT_EQ(::pipe2(in, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
    EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
    UniqueFd in_r(in[0]), in_w(in[1]), out_r(out[0]), out_w(out[1]), err_r(err[0]), err_w(err[1]);
    std::thread feeder([&] {
      (void)WriteAll(in_w.get(), input);
      in_w.reset();
    });
    std::string o, e;
    std::thread ro([&] { o = *ReadAll(out_r.get()); });
    std::thread re([&] { e = *ReadAll(err_r.get()); });
    Env env{registry_->dir(), in_r.get(), out_w.get(), err_w.get(), root_};
    int code = shimdiag::Run(args, env);
    out_w.reset();
    err_w.reset();
    feeder.join();
    ro.join();
    re.join();
    return {code, o, e};
  }

  std::string root_;
  std::unique_ptr<service::ShimRegistry> registry_;
  std::vector<std::unique_ptr<FakeShim>> shims_;
};

TEST_F(ShimdiagTest, ListNamesEveryShimAndWithPidsAsksEachForItsPid) {
  AddShim("k8s.io-pod1", 111);
  AddShim("default-web", 222);
  auto r = RunCli({"list"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "default-web\nk8s.io-pod1\n");

  r = RunCli({"list", "--pids"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, StartsWith("Shim"));
  EXPECT_THAT(r.out, HasSubstr("default-web  222\n"));
  EXPECT_THAT(r.out, HasSubstr("k8s.io-pod1  111\n"));

  r = RunCli({"list", "--pids", "--json"});
  EXPECT_EQ(r.code, 0);
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["name"], "default-web");
  EXPECT_EQ(j[0]["pid"], 222);
  EXPECT_EQ(j[1]["socket"], shims_[0]->socket);
}

TEST_F(ShimdiagTest, AUniquePrefixNamesAShimAndErrorsAreClear) {
  AddShim("default-web", 222);
  AddShim("default-db", 333);
  auto r = RunCli({"pid", "default-w"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "222\n");

  r = RunCli({"pid", "default-"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("multiple shims beginning with \"default-\""));
  r = RunCli({"pid", "nope"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("no such shim \"nope\""));
  r = RunCli({"pid", "../x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("invalid shim name"));
}

TEST_F(ShimdiagTest, AShimThatStoppedAnsweringIsReported) {
  FakeShim* s = AddShim("default-web", 222);
  s->server->Shutdown(std::chrono::milliseconds(100));  // socket file stays, nobody accepts
  auto r = RunCli({"pid", "default-web"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("not answering"));
}

TEST_F(ShimdiagTest, VersionNamesTheReleaseAndTheCommit) {
  for (const char* flag : {"--version", "version"}) {
    auto v = RunCli({flag});
    EXPECT_EQ(v.code, 0);
    EXPECT_EQ(v.out, fmt::format("shimdiag {} (commit {})\n", Version(), GitCommit()));
  }
  EXPECT_FALSE(GitCommit().empty());
  EXPECT_FALSE(Version().empty());
}

TEST_F(ShimdiagTest, UsageErrorsExitTwo) {
  EXPECT_EQ(RunCli({}).code, 2);
  EXPECT_EQ(RunCli({"frob"}).code, 2);
  EXPECT_EQ(RunCli({"pid"}).code, 2);
  EXPECT_EQ(RunCli({"list", "--execs"}).code, 2);
  EXPECT_EQ(RunCli({"share", "a", "b"}).code, 2);
  EXPECT_EQ(RunCli({"exec", "a"}).code, 2);
  auto help = RunCli({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out, HasSubstr("shimdiag COMMAND"));
}

TEST_F(ShimdiagTest, TasksListsTasksAndTheirExecs) {
  AddShim("default-pod", 1);
  auto r = RunCli({"tasks", "default-pod"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "sandbox\nweb\n");
  r = RunCli({"tasks", "--execs", "default-pod"});
  EXPECT_EQ(
      r.out,
      "sandbox\n|----> \trunning: sandbox\nweb\n|----> \trunning: web\n|----> \texited: debug1\n");
  r = RunCli({"tasks", "--execs", "--json", "default-pod"});
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j[1]["id"], "web");
  EXPECT_EQ(j[1]["execs"][1]["state"], "exited");
}

TEST_F(ShimdiagTest, StacksPrintsTheShimsThenTheGuests) {
  AddShim("default-pod", 1);
  auto r = RunCli({"stacks", "default-pod"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "Stacks:\nthread 1 shim:\n  #0 Main\n\nGuest Stacks:\nthread 1 agent:\n");
}

TEST_F(ShimdiagTest, ShareSendsThePathsAndReportsARefusal) {
  FakeShim* s = AddShim("default-pod", 1);
  auto r = RunCli({"share", "--ro", "default-pod", "/srv/data", "/data"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "Shared /srv/data into default-pod at /data (read-only)\n");
  EXPECT_EQ(s->last_share.host_path(), "/srv/data");
  EXPECT_EQ(s->last_share.uvm_path(), "/data");
  EXPECT_TRUE(s->last_share.read_only());
  r = RunCli({"share", "default-pod", "/missing", "/m"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("/missing does not exist"));
}

TEST_F(ShimdiagTest, ExecForwardsStdioAndReturnsTheRemoteExitCode) {
  FakeShim* s = AddShim("default-pod", 1);
  auto r = RunCli({"exec", "default-pod", "tr", "-d", "x"}, "hello");
  EXPECT_EQ(r.code, 7);
  EXPECT_EQ(r.out, "HELLO");
  EXPECT_EQ(r.err, "err");
  ASSERT_EQ(s->last_exec.args_size(), 3);
  EXPECT_EQ(s->last_exec.args(1), "-d");  // the command's flags are not shimdiag's
  EXPECT_FALSE(s->last_exec.terminal());
  // The fifos are gone afterwards.
  for (const auto& p : {s->last_exec.stdin(), s->last_exec.stdout(), s->last_exec.stderr()}) {
    EXPECT_NE(::access(p.c_str(), F_OK), 0) << p;
  }
}

TEST_F(ShimdiagTest, ExecWithATerminalSendsNoStderr) {
  FakeShim* s = AddShim("default-pod", 1);
  auto r = RunCli({"exec", "-t", "default-pod", "sh"}, "ab");
  EXPECT_EQ(r.code, 7);
  EXPECT_EQ(r.out, "AB");
  EXPECT_TRUE(s->last_exec.terminal());
  EXPECT_EQ(s->last_exec.stderr(), "");
}

TEST_F(ShimdiagTest, ExecRefusedByTheShimFailsWithoutHanging) {
  AddShim("default-pod", 1);
  auto r = RunCli({"exec", "default-pod", "fail"}, "");
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("not isolated"));
}

}  // namespace
}  // namespace runhcs::shimdiag
