// One test per MUST line of the shimExec contract (exec/exec.h), run against
// ProcessExec over a FakeProcess.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "containerd/events/task.pb.h"
#include "events/recording_publisher.h"
#include "exec/fake_process.h"
#include "exec/process_exec.h"

namespace runhcs::exec {
namespace {

using namespace std::chrono_literals;

class ExecTest : public ::testing::Test {
 protected:
  std::shared_ptr<ProcessExec> Make(const std::string& exec_id, bool terminal = false) {
    ProcessExec::Config cfg{"task1", exec_id, "/bundle", Stdio{"in", "out", "", terminal}};
    return ProcessExec::Create(std::move(cfg), std::make_unique<FakeProcess>(fake_), &events_,
                               [this](const ExecStatus& st, std::function<void()> done) {
                                 {
                                   MutexLock l(&fake_->mu);
                                   hooked_.push_back(st.exit_status);
                                 }
                                 done();
                               });
  }
  std::shared_ptr<ProcessExec> Running(const std::string& exec_id = "e1", bool terminal = false) {
    auto e = Make(exec_id, terminal);
    EXPECT_TRUE(e->Start().ok());
    return e;
  }
  std::shared_ptr<ProcessExec> Exited(uint32_t status, const std::string& exec_id = "e1") {
    auto e = Running(exec_id);
    FakeProcess::Exit(fake_, status);
    EXPECT_EQ(e->state(), State::kExited);
    return e;
  }

