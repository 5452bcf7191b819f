// The fake pod-sandbox task against a fake VM and a recording publisher.
#include "pod/sandbox_task.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "containerd/events/task.pb.h"
#include "events/recording_publisher.h"
#include "uvm/fake_utility_vm.h"

namespace runhcs::pod {
namespace {

using namespace std::chrono_literals;
using Topics = std::vector<std::string>;

exec::Deadline In(std::chrono::milliseconds d) { return std::chrono::steady_clock::now() + d; }

class SandboxTaskTest : public ::testing::Test {
 protected:
  std::shared_ptr<SandboxTask> Make(bool with_vm = true) {
    return SandboxTask::Create(&events_, "pod1", "/bundle", with_vm ? vm_ : nullptr);
  }
  std::shared_ptr<SandboxTask> Started(bool with_vm = true) {
    auto t = Make(with_vm);
    auto init = t->GetExec("");
    EXPECT_TRUE(init.ok());
    EXPECT_TRUE((*init)->Start().ok());
    return t;
  }

  events::RecordingPublisher events_;
  std::shared_ptr<uvm::FakeUtilityVm> vm_ = std::make_shared<uvm::FakeUtilityVm>();
};

TEST_F(SandboxTaskTest, GetExec_NonEmptyId_NotFound) {
  auto t = Make();
  EXPECT_EQ(t->GetExec("x").status().code(), Code::kNotFound);
  auto init = t->GetExec("");
  ASSERT_TRUE(init.ok());
  EXPECT_EQ((*init)->id(), "pod1");
}

TEST_F(SandboxTaskTest, CreateExec_NotImplemented) {
  EXPECT_EQ(Make()->CreateExec({"e1", {}, "{}"}).code(), Code::kNotImplemented);
}

TEST_F(SandboxTaskTest, KillExec_AllWithExecId_FailedPrecondition) {
  auto t = Started();
  EXPECT_EQ(t->KillExec("e1", 9, true).code(), Code::kFailedPrecondition);
  EXPECT_EQ(t->KillExec("e1", 9, false).code(), Code::kNotFound);
}

TEST_F(SandboxTaskTest, Start_GivesPid1AndTaskStart) {
  auto t = Started();
  EXPECT_EQ(events_.Topics(), Topics{"/tasks/start"});
  EXPECT_EQ(events_.At<containerd::events::TaskStart>(0).pid(), 1u);
  auto pids = t->Pids();
  ASSERT_TRUE(pids.ok());
  ASSERT_EQ(pids->size(), 1u);
  EXPECT_EQ((*pids)[0].pid, 1u);
  EXPECT_EQ((*pids)[0].exec_id, "pod1");
}

TEST_F(SandboxTaskTest, Start_GivesTheVmsPidAndWhatLivesWithTheVmGoesAfterIt) {
  vm_->set_pid(4242);
  struct Probe {
    std::shared_ptr<uvm::FakeUtilityVm> vm;
    int* closes_seen;
    ~Probe() { *closes_seen = vm->close_calls(); }
  };
  int closes_seen = -1;
  auto t = SandboxTask::Create(&events_, "pod1", "/bundle", vm_,
                               std::make_shared<Probe>(Probe{vm_, &closes_seen}));
  ASSERT_TRUE((*t->GetExec(""))->Start().ok());
  EXPECT_EQ(events_.At<containerd::events::TaskStart>(0).pid(), 4242u);
  EXPECT_EQ((*t->Pids())[0].pid, 4242u);
  ASSERT_TRUE(t->KillExec("", 9, false).ok());
  ASSERT_TRUE(t->Wait(In(5s)).ok());
  EXPECT_EQ(closes_seen, 1);  // released, and only after the VM was closed
  EXPECT_EQ(events_.At<containerd::events::TaskExit>(1).pid(), 4242u);
}

TEST_F(SandboxTaskTest, Kill_Running_ExitsZeroClosesVmPublishesExitOnce) {
  auto t = Started();
  ASSERT_TRUE(t->KillExec("", 9, false).ok());
  auto st = t->Wait(In(5s));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->exit_status, 0u);  // whatever the signal
  EXPECT_EQ(vm_->close_calls(), 1);
  EXPECT_EQ(events_.Topics(), (Topics{"/tasks/start", "/tasks/exit"}));
  auto exit = events_.At<containerd::events::TaskExit>(1);
  EXPECT_EQ(exit.container_id(), "pod1");
  EXPECT_EQ(exit.id(), "pod1");
  EXPECT_EQ(exit.pid(), 1u);
  EXPECT_EQ(exit.exit_status(), 0u);
  // Kill again: the exec has exited.
  EXPECT_EQ(t->KillExec("", 9, false).code(), Code::kNotFound);
  t.reset();  // destructor closes again: still one VM close, one TaskExit
  EXPECT_EQ(vm_->close_calls(), 1);
  EXPECT_EQ(events_.Topics(), (Topics{"/tasks/start", "/tasks/exit"}));
}

TEST_F(SandboxTaskTest, Kill_Created_FailedPrecondition) {
  EXPECT_EQ(Make()->KillExec("", 9, false).code(), Code::kFailedPrecondition);
}

TEST_F(SandboxTaskTest, DeleteExec_Created_ForceExitZeroThenTaskDelete) {
  auto t = Make();
  auto st = t->DeleteExec("");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->exit_status, 0u);
  // No TaskStart ever went out; close() still publishes init's exit, and
  // it precedes the delete.
  EXPECT_EQ(events_.Topics(), (Topics{"/tasks/exit", "/tasks/delete"}));
  auto del = events_.At<containerd::events::TaskDelete>(1);
  EXPECT_EQ(del.container_id(), "pod1");
  EXPECT_EQ(del.id(), "");
  EXPECT_EQ(del.exit_status(), 0u);
  EXPECT_EQ(vm_->close_calls(), 1);
}

