// OomRelay against a fake agent: a TTRPC server answering WaitOom.
#include "vmtask/oom_relay.h"

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "containerd/events/task.pb.h"
#include "runhcs/agent.pb.h"
#include "ttrpc/client.h"
#include "ttrpc/server.h"
#include "uvm/fake_utility_vm.h"

namespace runhcs::vmtask {
namespace {

namespace apb = runhcs::agent::v1;
using namespace std::chrono_literals;

class RecordingPublisher : public events::Publisher {
 public:
  void Publish(const google::protobuf::MessageLite& ev) override {
    MutexLock l(&mu_);
    if (dynamic_cast<const containerd::events::TaskOOM*>(&ev)) ++ooms_;
  }
  int ooms() {
    MutexLock l(&mu_);
    return ooms_;
  }

 private:
  Mutex mu_;
  int ooms_ GUARDED_BY(mu_) = 0;
};

// The agent's side: `pending` OOM kills not yet taken, `total` ever.
class FakeAgent : public apb::AgentServer {
 public:
  FakeAgent() { client_ = uvm::ServeFakeAgent(&server_, this); }
  Status WaitOom(const ttrpc::CallContext&, const apb::WaitOomRequest& req,
                 apb::WaitOomResponse* r) override {
    if (req.container_id() != "c1") return NotFoundError("no container");
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(req.timeout_ms());
    MutexLock l(&mu_);
    ++calls_;
    while (pending_ == 0 && !ended_) {
      if (!cv_.WaitUntil(&mu_, until)) break;
    }
    r->set_taken(std::exchange(pending_, 0));
    r->set_total(total_);
    r->set_ended(ended_);
    return OkStatus();
  }
  ~FakeAgent() { server_.Shutdown(std::chrono::milliseconds(500)); }
  void Oom(int n, bool wake) {
    MutexLock l(&mu_);
    pending_ += n;
    total_ += n;
    if (wake) cv_.SignalAll();
  }
  void End() {
    MutexLock l(&mu_);
    ended_ = true;
    cv_.SignalAll();
  }
  int calls() {
    MutexLock l(&mu_);
    return calls_;
  }
  std::shared_ptr<uvm::AgentClient> client() { return client_; }

 private:
  ttrpc::Server server_;
  std::shared_ptr<uvm::AgentClient> client_;
  Mutex mu_;
  CondVar cv_;
  uint32_t pending_ GUARDED_BY(mu_) = 0;
  uint64_t total_ GUARDED_BY(mu_) = 0;
  bool ended_ GUARDED_BY(mu_) = false;
  int calls_ GUARDED_BY(mu_) = 0;
};

TEST(OomRelayTest, PublishesOneTaskOomPerKillAsTheyCome) {
  FakeAgent agent;
  RecordingPublisher pub;
  OomRelay relay(agent.client(), "c1", &pub);
  relay.Start();
  agent.Oom(2, /*wake=*/true);
  for (int i = 0; i < 200 && pub.ooms() < 2; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(pub.ooms(), 2);
  agent.End();
}

TEST(OomRelayTest, FlushPublishesWhatIsPendingBeforeReturning) {
  FakeAgent agent;
  RecordingPublisher pub;
  OomRelay relay(agent.client(), "c1", &pub);
  relay.Start();
  while (agent.calls() == 0) std::this_thread::sleep_for(1ms);
  agent.Oom(1, /*wake=*/false);  // the long poll does not see it
  relay.Flush();
  EXPECT_EQ(pub.ooms(), 1);  // before Flush returned: before TaskExit
  agent.End();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(pub.ooms(), 1);  // and only once
}

TEST(OomRelayTest, AnUnknownContainerEndsTheRelayQuietly) {
  FakeAgent agent;
  RecordingPublisher pub;
  {
    OomRelay relay(agent.client(), "other", &pub);
    relay.Start();
    relay.Flush();
  }  // joins at once: the poll was answered NotFound
  EXPECT_EQ(pub.ooms(), 0);
}

}  // namespace
}  // namespace runhcs::vmtask