  std::shared_ptr<FakeProcess::Shared> fake_ = std::make_shared<FakeProcess::Shared>();
  events::RecordingPublisher events_;
  std::vector<uint32_t> hooked_;
};

// --- ID / Pid / State / Status: valid in any state -------------------------

TEST_F(ExecTest, IdPidStateStatus_ValidInEveryState) {
  auto e = Make("e1");
  EXPECT_EQ(e->id(), "e1");
  EXPECT_EQ(e->pid(), 0u);
  EXPECT_EQ(e->state(), State::kCreated);
  EXPECT_EQ(e->status().state, State::kCreated);
  ASSERT_TRUE(e->Start().ok());
  EXPECT_EQ(e->pid(), 4242u);
  EXPECT_EQ(e->state(), State::kRunning);
  FakeProcess::Exit(fake_, 3);
  EXPECT_EQ(e->state(), State::kExited);
  ExecStatus st = e->status();
  EXPECT_EQ(st.pid, 4242u);
  EXPECT_EQ(st.exit_status, 3u);
  EXPECT_TRUE(st.exited_at.has_value());
  EXPECT_EQ(st.task_id, "task1");
  EXPECT_EQ(st.exec_id, "e1");
  EXPECT_EQ(st.bundle, "/bundle");
  EXPECT_EQ(st.stdio.stdin_path, "in");
}

TEST_F(ExecTest, Id_InitExecIsTheTaskId) { EXPECT_EQ(Make("")->id(), "task1"); }

TEST_F(ExecTest, Status_Created_Reports255AndNoExitTime) {
  ExecStatus st = Make("e1")->status();
  EXPECT_EQ(st.exit_status, 255u);
  EXPECT_FALSE(st.exited_at.has_value());
}

TEST_F(ExecTest, Status_Running_MustReport255AndNoExitTime) {
  ExecStatus st = Running()->status();
  EXPECT_EQ(st.state, State::kRunning);
  EXPECT_EQ(st.exit_status, 255u);
  EXPECT_FALSE(st.exited_at.has_value());
}

// --- Start -------------------------------------------------------------------

TEST_F(ExecTest, Start_Twice_MustReturnFailedPrecondition) {
  auto e = Running();
  Status st = e->Start();
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_NE(st.message().find("invalid state: 'running' for start"), std::string::npos)
      << st.message();
}

TEST_F(ExecTest, Start_AfterExit_MustReturnFailedPrecondition) {
  EXPECT_EQ(Exited(0)->Start().code(), Code::kFailedPrecondition);
  auto forced = Make("e2");
  forced->ForceExit(0);
  EXPECT_EQ(forced->Start().code(), Code::kFailedPrecondition);
}

TEST_F(ExecTest, Start_WhileStarting_MustReturnFailedPrecondition) {
  std::promise<void> entered, release;
  auto release_f = release.get_future().share();
  {
    MutexLock l(&fake_->mu);
    fake_->during_start = [&](const Process::ExitCallback&) {
      entered.set_value();
      release_f.wait();
    };
  }
  auto e = Make("e1");
  auto first = std::async(std::launch::async, [&] { return e->Start(); });
  entered.get_future().wait();
  EXPECT_EQ(e->Start().code(), Code::kFailedPrecondition);
  EXPECT_EQ(e->Kill(15).code(), Code::kFailedPrecondition);
  release.set_value();
  EXPECT_TRUE(first.get().ok());
}

TEST_F(ExecTest, Start_Failure_ExitsWithStatus1AndPublishesNothing) {
  {
    MutexLock l(&fake_->mu);
    fake_->start_error = NotFoundError("runtime binary missing");
  }
  auto e = Make("e1");
  Status st = e->Start();
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_EQ(e->state(), State::kExited);
  EXPECT_EQ(e->status().exit_status, 1u);
  EXPECT_EQ(events_.size(), 0u);
  ASSERT_TRUE(e->Wait(std::chrono::steady_clock::now() + 1s).ok());
}

TEST_F(ExecTest, Start_PublishesTaskStartForInitAndExecStartedForExec) {
  Running("");
  Running("e1");
  ASSERT_EQ(events_.Topics(), (std::vector<std::string>{"/tasks/start", "/tasks/exec-started"}));
  EXPECT_EQ(events_.At<containerd::events::TaskStart>(0).pid(), 4242u);
  auto started = events_.At<containerd::events::TaskExecStarted>(1);
  EXPECT_EQ(started.exec_id(), "e1");
  EXPECT_EQ(started.container_id(), "task1");
}

TEST_F(ExecTest, Start_ExitRacingStart_StartEventStillFirst) {
  // The process exits while Start is still running (before the start event).
  {
    MutexLock l(&fake_->mu);
    fake_->during_start = [](const Process::ExitCallback& cb) {
      std::thread t([cb] { cb(7); });
      t.join();
    };
  }
  auto e = Make("e1");
  ASSERT_TRUE(e->Start().ok());
  auto st = e->Wait(std::chrono::steady_clock::now() + 2s);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->exit_status, 7u);
  EXPECT_EQ(events_.Topics(), (std::vector<std::string>{"/tasks/exec-started", "/tasks/exit"}));
}

// An exec whose process is gone before Start returns: Start must not wait
// for its output to drain. A client reads an exec's output only after its
// Start returned (containerd's CRI attaches to an ExecSync's fifos then), so
// waiting there would hold the output until the drain gives up on it.
TEST_F(ExecTest, Start_ExitRacingStart_StartReturnsBeforeTheOutputIsRead) {
  {
    MutexLock l(&fake_->mu);
    fake_->hold_release_io = true;
    fake_->during_start = [](const Process::ExitCallback& cb) {
      std::thread t([cb] { cb(7); });
      t.join();
    };
  }
  auto e = Make("e1");
  auto started = std::async(std::launch::async, [&] { return e->Start(); });
  if (started.wait_for(5s) != std::future_status::ready) {
    ADD_FAILURE() << "Start waited for the exec's output to be read";
    FakeProcess::ReleaseHeldIo(fake_);
  }
  EXPECT_TRUE(started.get().ok());
  // The exit completes, and its event goes out, once the output is released.
  EXPECT_EQ(events_.Topics(), (std::vector<std::string>{"/tasks/exec-started"}));
  EXPECT_FALSE(e->Wait(std::chrono::steady_clock::now() + 50ms).ok());
  ASSERT_TRUE(FakeProcess::ReleaseHeldIo(fake_));
  auto st = e->Wait(std::chrono::steady_clock::now() + 2s);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->exit_status, 7u);
  EXPECT_EQ(events_.Topics(), (std::vector<std::string>{"/tasks/exec-started", "/tasks/exit"}));
}

// --- Kill --------------------------------------------------------------------

TEST_F(ExecTest, Kill_Created_MustReturnFailedPrecondition) {
  auto e = Make("e1");
  EXPECT_EQ(e->Kill(9).code(), Code::kFailedPrecondition);
  EXPECT_EQ(e->state(), State::kCreated);  // hcsshim's code would exit it; the contract does not
}

TEST_F(ExecTest, Kill_Exited_MustReturnNotFound) {
  EXPECT_EQ(Exited(0)->Kill(9).code(), Code::kNotFound);
}

TEST_F(ExecTest, Kill_Running_DeliversTheSignal) {
  auto e = Running();
  ASSERT_TRUE(e->Kill(15).ok());
  MutexLock l(&fake_->mu);
  EXPECT_EQ(fake_->signals, std::vector<uint32_t>{15});
}

TEST_F(ExecTest, Kill_NotDelivered_ReturnsNotFound) {
  auto e = Running();
  {
    MutexLock l(&fake_->mu);
    fake_->gone = true;  // exited, exit not yet reported
  }
  EXPECT_EQ(e->Kill(15).code(), Code::kNotFound);
}

