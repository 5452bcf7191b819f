#include "pod/pod.h"

#include <gtest/gtest.h>

#include "events/recording_publisher.h"
#include "pod/sandbox_task.h"
#include "uvm/fake_utility_vm.h"

namespace runhcs::pod {
namespace {

using namespace std::chrono_literals;

oci::Spec WorkloadSpec(const std::string& sandbox) {
  return oci::Spec::Parse(R"({"annotations":{"io.kubernetes.cri.container-type":"container",
                              "io.kubernetes.cri.sandbox-id":")" +
                          sandbox + R"("}})")
      .value();
}

// Workloads are fake sandbox-style tasks: a real Task with a fake init.
class PodTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sandbox_ = std::shared_ptr<SandboxTask>(SandboxTask::Create(&events_, "pod", "", vm_));
    pod_ = std::make_unique<PodImpl>(
        "pod", sandbox_, vm_,
        [this](const task::CreateRequest& req, const oci::Spec&,
               std::shared_ptr<uvm::UtilityVm> host) -> StatusOr<std::shared_ptr<task::Task>> {
          EXPECT_EQ(host, vm_);
          std::shared_ptr<task::Task> t =
              SandboxTask::Create(&events_, req.id, req.bundle, nullptr);
          EXPECT_TRUE((*t->GetExec(""))->Start().ok());
          return t;
        });
  }
  void StartSandbox() { ASSERT_TRUE((*sandbox_->GetExec(""))->Start().ok()); }
  task::CreateRequest Req(const std::string& id) { return {id, "/b/" + id, {}, {}, {}}; }

  events::RecordingPublisher events_;
  std::shared_ptr<uvm::FakeUtilityVm> vm_ = std::make_shared<uvm::FakeUtilityVm>();
  std::shared_ptr<SandboxTask> sandbox_;
  std::unique_ptr<PodImpl> pod_;
};

TEST_F(PodTest, CreateTask_SandboxNotRunning_FailedPrecondition) {
  EXPECT_EQ(pod_->CreateTask(Req("w1"), WorkloadSpec("pod")).code(), Code::kFailedPrecondition);
}

TEST_F(PodTest, CreateTask_DuplicateOrPodId_AlreadyExists) {
  StartSandbox();
  EXPECT_EQ(pod_->CreateTask(Req("pod"), WorkloadSpec("pod")).code(), Code::kAlreadyExists);
  ASSERT_TRUE(pod_->CreateTask(Req("w1"), WorkloadSpec("pod")).ok());
  EXPECT_EQ(pod_->CreateTask(Req("w1"), WorkloadSpec("pod")).code(), Code::kAlreadyExists);
}

TEST_F(PodTest, CreateTask_WrongAnnotations_FailedPrecondition) {
  StartSandbox();
  EXPECT_EQ(pod_->CreateTask(Req("w1"), WorkloadSpec("other")).code(), Code::kFailedPrecondition);
  EXPECT_EQ(pod_->CreateTask(Req("w1"), oci::Spec::Parse("{}").value()).code(),
            Code::kFailedPrecondition);
}

TEST_F(PodTest, GetAndListTasks_SandboxFirst) {
  StartSandbox();
  ASSERT_TRUE(pod_->CreateTask(Req("w1"), WorkloadSpec("pod")).ok());
  ASSERT_TRUE(pod_->CreateTask(Req("w2"), WorkloadSpec("pod")).ok());
  EXPECT_EQ(pod_->GetTask("nope").status().code(), Code::kNotFound);
  EXPECT_EQ((*pod_->GetTask("w2"))->id(), "w2");
  auto all = pod_->ListTasks();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0]->id(), "pod");
}

TEST_F(PodTest, KillTask_Errors) {
  StartSandbox();
  EXPECT_EQ(pod_->KillTask("nope", "", 9, false).code(), Code::kNotFound);
  EXPECT_EQ(pod_->KillTask("pod", "e1", 9, true).code(), Code::kFailedPrecondition);
}

TEST_F(PodTest, KillTask_AllOnSandbox_KillsEveryWorkloadAndTheSandbox) {
  StartSandbox();
  ASSERT_TRUE(pod_->CreateTask(Req("w1"), WorkloadSpec("pod")).ok());
  ASSERT_TRUE(pod_->CreateTask(Req("w2"), WorkloadSpec("pod")).ok());
  ASSERT_TRUE(pod_->KillTask("pod", "", 9, true).ok());
  for (const char* id : {"w1", "w2", "pod"}) {
    auto st = (*pod_->GetTask(id))->Wait(std::chrono::steady_clock::now() + 5s);
    ASSERT_TRUE(st.ok()) << id;
    EXPECT_EQ(st->state, exec::State::kExited);
  }
}

TEST_F(PodTest, DeleteTask_RunningRefusedExitedRemovedSandboxKept) {
  StartSandbox();
  ASSERT_TRUE(pod_->CreateTask(Req("w1"), WorkloadSpec("pod")).ok());
  EXPECT_EQ(pod_->DeleteTask("w1").code(), Code::kFailedPrecondition);
  ASSERT_TRUE(pod_->KillTask("w1", "", 9, false).ok());
  ASSERT_TRUE((*pod_->GetTask("w1"))->Wait(std::chrono::steady_clock::now() + 5s).ok());
  ASSERT_TRUE(pod_->DeleteTask("w1").ok());
  EXPECT_EQ(pod_->GetTask("w1").status().code(), Code::kNotFound);
  EXPECT_EQ(pod_->DeleteTask("pod").code(), Code::kFailedPrecondition);
  ASSERT_TRUE(pod_->KillTask("pod", "", 9, false).ok());
  ASSERT_TRUE(sandbox_->Wait(std::chrono::steady_clock::now() + 5s).ok());
  ASSERT_TRUE(pod_->DeleteTask("pod").ok());
  EXPECT_TRUE(pod_->GetTask("pod").ok());
}

}  // namespace
}  // namespace runhcs::pod
