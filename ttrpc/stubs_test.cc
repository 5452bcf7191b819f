// The generated stubs (protoc-gen-ttrpc-cpp) end to end: a server base with
// one virtual method per RPC, the free Register function, typed clients with
// default and per-call options, and an async method.
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include "base/thread_annotations.h"
#include "containerd/task/v2/shim.ttrpc.h"
#include "runhcs/agent.ttrpc.h"

namespace runhcs::ttrpc {
namespace {

namespace v2 = ::containerd::task::v2;
using namespace std::chrono_literals;

// Serves State itself and Wait asynchronously: each Wait is held until
// Release answers it from another thread. Every other RPC is the base's.
class PartialTask : public v2::TaskServer {
 public:
  Status State(const CallContext& ctx, const v2::StateRequest& req,
               v2::StateResponse* resp) override {
    resp->set_id(req.id());
    resp->set_bundle(ctx.deadline ? "deadline" : "none");
    return OkStatus();
  }
  void Wait(const CallContext&, const v2::WaitRequest& req,
            TypedResponder<v2::WaitResponse> responder) override {
    MutexLock l(&mu_);
    held_.emplace_back(req.id(), std::move(responder));
  }
  size_t held() {
    MutexLock l(&mu_);
    return held_.size();
  }
  void Release() {
    std::vector<std::pair<std::string, TypedResponder<v2::WaitResponse>>> held;
    {
      MutexLock l(&mu_);
      held.swap(held_);
    }
    for (auto& [id, r] : held) {
      if (id == "bad") {
        r.Fail(NotFoundError("no task {}", id));
        continue;
      }
      v2::WaitResponse resp;
      resp.set_exit_status(static_cast<uint32_t>(id.size()));
      r.Send(resp);
    }
  }

 private:
  Mutex mu_;
  std::vector<std::pair<std::string, TypedResponder<v2::WaitResponse>>> held_ GUARDED_BY(mu_);
};

class StubsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    v2::RegisterTaskServer(&server_, &impl_);
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    server_.ServeConnection(UniqueFd(sv[0]));
    channel_ = std::make_unique<Client>(UniqueFd(sv[1]));
  }
  void TearDown() override {
    channel_->Close();
    server_.Shutdown(std::chrono::milliseconds(500));
  }

  PartialTask impl_;
  Server server_;
  std::unique_ptr<Client> channel_;
};

TEST_F(StubsTest, ServiceNameIsTheProtoFullName) {
  EXPECT_EQ(v2::TaskServer::kServiceName, "containerd.task.v2.Task");
  EXPECT_EQ(v2::TaskClient::kServiceName, "containerd.task.v2.Task");
  EXPECT_EQ(::runhcs::agent::v1::AgentClient::kServiceName, "runhcs.agent.v1.Agent");
}

TEST_F(StubsTest, OverriddenMethodAnswersWithItsResponse) {
  v2::TaskClient task(channel_.get());
  v2::StateRequest req;
  req.set_id("c1");
  v2::StateResponse resp;
  ASSERT_TRUE(task.State(req, &resp).ok());
  EXPECT_EQ(resp.id(), "c1");
  EXPECT_EQ(resp.bundle(), "none");  // no timeout, no deadline
}

TEST_F(StubsTest, DefaultOptionsApplyAndPerCallOptionsOverrideThem) {
  v2::TaskClient task(channel_.get(), CallOptions{.timeout = 5s});
  v2::StateRequest req;
  v2::StateResponse resp;
  ASSERT_TRUE(task.State(req, &resp).ok());
  EXPECT_EQ(resp.bundle(), "deadline");
  ASSERT_TRUE(task.State(req, &resp, CallOptions{}).ok());
  EXPECT_EQ(resp.bundle(), "none");
}

TEST_F(StubsTest, MethodNotOverriddenIsNotImplementedByName) {
  v2::TaskClient task(channel_.get());
  v2::PidsResponse resp;
  Status st = task.Pids(v2::PidsRequest(), &resp);
  EXPECT_EQ(st.code(), Code::kNotImplemented);
  EXPECT_NE(st.message().find("Pids"), std::string::npos) << st.ToString();
}