TEST_F(ExecTest, Kill_Sigkill_ExitReportedAsynchronously) {
  {
    MutexLock l(&fake_->mu);
    fake_->exit_on_signal = 137;
  }
  auto e = Running();
  ASSERT_TRUE(e->Kill(9).ok());
  auto st = e->Wait(std::chrono::steady_clock::now() + 2s);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->exit_status, 137u);
}

// --- ResizePty -----------------------------------------------------------------

TEST_F(ExecTest, ResizePty_NotATty_MustReturnFailedPreconditionInEveryState) {
  auto e = Make("e1", /*terminal=*/false);
  EXPECT_EQ(e->ResizePty(80, 24).code(), Code::kFailedPrecondition);
  ASSERT_TRUE(e->Start().ok());
  EXPECT_EQ(e->ResizePty(80, 24).code(), Code::kFailedPrecondition);
  FakeProcess::Exit(fake_, 0);
  EXPECT_EQ(e->ResizePty(80, 24).code(), Code::kFailedPrecondition);
}

TEST_F(ExecTest, ResizePty_TtyNotRunning_MustBeIgnoredWithoutError) {
  auto e = Make("e1", /*terminal=*/true);
  EXPECT_TRUE(e->ResizePty(80, 24).ok());
  ASSERT_TRUE(e->Start().ok());
  FakeProcess::Exit(fake_, 0);
  EXPECT_TRUE(e->ResizePty(100, 30).ok());
  MutexLock l(&fake_->mu);
  EXPECT_TRUE(fake_->resizes.empty());
}

TEST_F(ExecTest, ResizePty_TtyRunning_Resizes) {
  auto e = Running("e1", /*terminal=*/true);
  ASSERT_TRUE(e->ResizePty(120, 40).ok());
  MutexLock l(&fake_->mu);
  ASSERT_EQ(fake_->resizes.size(), 1u);
  EXPECT_EQ(fake_->resizes[0], std::make_pair(120u, 40u));
}

// --- CloseIO -------------------------------------------------------------------

TEST_F(ExecTest, CloseIO_Duplicate_MustNotReturnError) {
  auto e = Running();
  EXPECT_TRUE(e->CloseIO(true).ok());
  EXPECT_TRUE(e->CloseIO(true).ok());
  MutexLock l(&fake_->mu);
  EXPECT_EQ(fake_->close_stdin_calls, 1);
}

TEST_F(ExecTest, CloseIO_ValidInAnyState) {
  EXPECT_TRUE(Make("a")->CloseIO(true).ok());
  EXPECT_TRUE(Exited(0, "b")->CloseIO(true).ok());
}

// --- Wait ----------------------------------------------------------------------

TEST_F(ExecTest, Wait_AfterExit_MustReturnImmediatelyWithOriginalStatus) {
  auto e = Exited(42);
  ExecStatus first = e->status();
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 3; ++i) {
    auto st = e->Wait(std::chrono::steady_clock::now() + 1ms);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->exit_status, 42u);
    EXPECT_EQ(st->exited_at, first.exited_at);
  }
  e->ForceExit(1);  // does not rewrite history
  EXPECT_EQ(e->Wait()->exit_status, 42u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
}

TEST_F(ExecTest, Wait_ValidInCreatedAndRunning_BlocksUntilExit) {
  auto e = Make("e1");
  auto waiter = std::async(std::launch::async, [&] { return e->Wait(); });
  EXPECT_EQ(waiter.wait_for(30ms), std::future_status::timeout);
  ASSERT_TRUE(e->Start().ok());
  EXPECT_EQ(waiter.wait_for(30ms), std::future_status::timeout);
  FakeProcess::Exit(fake_, 5);
  EXPECT_EQ(waiter.get()->exit_status, 5u);
}

TEST_F(ExecTest, Wait_DeadlinePasses_DeadlineExceeded) {
  auto e = Running();
  EXPECT_EQ(e->Wait(std::chrono::steady_clock::now() + 20ms).status().code(),
            Code::kDeadlineExceeded);
}

// --- ForceExit -------------------------------------------------------------------

TEST_F(ExecTest, ForceExit_UnblocksAllWaitersWithTheGivenStatus) {
  auto e = Running();
  std::vector<std::future<StatusOr<ExecStatus>>> waiters;
  for (int i = 0; i < 4; ++i) {
    waiters.push_back(std::async(std::launch::async, [&] { return e->Wait(); }));
  }
  std::this_thread::sleep_for(20ms);
  e->ForceExit(9);
  for (auto& w : waiters) {
    auto st = w.get();
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->exit_status, 9u);
  }
  MutexLock l(&fake_->mu);
  EXPECT_EQ(fake_->terminate_calls, 1);
  EXPECT_EQ(fake_->release_io_calls, 1);
}

