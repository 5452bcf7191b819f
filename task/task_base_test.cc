// TaskBase's init-exit path and Delete, with fake processes.
#include "task/task_base.h"

#include <gtest/gtest.h>

#include <thread>

#include "containerd/events/task.pb.h"
#include "events/recording_publisher.h"
#include "exec/fake_process.h"

namespace runhcs::task {
namespace {

using exec::FakeProcess;
using namespace std::chrono_literals;

class FakeTask : public TaskBase {
 public:
  FakeTask(events::Publisher* p) : TaskBase("t1", "/bundle", "ns", p) {}
  static std::shared_ptr<FakeTask> Make(events::Publisher* p,
                                        std::shared_ptr<FakeProcess::Shared> init) {
    auto t = std::make_shared<FakeTask>(p);
    t->SetInit({"t1", "", "/bundle", {}, 0}, std::make_unique<FakeProcess>(std::move(init)));
    return t;
  }
  // The knobs of the next exec's process.
  std::shared_ptr<FakeProcess::Shared> next = std::make_shared<FakeProcess::Shared>();
  std::atomic<int> teardowns{0};

  Status KillExec(std::string_view exec_id, uint32_t signal, bool) override {
    ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
    return e->Kill(signal);
  }
  StatusOr<std::vector<ProcessDetails>> Pids() override { return std::vector<ProcessDetails>{}; }
  Status Pause() override { return NotImplementedError("pause"); }
  Status Resume() override { return NotImplementedError("resume"); }
  Status Update(const runhcs::wkt::Any&) override { return NotImplementedError("update"); }
  StatusOr<runhcs::wkt::Any> Stats() override { return NotImplementedError("stats"); }
  StatusOr<int32_t> ExecInHost(const containerd::runhcs::v1::diag::ExecProcessRequest&) override {
    return NotIsolatedError(id());
  }
  std::string DumpGuestStacks() override { return ""; }
  Status Share(const std::string&, const std::string&, bool) override {
    return NotIsolatedError(id());
  }

 private:
  StatusOr<std::unique_ptr<exec::Process>> NewExecProcess(const ExecRequest&) override {
    MutexLock l(&mu_);
    procs_.push_back(next);
    auto p = std::make_unique<FakeProcess>(next);
    next = std::make_shared<FakeProcess::Shared>();
    return std::unique_ptr<exec::Process>(std::move(p));
  }
  void KillAll() override {
    std::vector<std::shared_ptr<FakeProcess::Shared>> ps;
    {
      MutexLock l(&mu_);
      ps = procs_;
    }
    for (auto& s : ps) std::thread([s] { FakeProcess::Exit(s, 137); }).detach();
  }
  void Teardown() override { ++teardowns; }
  Mutex mu_;
  std::vector<std::shared_ptr<FakeProcess::Shared>> procs_ GUARDED_BY(mu_);
};

ExecRequest Req(const std::string& id) { return {id, {}, R"({"args":["true"]})"}; }

class TaskBaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    init_ = std::make_shared<FakeProcess::Shared>();
    {
      MutexLock l(&init_->mu);
      init_->exit_on_signal = 0;
    }
    task_ = FakeTask::Make(&events_, init_);
    auto init = task_->GetExec("");
    ASSERT_TRUE(init.ok());
    ASSERT_TRUE((*init)->Start().ok());
  }
  void KillInit() { ASSERT_TRUE((*task_->GetExec(""))->Kill(9).ok()); }
  // The position of the first event with `topic` (and exec id), or -1.
  int Find(const std::string& topic, const std::string& exec_id) {
    auto topics = events_.Topics();
    for (size_t i = 0; i < topics.size(); ++i) {
      if (topics[i] != topic) continue;
      std::string id;
      if (topic == "/tasks/exit") id = events_.At<containerd::events::TaskExit>(i).id();
      if (topic == "/tasks/exec-started")
        id = events_.At<containerd::events::TaskExecStarted>(i).exec_id();
      if (id == exec_id) return static_cast<int>(i);
    }
    return -1;
  }

  events::RecordingPublisher events_;
  std::shared_ptr<FakeProcess::Shared> init_;
  std::shared_ptr<FakeTask> task_;
};

TEST_F(TaskBaseTest, AnExecStillStartingWhenInitExitsEndsBeforeInitsTaskExit) {
  Latch let_start;
  {
    MutexLock l(&task_->next->mu);
    task_->next->during_start = [&](const exec::Process::ExitCallback&) { let_start.Wait(); };
  }
  ASSERT_TRUE(task_->CreateExec(Req("e1")).ok());
  auto e1 = *task_->GetExec("e1");
  std::thread starter([&] { EXPECT_TRUE(e1->Start().ok()); });
  std::this_thread::sleep_for(50ms);  // e1 is inside its Start
  KillInit();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(Find("/tasks/exit", "t1"), -1) << "init's TaskExit before the starting exec's";
  let_start.Open();
  starter.join();
  ASSERT_TRUE(task_->Wait(std::chrono::steady_clock::now() + 10s).ok());
  int started = Find("/tasks/exec-started", "e1"), exited = Find("/tasks/exit", "e1"),
      init = Find("/tasks/exit", "t1");
  ASSERT_GE(started, 0);
  ASSERT_GE(exited, 0);
  ASSERT_GE(init, 0);
  EXPECT_LT(started, exited);
  EXPECT_LT(exited, init);
  EXPECT_EQ(task_->teardowns.load(), 1);
}

TEST_F(TaskBaseTest, AfterInitExitsNoExecIsAddedOrStartedAndCreatedOnesAreForceExited) {
  ASSERT_TRUE(task_->CreateExec(Req("never")).ok());
  auto never = *task_->GetExec("never");
  std::thread waiter([&] {
    auto st = never->Wait(std::chrono::steady_clock::now() + 10s);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->exit_status, kNeverStartedStatus);
  });
  KillInit();
  ASSERT_TRUE(task_->Wait(std::chrono::steady_clock::now() + 10s).ok());
  waiter.join();
  EXPECT_EQ(never->Start().code(), Code::kFailedPrecondition);
  EXPECT_EQ(task_->CreateExec(Req("late")).code(), Code::kFailedPrecondition);
  EXPECT_EQ(Find("/tasks/exec-started", "never"), -1);
  // Delete of init: TaskExit, then TaskDelete.
  auto del = task_->DeleteExec("");
  ASSERT_TRUE(del.ok()) << del.status().ToString();
  auto topics = events_.Topics();
  EXPECT_EQ(topics.back(), "/tasks/delete");
}

TEST_F(TaskBaseTest, NotifyClosedRunsOnceTheTaskIsClosedAndAtOnceAfter) {
  std::atomic<int> calls{0};
  task_->NotifyClosed([&](const exec::ExecStatus& st) {
    EXPECT_EQ(st.exit_status, 0u);
    ++calls;
  });
  EXPECT_EQ(calls.load(), 0);
  KillInit();
  ASSERT_TRUE(task_->Wait(std::chrono::steady_clock::now() + 10s).ok());
  // Waiters run on the closing thread, right after Wait()ers are woken.
  for (int i = 0; i < 200 && calls == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(calls.load(), 1);
  task_->NotifyClosed([&](const exec::ExecStatus&) { ++calls; });
  EXPECT_EQ(calls.load(), 2);
}

}  // namespace
}  // namespace runhcs::task