TEST_F(SandboxTaskTest, DeleteExec_Running_FailedPrecondition) {
  auto t = Started();
  EXPECT_EQ(t->DeleteExec("").status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(t->DeleteExec("x").status().code(), Code::kNotFound);
}

TEST_F(SandboxTaskTest, DeleteExec_AfterExit_ReturnsExitAndPublishesDelete) {
  auto t = Started();
  ASSERT_TRUE(t->KillExec("", 15, false).ok());
  auto st = t->DeleteExec("");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->pid, 1u);
  EXPECT_EQ(st->exit_status, 0u);
  EXPECT_EQ(events_.Topics(), (Topics{"/tasks/start", "/tasks/exit", "/tasks/delete"}));
}

TEST_F(SandboxTaskTest, VmDies_InitForceExitsWithOneThenCloses) {
  auto t = Started();
  auto waiter = std::async(std::launch::async, [&] { return t->Wait(std::nullopt); });
  EXPECT_EQ(waiter.wait_for(30ms), std::future_status::timeout);
  vm_->Crash();
  auto st = waiter.get();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->exit_status, 1u);
  EXPECT_EQ(events_.Topics(), (Topics{"/tasks/start", "/tasks/exit"}));
  EXPECT_EQ(events_.At<containerd::events::TaskExit>(1).exit_status(), 1u);
  EXPECT_EQ(vm_->close_calls(), 1);  // close() still closes the (dead) VM once
}