TEST_F(ExecTest, ForceExit_IsIdempotent) {
  auto e = Running();
  e->ForceExit(3);
  e->ForceExit(4);
  FakeProcess::Exit(fake_, 137);  // the real exit arriving late changes nothing
  EXPECT_EQ(e->status().exit_status, 3u);
  EXPECT_EQ(events_.Topics(), (std::vector<std::string>{"/tasks/exec-started", "/tasks/exit"}));
  MutexLock l(&fake_->mu);
  EXPECT_EQ(fake_->terminate_calls, 1);
  EXPECT_EQ(fake_->release_io_calls, 1);
  EXPECT_EQ(hooked_, std::vector<uint32_t>{3});
}

TEST_F(ExecTest, ForceExit_Created_ExitsWithoutExitEventOrTerminate) {
  auto e = Make("e1");
  e->ForceExit(0);
  EXPECT_EQ(e->state(), State::kExited);
  EXPECT_EQ(e->status().exit_status, 0u);
  EXPECT_EQ(events_.size(), 0u);
  MutexLock l(&fake_->mu);
  EXPECT_EQ(fake_->terminate_calls, 0);
  EXPECT_EQ(fake_->release_io_calls, 1);
}

// It applies once the process exists; Start does not wait for the output to
// be read (see Start_ExitRacingStart_StartReturnsBeforeTheOutputIsRead).
TEST_F(ExecTest, ForceExit_WhileStarting_AppliesOnceStarted) {
  std::promise<void> entered, release;
  auto release_f = release.get_future().share();
  {
    MutexLock l(&fake_->mu);
    fake_->hold_release_io = true;
    fake_->during_start = [&](const Process::ExitCallback&) {
      entered.set_value();
      release_f.wait();
    };
  }
  auto e = Make("e1");
  auto first = std::async(std::launch::async, [&] { return e->Start(); });
  entered.get_future().wait();
  e->ForceExit(1);
  release.set_value();
  if (first.wait_for(5s) != std::future_status::ready) {
    ADD_FAILURE() << "Start waited for the exec's output to be read";
    FakeProcess::ReleaseHeldIo(fake_);
  }
  ASSERT_TRUE(first.get().ok());
  {
    MutexLock l(&fake_->mu);
    EXPECT_EQ(fake_->terminate_calls, 1);
  }
  ASSERT_TRUE(FakeProcess::ReleaseHeldIo(fake_));
  auto st = e->Wait(std::chrono::steady_clock::now() + 2s);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->exit_status, 1u);
  EXPECT_EQ(events_.Topics(), (std::vector<std::string>{"/tasks/exec-started", "/tasks/exit"}));
}

// --- Exit events -------------------------------------------------------------------

TEST_F(ExecTest, Exit_ExecPublishesTaskExitWithStatusAndTime) {
  Exited(3, "e1");
  ASSERT_EQ(events_.size(), 2u);
  auto ev = events_.At<containerd::events::TaskExit>(1);
  EXPECT_EQ(ev.container_id(), "task1");
  EXPECT_EQ(ev.id(), "e1");
  EXPECT_EQ(ev.pid(), 4242u);
  EXPECT_EQ(ev.exit_status(), 3u);
  EXPECT_GT(ev.exited_at().seconds(), 0);
}

TEST_F(ExecTest, Exit_InitLeavesTaskExitToTheTask) {
  Exited(0, "");
  EXPECT_EQ(events_.Topics(), std::vector<std::string>{"/tasks/start"});
  MutexLock l(&fake_->mu);
  EXPECT_EQ(hooked_, std::vector<uint32_t>{0});
}

TEST_F(ExecTest, Concurrent_KillForceExitAndExitRace_OneExitOneEvent) {
  for (int round = 0; round < 50; ++round) {
    fake_ = std::make_shared<FakeProcess::Shared>();
    {
      MutexLock l(&fake_->mu);
      fake_->exit_on_signal = 143;
    }
    events::RecordingPublisher ev;
    auto e = ProcessExec::Create({"t", "e", "", {}}, std::make_unique<FakeProcess>(fake_), &ev);
    ASSERT_TRUE(e->Start().ok());
    std::thread a([&] { (void)e->Kill(15); });
    std::thread b([&] { e->ForceExit(1); });
    std::thread c([&] { (void)e->Wait(); });
    a.join();
    b.join();
    c.join();
    EXPECT_EQ(e->state(), State::kExited);
    EXPECT_EQ(ev.Topics(), (std::vector<std::string>{"/tasks/exec-started", "/tasks/exit"}));
    e.reset();
  }
}

}  // namespace
}  // namespace runhcs::exec
