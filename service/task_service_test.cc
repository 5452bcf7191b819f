// The task service over a real TTRPC connection, with a factory that makes
// fake-init tasks (SandboxTask without a VM) so routing and error mapping can
// be checked without a container runtime.
#include "service/task_service.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include "runhcs/wkt/empty.pb.h"

#include <future>

#include "base/io.h"
#include "containerd/events/task.pb.h"
#include "containerd/task/v2/shim.pb.h"
#include "events/recording_publisher.h"
#include "pod/sandbox_task.h"
#include "runhcs/diag.pb.h"
#include "ttrpc/client.h"

namespace runhcs::service {
namespace {

namespace v2 = containerd::task::v2;
namespace diag = containerd::runhcs::v1::diag;
using runhcs::wkt::Empty;
using namespace std::chrono_literals;

class FakeFactory : public TaskFactory {
 public:
  explicit FakeFactory(events::Publisher* p) : p_(p) {}
  StatusOr<std::shared_ptr<task::Task>> CreateTask(const task::CreateRequest& req,
                                                   const oci::Spec&) override {
    if (req.id == "fail") return InvalidArgumentError("runtime rejected the spec");
    return std::shared_ptr<task::Task>(pod::SandboxTask::Create(p_, req.id, req.bundle, nullptr));
  }
  StatusOr<std::shared_ptr<pod::Pod>> CreatePod(const task::CreateRequest& req,
                                                const oci::Spec&) override {
    std::shared_ptr<task::Task> sb = pod::SandboxTask::Create(p_, req.id, req.bundle, nullptr);
    return std::shared_ptr<pod::Pod>(std::make_shared<pod::PodImpl>(
        req.id, sb, nullptr,
        [this](const task::CreateRequest& r, const oci::Spec&,
               std::shared_ptr<uvm::UtilityVm>) -> StatusOr<std::shared_ptr<task::Task>> {
          return std::shared_ptr<task::Task>(pod::SandboxTask::Create(p_, r.id, r.bundle, nullptr));
        }));
  }

 private:
  events::Publisher* p_;
};

class ServiceTest : public ::testing::Test {
 protected:
  void Init(const std::string& id, bool is_sandbox) {
    // Unique per process: ctest runs tests of this binary in parallel.
    std::string tmpl = ::testing::TempDir() + "/svc-bundle-" + id + ".XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    bundle_ = tmpl;
    ASSERT_TRUE(WriteFileAtomic(bundle_ + "/config.json", R"({"ociVersion":"1.0.2"})", 0600).ok());
    svc_ = std::make_unique<TaskService>(TaskService::Config{
        id, "ns", is_sandbox, &factory_, &events_, [this] { shutdowns_++; }, nullptr, untasked_});
    svc_->Register(&server_);
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    server_.ServeConnection(UniqueFd(sv[0]));
    client_ = std::make_unique<ttrpc::Client>(UniqueFd(sv[1]));
  }
  void TearDown() override {
    client_.reset();
    server_.Shutdown();
  }
  v2::TaskClient Task() { return v2::TaskClient(client_.get()); }
  diag::ShimDiagClient Diag() { return diag::ShimDiagClient(client_.get()); }
  Status Create(const std::string& id, const std::string& bundle = "") {
    v2::CreateTaskRequest req;
    req.set_id(id);
    req.set_bundle(bundle.empty() ? bundle_ : bundle);
    v2::CreateTaskResponse resp;
    return Task().Create(req, &resp);
  }
  v2::StateResponse State(const std::string& id, Status* st = nullptr) {
    v2::StateRequest req;
    req.set_id(id);
    v2::StateResponse resp;
    Status s = Task().State(req, &resp);
    if (st) *st = s;
    return resp;
  }

