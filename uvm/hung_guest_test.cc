// TerminateIfGuestHung against a fake VM whose fake agent answers Ping, or
// never does.
#include "uvm/hung_guest.h"

#include <gtest/gtest.h>

#include "base/latch.h"
#include "ttrpc/server.h"
#include "uvm/fake_utility_vm.h"

namespace runhcs::uvm {
namespace {

using namespace std::chrono_literals;

class FakeAgent : public apb::AgentServer {
 public:
  explicit FakeAgent(bool answers) : answers_(answers) { client_ = ServeFakeAgent(&server_, this); }
  ~FakeAgent() override {
    gone_.Open();
    server_.Shutdown(500ms);
  }
  Status Ping(const ttrpc::CallContext&, const apb::PingRequest&, apb::PingResponse*) override {
    if (!answers_) gone_.Wait(std::nullopt);
    return OkStatus();
  }
  std::shared_ptr<AgentClient> client() { return client_; }

 private:
  const bool answers_;
  Latch gone_;
  ttrpc::Server server_;
  std::shared_ptr<AgentClient> client_;
};

TEST(HungGuestTest, ASilentGuestThatMissesAPingToo_LosesItsVmAndTheKillIsDone) {
  FakeUtilityVm vm;
  ASSERT_TRUE(vm.Start().ok());
  FakeAgent agent(/*answers=*/false);
  vm.set_agent(agent.client());
  Status st = TerminateIfGuestHung(
      &vm, DeadlineExceededError("ttrpc: runhcs.agent.v1.Agent/SignalProcess timed out"), "c1/e1",
      100ms);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_NE(vm.terminated().find("the SIGKILL of c1/e1"), std::string::npos) << vm.terminated();
  EXPECT_NE(vm.terminated().find("SignalProcess timed out"), std::string::npos);
  // Whoever waits on the VM learns it went, and why.
  Status gone = vm.Wait();
  EXPECT_EQ(gone.code(), Code::kUnavailable);
  EXPECT_NE(gone.message().find("nor a ping"), std::string::npos) << gone.ToString();
}

TEST(HungGuestTest, AGuestThatStillAnswersKeepsItsVmAndTheKillsError) {
  FakeUtilityVm vm;
  ASSERT_TRUE(vm.Start().ok());
  FakeAgent agent(/*answers=*/true);
  vm.set_agent(agent.client());
  Status st = TerminateIfGuestHung(&vm, DeadlineExceededError("slow"), "c1", 2s);
  EXPECT_EQ(st.code(), Code::kDeadlineExceeded);
  EXPECT_EQ(vm.terminated(), "");
}

TEST(HungGuestTest, OnlyAnUnansweredKillCounts) {
  FakeUtilityVm vm;
  ASSERT_TRUE(vm.Start().ok());
  FakeAgent agent(/*answers=*/false);
  vm.set_agent(agent.client());
  // A kill that worked, or that the guest refused, says nothing of a hang:
  // no Ping is made (it would take the probe's 100 ms and find it silent).
  EXPECT_TRUE(TerminateIfGuestHung(&vm, OkStatus(), "c1", 100ms).ok());
  EXPECT_EQ(TerminateIfGuestHung(&vm, NotFoundError("no such process"), "c1", 100ms).code(),
            Code::kNotFound);
  EXPECT_EQ(vm.terminated(), "");
  // A VM already gone has no agent to ask: its processes exit with it.
  vm.Crash();
  EXPECT_EQ(TerminateIfGuestHung(&vm, UnavailableError("vm is gone"), "c1", 100ms).code(),
            Code::kUnavailable);
  EXPECT_EQ(vm.terminated(), "");
}

}  // namespace
}  // namespace runhcs::uvm