TEST_F(StubsTest, AsyncMethodHoldsNoWorkerAndAnswersLater) {
  v2::TaskClient task(channel_.get());
  constexpr int kWaits = 64;  // more than a connection's running handlers
  std::vector<std::thread> waiters;
  std::vector<uint32_t> codes(kWaits, 999);
  for (int i = 0; i < kWaits; ++i) {
    waiters.emplace_back([&, i] {
      v2::WaitRequest w;
      w.set_id(std::string(static_cast<size_t>(i + 1), 'x'));
      v2::WaitResponse wr;
      if (task.Wait(w, &wr).ok()) codes[i] = wr.exit_status();
    });
  }
  for (int i = 0; i < 500 && impl_.held() < kWaits; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(impl_.held(), static_cast<size_t>(kWaits));
  // Plain calls still get through while every Wait is open.
  v2::StateResponse resp;
  ASSERT_TRUE(task.State(v2::StateRequest(), &resp).ok());
  impl_.Release();
  for (auto& t : waiters) t.join();
  for (int i = 0; i < kWaits; ++i) EXPECT_EQ(codes[i], static_cast<uint32_t>(i + 1)) << i;
}

TEST_F(StubsTest, AsyncMethodErrorsAndDeadlinesReachTheCaller) {
  v2::TaskClient task(channel_.get());
  v2::WaitRequest w;
  w.set_id("bad");
  std::thread releaser([&] {
    for (int i = 0; i < 500 && impl_.held() == 0; ++i) std::this_thread::sleep_for(10ms);
    impl_.Release();
  });
  v2::WaitResponse wr;
  EXPECT_EQ(task.Wait(w, &wr).code(), Code::kNotFound);
  releaser.join();
  w.set_id("never");
  EXPECT_EQ(task.Wait(w, &wr, CallOptions{.timeout = 100ms}).code(), Code::kDeadlineExceeded);
}

TEST_F(StubsTest, AsyncClientCallsHoldNoThreadAndEachCompletesOnce) {
  v2::TaskClient task(channel_.get());
  constexpr int kCalls = 64;
  Mutex mu;
  CondVar cv;
  std::vector<int> completions(kCalls, 0);
  std::vector<uint32_t> codes(kCalls, 999);
  int done = 0;
  auto threads_before = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/task"),
                         std::filesystem::directory_iterator());
  };
  auto before = threads_before();
  for (int i = 0; i < kCalls; ++i) {
    v2::WaitRequest w;
    w.set_id(std::string(static_cast<size_t>(i + 1), 'x'));
    task.WaitAsync(w, [&, i](Status st, v2::WaitResponse wr) {
      MutexLock l(&mu);
      ++completions[i];
      if (st.ok()) codes[i] = wr.exit_status();
      ++done;
      cv.SignalAll();
    });
  }
  for (int i = 0; i < 500 && impl_.held() < kCalls; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(impl_.held(), static_cast<size_t>(kCalls));
  // Waiting, the calls hold no thread of the caller's.
  EXPECT_EQ(threads_before(), before);
  impl_.Release();
  {
    MutexLock l(&mu);
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (done < kCalls && cv.WaitUntil(&mu, deadline)) {
    }
    ASSERT_EQ(done, kCalls);
  }
  std::this_thread::sleep_for(20ms);
  MutexLock l(&mu);
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(completions[i], 1) << i;
    EXPECT_EQ(codes[i], static_cast<uint32_t>(i + 1)) << i;
  }
}

TEST_F(StubsTest, AsyncClientCallsFailUnavailableWhenTheConnectionCloses) {
  v2::TaskClient task(channel_.get());
  Mutex mu;
  std::vector<Code> results;
  for (int i = 0; i < 3; ++i) {
    v2::WaitRequest w;
    w.set_id("held");
    task.WaitAsync(w, [&](Status st, v2::WaitResponse) {
      MutexLock l(&mu);
      results.push_back(st.code());
    });
  }
  for (int i = 0; i < 500 && impl_.held() < 3; ++i) std::this_thread::sleep_for(10ms);
  channel_->Close();
  // After the close, a new call fails at once, on this thread.
  bool inline_failed = false;
  task.StateAsync(v2::StateRequest(), [&](Status st, v2::StateResponse) {
    inline_failed = st.code() == Code::kUnavailable;
  });
  EXPECT_TRUE(inline_failed);
  MutexLock l(&mu);
  ASSERT_EQ(results.size(), 3u);
  for (Code c : results) EXPECT_EQ(c, Code::kUnavailable);
}

}  // namespace
}  // namespace runhcs::ttrpc
