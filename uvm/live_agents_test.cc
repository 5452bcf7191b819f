// The live-agent list against fake agents: TTRPC servers answering
// DumpStacks (one of them never does).
#include "uvm/live_agents.h"

#include <gtest/gtest.h>

#include "base/latch.h"
#include "ttrpc/server.h"
#include "uvm/fake_utility_vm.h"

namespace runhcs::uvm {
namespace {

using namespace std::chrono_literals;

class FakeAgent : public apb::AgentServer {
 public:
  // `stacks` empty: DumpStacks never answers (until the agent goes).
  explicit FakeAgent(std::string stacks) : stacks_(std::move(stacks)) {
    client_ = ServeFakeAgent(&server_, this);
  }
  ~FakeAgent() override {
    gone_.Open();
    server_.Shutdown(500ms);
  }
  Status DumpStacks(const ttrpc::CallContext&, const apb::Empty&,
                    apb::DumpStacksResponse* r) override {
    if (stacks_.empty()) gone_.Wait(std::nullopt);
    r->set_stacks(stacks_);
    return OkStatus();
  }
  std::shared_ptr<AgentClient>& client() { return client_; }

 private:
  std::string stacks_;
  Latch gone_;
  ttrpc::Server server_;
  std::shared_ptr<AgentClient> client_;
};

TEST(LiveAgentsTest, ListsEachAnsweringVmAndSaysWhichDidNotAnswer) {
  EXPECT_EQ(DumpLiveGuestStacks(), "");
  FakeAgent a("pid 1 init\n");
  FakeAgent hung("");
  ListLiveAgent("vm-a", a.client());
  ListLiveAgent("vm-a", a.client());  // idempotent
  ListLiveAgent("vm-hung", hung.client());
  std::string out = DumpLiveGuestStacks(200ms);
  EXPECT_EQ(out.find("vm vm-a:\npid 1 init\n"), 0u) << out;
  EXPECT_EQ(out.find("vm vm-a:", 1), std::string::npos) << out;  // listed once
  EXPECT_NE(out.find("vm vm-hung:\n  the guest did not answer: DeadlineExceeded"),
            std::string::npos)
      << out;

  // A VM that let its agent go, or whose client closed, is no longer listed.
  hung.client()->Close();
  a.client().reset();
  EXPECT_EQ(DumpLiveGuestStacks(200ms), "");
}

}  // namespace
}  // namespace runhcs::uvm