  events::RecordingPublisher events_;
  FakeFactory factory_{&events_};
  ttrpc::Server server_;
  std::unique_ptr<TaskService> svc_;
  std::function<std::string()> untasked_;  // Config::untasked_guest_stacks
  std::unique_ptr<ttrpc::Client> client_;
  std::string bundle_;
  std::atomic<int> shutdowns_{0};
};

TEST_F(ServiceTest, UnknownIdIsNotFoundBeforeAndAfterCreate) {
  ASSERT_NO_FATAL_FAILURE(Init("c1", false));
  Status st;
  State("c1", &st);
  EXPECT_EQ(st.code(), Code::kNotFound);
  ASSERT_TRUE(Create("c1").ok());
  State("other", &st);
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_EQ(st.message(), "task with id: 'other' not found");
}

TEST_F(ServiceTest, Lifecycle_CreateStartWaitKillDeleteShutdown) {
  ASSERT_NO_FATAL_FAILURE(Init("c1", false));
  ASSERT_TRUE(Create("c1").ok());
  auto s = State("c1");
  EXPECT_EQ(s.status(), containerd::v1::types::CREATED);
  EXPECT_EQ(s.exit_status(), 255u);
  EXPECT_FALSE(s.has_exited_at());
  EXPECT_EQ(s.bundle(), bundle_);

  v2::StartRequest start;
  start.set_id("c1");
  v2::StartResponse started;
  ASSERT_TRUE(Task().Start(start, &started).ok());
  EXPECT_EQ(started.pid(), 1u);
  EXPECT_EQ(State("c1").status(), containerd::v1::types::RUNNING);

  v2::ConnectRequest conn;
  conn.set_id("c1");
  v2::ConnectResponse connected;
  ASSERT_TRUE(Task().Connect(conn, &connected).ok());
  EXPECT_EQ(connected.shim_pid(), static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(connected.task_pid(), 1u);
  EXPECT_NE(connected.version().find("runhcs"), std::string::npos);

  // Wait blocks while other calls go through on the same connection.
  auto waiter = std::async(std::launch::async, [&] {
    v2::WaitRequest w;
    w.set_id("c1");
    v2::WaitResponse wr;
    Status st = Task().Wait(w, &wr);
    return std::make_pair(st, wr);
  });
  EXPECT_EQ(waiter.wait_for(50ms), std::future_status::timeout);
  EXPECT_EQ(State("c1").status(), containerd::v1::types::RUNNING);

  // Shutdown while the task runs keeps the shim up.
  v2::ShutdownRequest sd;
  sd.set_id("c1");
  Empty empty;
  ASSERT_TRUE(Task().Shutdown(sd, &empty).ok());
  EXPECT_EQ(shutdowns_.load(), 0);

  v2::KillRequest kill;
  kill.set_id("c1");
  kill.set_signal(9);
  ASSERT_TRUE(Task().Kill(kill, &empty).ok());
  auto [wst, wr] = waiter.get();
  ASSERT_TRUE(wst.ok()) << wst.ToString();
  EXPECT_EQ(wr.exit_status(), 0u);
  EXPECT_TRUE(wr.has_exited_at());
  EXPECT_EQ(State("c1").status(), containerd::v1::types::STOPPED);

  v2::DeleteRequest del;
  del.set_id("c1");
  v2::DeleteResponse deleted;
  ASSERT_TRUE(Task().Delete(del, &deleted).ok());
  EXPECT_EQ(deleted.pid(), 1u);
  Status st;
  State("c1", &st);
  EXPECT_EQ(st.code(), Code::kNotFound);

  sd.set_id("someone-else");
  ASSERT_TRUE(Task().Shutdown(sd, &empty).ok());
  EXPECT_EQ(shutdowns_.load(), 0);
  sd.set_id("c1");
  ASSERT_TRUE(Task().Shutdown(sd, &empty).ok());
  ASSERT_TRUE(Task().Shutdown(sd, &empty).ok());
  EXPECT_EQ(shutdowns_.load(), 1);
  EXPECT_EQ(events_.Topics(),
            (std::vector<std::string>{"/tasks/start", "/tasks/exit", "/tasks/delete"}));
}

TEST_F(ServiceTest, SecondCreateInTaskShimIsAlreadyExists) {
  ASSERT_NO_FATAL_FAILURE(Init("c1", false));
  ASSERT_TRUE(Create("c1").ok());
  EXPECT_EQ(Create("c2").code(), Code::kAlreadyExists);
}

TEST_F(ServiceTest, CreateErrorsCarryTheirCode) {
  ASSERT_NO_FATAL_FAILURE(Init("fail", false));
  EXPECT_EQ(Create("fail").code(), Code::kInvalidArgument);
  EXPECT_EQ(Create("x", "/nonexistent/bundle").code(), Code::kNotFound);
  v2::CreateTaskRequest req;
  req.set_id("y");
  req.set_bundle(bundle_);
  req.set_terminal(true);
  req.set_stderr("/tmp/err");
  // As runc-v2 (and what CRI always sends): stderr is accepted and unused.
  v2::CreateTaskResponse resp;
  EXPECT_TRUE(Task().Create(req, &resp).ok());
}

TEST_F(ServiceTest, ExecCheckpointUpdateAndRpcErrors) {
  ASSERT_NO_FATAL_FAILURE(Init("c1", false));
  ASSERT_TRUE(Create("c1").ok());
  Empty empty;
  v2::ExecProcessRequest ex;
  ex.set_id("c1");
  ex.set_exec_id("e1");
  ex.mutable_spec()->set_type_url("bogus");
  EXPECT_EQ(Task().Exec(ex, &empty).code(), Code::kInvalidArgument);
  ex.mutable_spec()->set_type_url("types.containerd.io/opencontainers/runtime-spec/1/Process");
  ex.mutable_spec()->set_value(R"({"args":["true"]})");
  EXPECT_EQ(Task().Exec(ex, &empty).code(), Code::kNotImplemented);  // the fake init's task
  v2::CheckpointTaskRequest cp;
  cp.set_id("c1");
  Status st = Task().Checkpoint(cp, &empty);
  EXPECT_EQ(st.code(), Code::kNotImplemented);
  v2::UpdateTaskRequest up;
  up.set_id("c1");
  EXPECT_EQ(Task().Update(up, &empty).code(), Code::kInvalidArgument);
  v2::ResizePtyRequest rp;
  rp.set_id("c1");
  EXPECT_EQ(Task().ResizePty(rp, &empty).code(), Code::kFailedPrecondition);  // not a tty
  v2::CloseIORequest cio;
  cio.set_id("c1");
  EXPECT_TRUE(Task().CloseIO(cio, &empty).ok());
  EXPECT_TRUE(Task().CloseIO(cio, &empty).ok());
  v2::StateRequest sr;
  sr.set_id("c1");
  sr.set_exec_id("nope");
  v2::StateResponse sresp;
  EXPECT_EQ(Task().State(sr, &sresp).code(), Code::kNotFound);
  v2::PidsRequest pr;
  pr.set_id("c1");
  v2::PidsResponse pids;
  ASSERT_TRUE(Task().Pids(pr, &pids).ok());
  ASSERT_EQ(pids.processes_size(), 1);
  EXPECT_EQ(pids.processes(0).info().type_url(), "containerd.runc.v1.ProcessDetails");
}

TEST_F(ServiceTest, DiagPidAndTasks) {
  ASSERT_NO_FATAL_FAILURE(Init("c1", false));
  diag::PidResponse pid;
  ASSERT_TRUE(Diag().DiagPid(diag::PidRequest(), &pid).ok());
  EXPECT_EQ(pid.pid(), ::getpid());
  diag::TasksRequest tr;
  tr.set_execs(true);
  diag::TasksResponse tasks;
  EXPECT_EQ(Diag().DiagTasks(tr, &tasks).code(), Code::kNotFound);
  ASSERT_TRUE(Create("c1").ok());
  ASSERT_TRUE(Diag().DiagTasks(tr, &tasks).ok());
  ASSERT_EQ(tasks.tasks_size(), 1);
  EXPECT_EQ(tasks.tasks(0).id(), "c1");
  ASSERT_EQ(tasks.tasks(0).execs_size(), 1);
  EXPECT_EQ(tasks.tasks(0).execs(0).state(), "created");
  diag::ExecProcessRequest ex;
  ex.add_args("uname");
  diag::ExecProcessResponse exr;
  Status st = Diag().DiagExecInHost(ex, &exr);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("not isolated"), std::string::npos);
}

TEST_F(ServiceTest, DiagStacksNamesTheShimsOwnFunctions) {
  ASSERT_TRUE(InstallStackHandler().ok());
  ASSERT_NO_FATAL_FAILURE(Init("c1", false));
  diag::StacksResponse stacks;
  ASSERT_TRUE(Diag().DiagStacks(diag::StacksRequest(), &stacks).ok());
  // The thread serving the call, symbolized, and every other thread listed.
  EXPECT_NE(stacks.stacks().find("runhcs::CaptureThreadStacks()"), std::string::npos)
      << stacks.stacks();
  EXPECT_NE(stacks.stacks().find(fmt::format("thread {} ", ::getpid())), std::string::npos);
  EXPECT_EQ(stacks.guest_stacks(), "");  // no task, no VM
}

// A create that hangs in the guest is when the guest's stacks matter most:
// before the task exists, DiagStacks asks the booted VMs directly; once it
// exists, its task answers.
TEST_F(ServiceTest, DiagStacksReachesTheGuestBeforeTheTaskExists) {
  ASSERT_TRUE(InstallStackHandler().ok());
  int asked = 0;
  untasked_ = [&asked] {
    ++asked;
    return std::string("vm pod:\nguest stacks\n");
  };
  ASSERT_NO_FATAL_FAILURE(Init("pod", true));
  diag::StacksResponse stacks;
  ASSERT_TRUE(Diag().DiagStacks(diag::StacksRequest(), &stacks).ok());
  EXPECT_EQ(stacks.guest_stacks(), "vm pod:\nguest stacks\n");
  EXPECT_EQ(asked, 1);
  ASSERT_TRUE(Create("pod").ok());
  ASSERT_TRUE(Diag().DiagStacks(diag::StacksRequest(), &stacks).ok());
  EXPECT_EQ(asked, 1);  // the task's own answer (the fake's: none)
  EXPECT_EQ(stacks.guest_stacks(), "");
}

TEST_F(ServiceTest, PodShim_SandboxFirstThenWorkloads) {
  ASSERT_NO_FATAL_FAILURE(Init("pod", true));
  EXPECT_EQ(Create("w1").code(), Code::kFailedPrecondition);  // sandbox must come first
  ASSERT_TRUE(Create("pod").ok());
  v2::StartRequest start;
  start.set_id("pod");
  v2::StartResponse started;
  ASSERT_TRUE(Task().Start(start, &started).ok());
  std::string wl = bundle_ + "/w1";
  ::mkdir(wl.c_str(), 0700);
  ASSERT_TRUE(WriteFileAtomic(wl + "/config.json",
                              R"({"annotations":{"io.kubernetes.cri.container-type":"container",
                                  "io.kubernetes.cri.sandbox-id":"pod"}})",
                              0600)
                  .ok());
  ASSERT_TRUE(Create("w1", wl).ok());
  EXPECT_EQ(Create("w1", wl).code(), Code::kAlreadyExists);
  EXPECT_EQ(State("w1").status(), containerd::v1::types::CREATED);
  // Shutdown for the pod id with tasks remaining keeps the shim.
  v2::ShutdownRequest sd;
  sd.set_id("pod");
  Empty empty;
  ASSERT_TRUE(Task().Shutdown(sd, &empty).ok());
  EXPECT_EQ(shutdowns_.load(), 0);
}

}  // namespace
}  // namespace runhcs::service
