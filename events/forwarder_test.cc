#include "events/forwarder.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include "runhcs/wkt/empty.pb.h"

#include <atomic>

#include "containerd/events/task.pb.h"
#include "ttrpc/server.h"

namespace runhcs::events {
namespace {

using containerd::services::events::ttrpc::v1::ForwardRequest;
using namespace std::chrono_literals;

// A stand-in for containerd's TTRPC events endpoint that records envelopes
// and fails the first `fail_first` calls.
class FakeEventsServer : public containerd::services::events::ttrpc::v1::EventsServer {
 public:
  explicit FakeEventsServer(std::string path, int fail_first = 0)
      : path_(std::move(path)), fail_left_(fail_first) {
    RegisterEventsServer(&server_, this);
    ::unlink(path_.c_str());
    auto fd = ListenUnix({path_, false});
    EXPECT_TRUE(fd.ok());
    server_.ServeListener(std::move(fd).value());
  }
  Status Forward(const ttrpc::CallContext& ctx, const ForwardRequest& req,
                 runhcs::wkt::Empty*) override {
    if (fail_left_.fetch_sub(1) > 0) return UnavailableError("not yet");
    MutexLock l(&mu_);
    got_.push_back(req);
    md_ns_ = ctx.Metadata("containerd-namespace-ttrpc");
    return OkStatus();
  }
  ~FakeEventsServer() {
    server_.Shutdown();
    ::unlink(path_.c_str());
  }
  std::vector<ForwardRequest> got() {
    MutexLock l(&mu_);
    return got_;
  }
  std::string md_ns() {
    MutexLock l(&mu_);
    return md_ns_;
  }

 private:
  std::string path_;
  std::atomic<int> fail_left_;
  ttrpc::Server server_;
  Mutex mu_;
  std::vector<ForwardRequest> got_ GUARDED_BY(mu_);
  std::string md_ns_ GUARDED_BY(mu_);
};

std::string SockPath(const char* name) { return ::testing::TempDir() + "/" + name + ".sock"; }

containerd::events::TaskExit Exit(const std::string& id, uint32_t status) {
  containerd::events::TaskExit e;
  e.set_container_id("c1");
  e.set_id(id);
  e.set_exit_status(status);
  return e;
}

TEST(Events, TopicsAndBareTypeUrls) {
  EXPECT_EQ(TopicFor(containerd::events::TaskExit()), "/tasks/exit");
  EXPECT_EQ(TopicFor(containerd::events::TaskExecStarted()), "/tasks/exec-started");
  EXPECT_EQ(TopicFor(containerd::events::TaskCreate()), "/tasks/create");
  EXPECT_EQ(TopicFor(runhcs::wkt::Empty()), "");
  EXPECT_EQ(PackBare(Exit("x", 1)).type_url(), "containerd.events.TaskExit");
}

TEST(Forwarder, SendsEnvelopesInOrderWithNamespaceTimestampAndTopic) {
  std::string path = SockPath("fwd1");
  FakeEventsServer server(path);
  Forwarder fwd({.address = "unix://" + path, .ns = "ns1"});
  for (uint32_t i = 0; i < 20; ++i) fwd.Publish(Exit("e" + std::to_string(i), i));
  ASSERT_TRUE(fwd.Flush(5s));
  auto got = server.got();
  ASSERT_EQ(got.size(), 20u);
  for (uint32_t i = 0; i < 20; ++i) {
    const auto& env = got[i].envelope();
    EXPECT_EQ(env.namespace_(), "ns1");
    EXPECT_EQ(env.topic(), "/tasks/exit");
    EXPECT_GT(env.timestamp().seconds(), 1600000000);
    EXPECT_EQ(env.event().type_url(), "containerd.events.TaskExit");
    containerd::events::TaskExit e;
    ASSERT_TRUE(e.ParseFromString(env.event().value()));
    EXPECT_EQ(e.exit_status(), i);
  }
  EXPECT_EQ(server.md_ns(), "ns1");
  EXPECT_EQ(fwd.sent(), 20u);
}

TEST(Forwarder, RetriesInPlaceKeepingOrder) {
  std::string path = SockPath("fwd2");
  FakeEventsServer server(path, /*fail_first=*/2);
  Forwarder fwd({.address = path, .ns = "ns", .backoff = 10ms});
  fwd.Publish(Exit("a", 1));
  fwd.Publish(Exit("b", 2));
  ASSERT_TRUE(fwd.Flush(5s));
  auto got = server.got();
  ASSERT_EQ(got.size(), 2u);
  containerd::events::TaskExit e;
  ASSERT_TRUE(e.ParseFromString(got[0].envelope().event().value()));
  EXPECT_EQ(e.id(), "a");
  EXPECT_EQ(fwd.dropped(), 0u);
}

TEST(Forwarder, GivesUpAfterBoundedAttemptsAndReconnectsLater) {
  std::string path = SockPath("fwd3");
  ::unlink(path.c_str());
  Forwarder fwd({.address = path, .ns = "ns", .max_attempts = 3, .backoff = 5ms});
  fwd.Publish(Exit("lost", 1));
  ASSERT_TRUE(fwd.Flush(5s));
  EXPECT_EQ(fwd.dropped(), 1u);
  // containerd comes (back) up: later events get through on a new connection.
  FakeEventsServer server(path);
  fwd.Publish(Exit("found", 2));
  ASSERT_TRUE(fwd.Flush(5s));
  ASSERT_EQ(server.got().size(), 1u);
}

TEST(Forwarder, BoundedQueueDropsWhenFull) {
  std::string path = SockPath("fwd4");
  ::unlink(path.c_str());
  Forwarder fwd({.address = path,
                 .ns = "ns",
                 .queue_limit = 2,
                 .max_attempts = 1,
                 .backoff = 1ms,
                 .flush_timeout = 2s});
  for (int i = 0; i < 50; ++i) fwd.Publish(Exit("x", 0));
  ASSERT_TRUE(fwd.Flush(5s));
  EXPECT_EQ(fwd.dropped(), 50u);  // some overflowed, the rest failed to send
  EXPECT_EQ(fwd.sent(), 0u);
}

}  // namespace
}  // namespace runhcs::events