// The VM watcher may drop the task for the last time (init's exit path holds
// it while the caller has let go): the task is then destroyed on the
// watcher's thread, which must not try to join itself.
TEST_F(SandboxTaskTest, VmDies_TaskDroppedDuringItsExit_DestroyedOnTheWatcher) {
  auto t = Started();
  std::promise<void> in_exit, dropped;
  auto dropped_f = dropped.get_future().share();
  t->SetBeforeExit([&in_exit, dropped_f] {
    in_exit.set_value();
    dropped_f.wait();
  });
  std::weak_ptr<SandboxTask> weak = t;
  vm_->Crash();
  in_exit.get_future().wait();
  t.reset();
  EXPECT_FALSE(weak.expired());  // the exit path holds it
  dropped.set_value();
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!weak.expired() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(events_.Topics(), (Topics{"/tasks/start", "/tasks/exit"}));
  EXPECT_EQ(vm_->close_calls(), 1);
}

TEST_F(SandboxTaskTest, Wait_BlocksUntilClosed) {
  auto t = Started();
  EXPECT_EQ(t->Wait(In(20ms)).status().code(), Code::kDeadlineExceeded);
}

TEST_F(SandboxTaskTest, ExecInHostAndShare_WithoutVm_NotIsolated) {
  auto t = Started(/*with_vm=*/false);
  containerd::runhcs::v1::diag::ExecProcessRequest req;
  req.add_args("uname");
  auto r = t->ExecInHost(req);
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("not isolated"), std::string::npos);
  EXPECT_EQ(t->Share("/a", "/b", true).code(), Code::kFailedPrecondition);
  EXPECT_EQ(t->Stats().status().code(), Code::kFailedPrecondition);
  EXPECT_EQ(t->DumpGuestStacks(), "");
  // Without a VM, killing init still closes and publishes the exit.
  ASSERT_TRUE(t->KillExec("", 9, false).ok());
  ASSERT_TRUE(t->Wait(In(5s)).ok());
}

TEST_F(SandboxTaskTest, ExecInHostShareStacksStats_WithVm_Delegate) {
  auto t = Started();
  containerd::runhcs::v1::diag::ExecProcessRequest req;
  req.add_args("uname");
  auto r = t->ExecInHost(req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 7);
  EXPECT_EQ(vm_->exec_args(), std::vector<std::string>{"uname"});
  ASSERT_TRUE(t->Share("/host", "/vm", true).ok());
  EXPECT_EQ(vm_->shares(), std::vector<std::string>{"/host->/vm:ro"});
  EXPECT_EQ(t->DumpGuestStacks(), "guest stacks");
  auto stats = t->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->type_url(), "containerd.runhcs.stats.v1.Statistics");
  containerd::runhcs::stats::v1::Statistics s;
  ASSERT_TRUE(s.ParseFromString(stats->value()));
  EXPECT_EQ(s.vm().processor().total_runtime_ns(), 1234u);
}

TEST_F(SandboxTaskTest, PauseResumeUpdate_NotImplemented) {
  auto t = Started();
  EXPECT_EQ(t->Pause().code(), Code::kNotImplemented);
  EXPECT_EQ(t->Resume().code(), Code::kNotImplemented);
  EXPECT_EQ(t->Update({}).code(), Code::kNotImplemented);
}

TEST_F(SandboxTaskTest, Concurrent_KillCrashAndDestroy_OneExitEvent) {
  for (int i = 0; i < 30; ++i) {
    events::RecordingPublisher ev;
    auto vm = std::make_shared<uvm::FakeUtilityVm>();
    auto t = SandboxTask::Create(&ev, "p", "", vm);
    ASSERT_TRUE((*t->GetExec(""))->Start().ok());
    std::thread a([&] { (void)t->KillExec("", 9, false); });
    std::thread b([&] { vm->Crash(); });
    a.join();
    b.join();
    t.reset();
    // The exit is published off this thread (the exit path, the VM's
    // watcher): wait for it, then give a second one the time to show.
    EXPECT_TRUE(ev.WaitForCount(2, std::chrono::seconds(10))) << i;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(ev.Topics(), (Topics{"/tasks/start", "/tasks/exit"}));
    EXPECT_EQ(vm->close_calls(), 1);
  }
}

}  // namespace
}  // namespace runhcs::pod
