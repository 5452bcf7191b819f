#include "ttrpc/server.h"

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>
#include <set>
#include <thread>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "containerd/task/v2/shim.pb.h"
#include "google/rpc/status.pb.h"
#include "ttrpc/client.h"
#include "ttrpc/frame.h"
#include "ttrpc/ttrpc.pb.h"

namespace runhcs::ttrpc {
namespace {

using containerd::task::v2::StateRequest;
using containerd::task::v2::StateResponse;
using namespace std::chrono_literals;

constexpr char kSvc[] = "containerd.task.v2.Task";

// A server with: State (echoes the id into bundle), Slow (blocks until
// released or its deadline), Meta (echoes a metadata value).
class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Register<StateRequest, StateResponse>(
        kSvc, "State", [](const CallContext&, const StateRequest& req, StateResponse* resp) {
          if (req.id() == "missing") return NotFoundError("task {}", req.id());
          resp->set_id(req.id());
          resp->set_bundle("bundle-" + req.id());
          return OkStatus();
        });
    server_.Register<StateRequest, StateResponse>(
        kSvc, "Slow", [this](const CallContext& ctx, const StateRequest& req, StateResponse* resp) {
          MutexLock l(&mu_);
          while (!released_) {
            if (ctx.deadline) {
              if (!cv_.WaitUntil(&mu_, *ctx.deadline) && !released_) {
                return DeadlineExceededError("slow handler");
              }
            } else {
              cv_.Wait(&mu_);
            }
          }
          resp->set_id(req.id());
          return OkStatus();
        });
    server_.Register<StateRequest, StateResponse>(
        kSvc, "Meta", [](const CallContext& ctx, const StateRequest&, StateResponse* resp) {
          resp->set_id(ctx.Metadata("containerd-namespace-ttrpc"));
          return OkStatus();
        });
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    server_.ServeConnection(UniqueFd(sv[0]));
    raw_.reset(sv[1]);
  }
  // The server answers a call at its deadline while its handler may still
  // be running: let every handler finish before the fixture's lock goes.
  void TearDown() override {
    Release();
    server_.Shutdown(std::chrono::milliseconds(2000));
  }
  void Release() {
    MutexLock l(&mu_);
    released_ = true;
    cv_.SignalAll();
  }
  // Sends a raw frame and reads one response frame from the raw socket.
  ::ttrpc::Response RawCall(uint32_t sid, const std::string& payload, uint8_t type = 1) {
    EXPECT_TRUE(WriteFrame(raw_.get(), sid, static_cast<FrameType>(type), 0, payload).ok());
    Frame f;
    EXPECT_TRUE(ReadFrame(raw_.get(), &f).ok());
    EXPECT_EQ(f.header.stream_id, sid);
    EXPECT_EQ(f.header.type, 2);
    ::ttrpc::Response r;
    EXPECT_TRUE(r.ParseFromString(f.payload));
    return r;
  }
  std::string RequestBytes(const std::string& method, const std::string& payload) {
    ::ttrpc::Request r;
    r.set_service(kSvc);
    r.set_method(method);
    r.set_payload(payload);
    return r.SerializeAsString();
  }

  Server server_;
  UniqueFd raw_;
  Mutex mu_;
  CondVar cv_;
  bool released_ GUARDED_BY(mu_) = false;
};

TEST_F(ServerTest, SuccessOmitsStatus) {
  StateRequest req;
  req.set_id("c1");
  ::ttrpc::Response r = RawCall(1, RequestBytes("State", req.SerializeAsString()));
  EXPECT_FALSE(r.has_status());
  StateResponse resp;
  ASSERT_TRUE(resp.ParseFromString(r.payload()));
  EXPECT_EQ(resp.bundle(), "bundle-c1");
}

TEST_F(ServerTest, HandlerErrorCarriesErrdefsCodeAndMessage) {
  StateRequest req;
  req.set_id("missing");
  ::ttrpc::Response r = RawCall(1, RequestBytes("State", req.SerializeAsString()));
  EXPECT_EQ(r.status().code(), 5);
  EXPECT_EQ(r.status().message(), "task missing: not found");
}

TEST_F(ServerTest, UnknownServiceAndMethodAreUnimplemented) {
  ::ttrpc::Request r;
  r.set_service("no.such.Service");
  r.set_method("X");
  ::ttrpc::Response resp = RawCall(1, r.SerializeAsString());
  EXPECT_EQ(resp.status().code(), 12);
  EXPECT_EQ(resp.status().message(), "service no.such.Service: not implemented");
  resp = RawCall(3, RequestBytes("Bogus", ""));
  EXPECT_EQ(resp.status().code(), 12);
  EXPECT_EQ(resp.status().message(), "method Bogus: not implemented");
}

TEST_F(ServerTest, UndecodablePayloadIsInternalWithClearMessage) {
  ::ttrpc::Response r = RawCall(1, RequestBytes("State", std::string("\xff\xff\xff\xff", 4)));
  EXPECT_EQ(r.status().code(), 13);
  EXPECT_NE(r.status().message().find("error unmarshalling payload"), std::string::npos);
}

TEST_F(ServerTest, MalformedRequestFrameAndEvenStreamIdAreRejected) {
  ::ttrpc::Response r = RawCall(1, std::string("\xff\xff\xff", 3));
  EXPECT_EQ(r.status().code(), 3);
  r = RawCall(2, RequestBytes("State", ""));
  EXPECT_EQ(r.status().code(), 3);
  EXPECT_NE(r.status().message().find("StreamID must be odd"), std::string::npos);
  // Still usable afterwards.
  r = RawCall(5, RequestBytes("State", ""));
  EXPECT_FALSE(r.has_status());
}

TEST_F(ServerTest, NonRequestFramesAreIgnored) {
  ASSERT_TRUE(WriteFrame(raw_.get(), 1, FrameType::kData, 0, "junk").ok());
  ::ttrpc::Response r = RawCall(3, RequestBytes("State", ""));
  EXPECT_FALSE(r.has_status());
}

TEST_F(ServerTest, OversizedFrameGetsResourceExhaustedAndConnectionSurvives) {
  std::string big(kMaxMessageSize + 10, 'x');
  char hdr[kHeaderSize];
  EncodeHeader({static_cast<uint32_t>(big.size()), 7, 1, 0}, hdr);
  std::thread w(
      [&] { ASSERT_TRUE(WriteAll(raw_.get(), std::string(hdr, kHeaderSize) + big).ok()); });
  Frame f;
  ASSERT_TRUE(ReadFrame(raw_.get(), &f).ok());
  w.join();
  ::ttrpc::Response r;
  ASSERT_TRUE(r.ParseFromString(f.payload));
  EXPECT_EQ(f.header.stream_id, 7u);
  EXPECT_EQ(r.status().code(), 8);
  r = RawCall(9, RequestBytes("State", ""));
  EXPECT_FALSE(r.has_status());
}

TEST_F(ServerTest, TruncatedFrameClosesConnection) {
  char hdr[kHeaderSize];
  EncodeHeader({50, 1, 1, 0}, hdr);
  ASSERT_TRUE(WriteAll(raw_.get(), std::string(hdr, kHeaderSize) + "abc").ok());
  ::shutdown(raw_.get(), SHUT_WR);
  char c;
  EXPECT_EQ(::read(raw_.get(), &c, 1), 0);  // server closed its side
}

TEST_F(ServerTest, SlowHandlerDoesNotStallOtherCallsAndResponsesInterleave) {
  Client client(std::move(raw_));
  StateRequest req;
  req.set_id("slow");
  auto slow = std::async(std::launch::async, [&] {
    StateResponse resp;
    Status st = client.Call(kSvc, "Slow", req, &resp);
    return std::make_pair(st, resp.id());
  });
  // Many quick calls complete while Slow is blocked.
  for (int i = 0; i < 20; ++i) {
    StateRequest q;
    q.set_id(std::to_string(i));
    StateResponse resp;
    ASSERT_TRUE(client.Call(kSvc, "State", q, &resp).ok());
    EXPECT_EQ(resp.bundle(), "bundle-" + std::to_string(i));
  }
  EXPECT_EQ(slow.wait_for(50ms), std::future_status::timeout);
  Release();
  auto [st, id] = slow.get();
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(id, "slow");
}

TEST_F(ServerTest, ConcurrentCallersEachGetTheirOwnResponse) {
  Client client(std::move(raw_));
  std::vector<std::thread> ts;
  std::atomic<int> good{0};
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        StateRequest q;
        q.set_id(fmt::format("{}-{}", t, i));
        StateResponse resp;
        if (client.Call(kSvc, "State", q, &resp).ok() && resp.bundle() == "bundle-" + q.id()) {
          ++good;
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(good.load(), 400);
}

TEST_F(ServerTest, TimeoutNanoBecomesHandlerDeadline) {
  ::ttrpc::Request r;
  r.set_service(kSvc);
  r.set_method("Slow");
  r.set_timeout_nano(std::chrono::nanoseconds(100ms).count());
  auto start = Clock::now();
  ::ttrpc::Response resp = RawCall(1, r.SerializeAsString());
  EXPECT_EQ(resp.status().code(), 4);
  EXPECT_GE(Clock::now() - start, 100ms);
  EXPECT_LT(Clock::now() - start, 5s);
}

// At debug level each call is logged when it arrives and when it is
// answered (with its status), so a call that never returns is the one
// without its second line. Above debug nothing is logged.
TEST_F(ServerTest, DebugLogNamesEachCallWhenReceivedAndWhenAnswered) {
  std::ostringstream captured;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(captured));
  spdlog::set_default_logger(logger);
  StateRequest req;
  req.set_id("missing");
  logger->set_level(spdlog::level::info);
  RawCall(1, RequestBytes("State", req.SerializeAsString()));
  logger->set_level(spdlog::level::debug);
  RawCall(3, RequestBytes("State", req.SerializeAsString()));
  logger->flush();
  spdlog::set_default_logger(previous);
  const std::string log = captured.str();
  EXPECT_EQ(log.find("stream 1 "), std::string::npos) << log;
  EXPECT_NE(log.find("ttrpc: containerd.task.v2.Task/State stream 3 received"), std::string::npos)
      << log;
  EXPECT_NE(log.find("ttrpc: containerd.task.v2.Task/State stream 3 answered in "),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("NotFound: task missing"), std::string::npos) << log;
}

TEST_F(ServerTest, MetadataReachesHandler) {
  Client client(std::move(raw_));
  StateRequest req;
  StateResponse resp;
  CallOptions opts;
  opts.metadata = {{"containerd-namespace-ttrpc", "ns1"}};
  ASSERT_TRUE(client.Call(kSvc, "Meta", req, &resp, opts).ok());
  EXPECT_EQ(resp.id(), "ns1");
}

TEST_F(ServerTest, ClientTimesOutLocallyAndConnectionCloseFailsPendingCalls) {
  auto client = std::make_unique<Client>(std::move(raw_));
  StateRequest req;
  CallOptions opts;
  opts.timeout = 50ms;
  // Slow honours the deadline too; whichever is first, the call fails with
  // DeadlineExceeded.
  EXPECT_EQ(client->Call(kSvc, "Slow", req, nullptr, opts).code(), Code::kDeadlineExceeded);
  auto pending =
      std::async(std::launch::async, [&] { return client->Call(kSvc, "Slow", req, nullptr); });
  std::this_thread::sleep_for(20ms);
  server_.Shutdown(200ms);
  EXPECT_EQ(pending.get().code(), Code::kUnavailable);
  EXPECT_TRUE(client->closed());
  EXPECT_EQ(client->Call(kSvc, "State", req, nullptr).code(), Code::kUnavailable);
  Release();
}

TEST(ServerPeerCred, OtherUidIsRefused) {
  ASSERT_EQ(::geteuid(), 0u) << "the test suite runs as root";
  std::string path = ::testing::TempDir() + "/peercred.sock";
  ::unlink(path.c_str());
  auto lfd = ListenUnix({path, false});
  ASSERT_TRUE(lfd.ok());
  ::chmod(path.c_str(), 0777);
  Server server;
  server.ServeListener(std::move(lfd).value());
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresuid(65534, 65534, 65534) != 0) ::_exit(2);
    auto c = ConnectUnix({path, false});
    if (!c.ok()) ::_exit(3);
    char b;
    // The server closes us without reading: EOF.
    ::_exit(::read(c->get(), &b, 1) == 0 ? 0 : 4);
  }
  int ws;
  ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
  EXPECT_TRUE(WIFEXITED(ws));
  EXPECT_EQ(WEXITSTATUS(ws), 0);
  // Same uid is served.
  auto c = ConnectUnix({path, false});
  ASSERT_TRUE(c.ok());
  Client client(std::move(c).value());
  Status st = client.Call(kSvc, "State", StateRequest(), nullptr);
  EXPECT_EQ(st.code(), Code::kNotImplemented);
  ::unlink(path.c_str());
}

TEST(ServerIdle, OnIdleRunsOnceTheLastWorkerLeavesForWantOfWork) {
  std::atomic<int> idle{0};
  Server::Options o;
  o.on_idle = [&] { ++idle; };
  Server server(o);
  server.Register<StateRequest, StateResponse>(
      kSvc, "State",
      [](const CallContext&, const StateRequest&, StateResponse*) { return OkStatus(); });
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  server.ServeConnection(UniqueFd(sv[0]));
  Client client{UniqueFd(sv[1])};
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client.Call(kSvc, "State", StateRequest(), nullptr).ok());
  EXPECT_EQ(idle.load(), 0);  // workers linger 2 s
  for (int i = 0; i < 60 && idle == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(idle.load(), 1);
  ASSERT_TRUE(client.Call(kSvc, "State", StateRequest(), nullptr).ok());  // busy, then quiet again
  for (int i = 0; i < 60 && idle == 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(idle.load(), 2);
  server.Shutdown(std::chrono::milliseconds(500));
}

// Threads of this process, from /proc.
int ThreadCount() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return -1;
}

// An async method whose calls are kept until Release: what Wait does.
class AsyncServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Server::Options o;
    o.max_running_per_connection = 4;
    o.max_pending_per_connection = 2000;
    server_ = std::make_unique<Server>(o);
    server_->RegisterAsyncRaw(kSvc, "Hold",
                              [this](const CallContext&, const std::string& in, Responder r) {
                                StateRequest req;
                                ASSERT_TRUE(req.ParseFromString(in));
                                MutexLock l(&mu_);
                                held_.emplace_back(req.id(), r);
                              });
    server_->Register<StateRequest, StateResponse>(
        kSvc, "Block", [this](const CallContext&, const StateRequest& req, StateResponse* resp) {
          MutexLock l(&mu_);
          ++blocked_;
          while (!released_) cv_.Wait(&mu_);
          resp->set_id(req.id());
          return OkStatus();
        });
    server_->Register<StateRequest, StateResponse>(
        kSvc, "State", [](const CallContext&, const StateRequest& req, StateResponse* resp) {
          resp->set_id(req.id());
          return OkStatus();
        });
  }
  void TearDown() override {
    {
      MutexLock l(&mu_);
      released_ = true;
      cv_.SignalAll();
    }
    server_->Shutdown(std::chrono::milliseconds(2000));
  }
  Client Connect() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    server_->ServeConnection(UniqueFd(sv[0]));
    return Client(UniqueFd(sv[1]));
  }
  size_t Held() {
    MutexLock l(&mu_);
    return held_.size();
  }
  static std::string Request(const std::string& method, const StateRequest& q) {
    ::ttrpc::Request r;
    r.set_service(kSvc);
    r.set_method(method);
    r.set_payload(q.SerializeAsString());
    return r.SerializeAsString();
  }
  void ReplyAll() {
    std::vector<std::pair<std::string, Responder>> held;
    {
      MutexLock l(&mu_);
      held.swap(held_);
    }
    for (auto& [id, r] : held) {
      StateResponse resp;
      resp.set_id(id);
      r.Send(resp);
    }
  }

  std::unique_ptr<Server> server_;
  Mutex mu_;
  CondVar cv_;
  std::vector<std::pair<std::string, Responder>> held_ GUARDED_BY(mu_);
  int blocked_ GUARDED_BY(mu_) = 0;
  bool released_ GUARDED_BY(mu_) = false;
};

TEST_F(AsyncServerTest, ThousandWaitingCallsHoldNoThreadAndAllGetTheirAnswer) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  server_->ServeConnection(UniqueFd(sv[0]));
  UniqueFd raw(sv[1]);
  int before = ThreadCount();
  for (uint32_t i = 0; i < 1000; ++i) {
    StateRequest q;
    q.set_id(std::to_string(i));
    ASSERT_TRUE(WriteFrame(raw.get(), 2 * i + 1, FrameType::kRequest, 0, Request("Hold", q)).ok());
  }
  for (int i = 0; i < 300 && Held() < 1000; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(Held(), 1000u);
  EXPECT_LE(ThreadCount(), before + 2);      // no thread per waiting call
  std::thread replier([&] { ReplyAll(); });  // the socket holds only so many answers
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    Frame f;
    ASSERT_TRUE(ReadFrame(raw.get(), &f).ok());
    ::ttrpc::Response r;
    ASSERT_TRUE(r.ParseFromString(f.payload));
    StateResponse resp;
    ASSERT_TRUE(resp.ParseFromString(r.payload()));
    EXPECT_EQ(resp.id(), std::to_string((f.header.stream_id - 1) / 2));
    ids.insert(resp.id());
  }
  replier.join();
  EXPECT_EQ(ids.size(), 1000u);  // each exactly once
}

TEST_F(AsyncServerTest, AbandonedCallsAreDoneAndTheirAnswersGoNowhere) {
  {
    Client c = Connect();
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([&] {
        for (int i = 0; i < 250; ++i) {
          StateRequest req;
          (void)c.Call(kSvc, "Hold", req, nullptr, {.timeout = std::chrono::nanoseconds(0)});
        }
      });
    }
    for (int i = 0; i < 300 && Held() < 4; ++i) std::this_thread::sleep_for(10ms);
    c.Close();  // the client goes away with its calls open
    for (auto& t : ts) t.join();
  }
  for (int i = 0; i < 200 && server_->connection_count() > 0; ++i)
    std::this_thread::sleep_for(10ms);
  MutexLock l(&mu_);
  ASSERT_FALSE(held_.empty());
  for (auto& [id, r] : held_) {
    EXPECT_TRUE(r.Done());
    EXPECT_FALSE(r.Reply(OkStatus()));
  }
}

TEST_F(AsyncServerTest, DeadlinePassingAnswersDeadlineExceededAndDropsTheLateAnswer) {
  Client c = Connect();
  auto t0 = Clock::now();
  Status st = c.Call(kSvc, "Hold", StateRequest(), nullptr, {.timeout = 200ms});
  EXPECT_EQ(st.code(), Code::kDeadlineExceeded);
  EXPECT_GE(Clock::now() - t0, 200ms);
  ASSERT_EQ(Held(), 1u);
  {
    MutexLock l(&mu_);
    for (int i = 0; i < 100 && !held_[0].second.Done(); ++i) {
      mu_.Unlock();
      std::this_thread::sleep_for(10ms);
      mu_.Lock();
    }
    EXPECT_TRUE(held_[0].second.Done());
    EXPECT_FALSE(held_[0].second.Reply(OkStatus()));
  }
  // A plain handler still running past its deadline: the server answers.
  auto raw = Connect();
  ::ttrpc::Request r;
  r.set_service(kSvc);
  r.set_method("Block");
  r.set_timeout_nano(std::chrono::nanoseconds(150ms).count());
  StateRequest q;
  r.set_payload(q.SerializeAsString());
  t0 = Clock::now();
  st = raw.Call(kSvc, "Block", q, nullptr, {.timeout = 150ms});
  EXPECT_EQ(st.code(), Code::kDeadlineExceeded);
  EXPECT_LT(Clock::now() - t0, 3s);
  {
    MutexLock l(&mu_);
    released_ = true;
    cv_.SignalAll();
  }
}

// containerd gives its calls deadlines of minutes: an answered call's
// deadline must not stay behind (it held the call's memory until then: ~0.9 KB
// per exec in a shim taking execs back to back).
TEST_F(AsyncServerTest, AnAnsweredCallLeavesNoDeadlineBehind) {
  Client c = Connect();
  for (int i = 0; i < 100; ++i) {
    StateRequest q;
    q.set_id(std::to_string(i));
    ASSERT_TRUE(c.Call(kSvc, "State", q, nullptr, {.timeout = 10min}).ok());
  }
  EXPECT_EQ(server_->pending_deadlines(), 0u);

  // An async call is tracked while it waits, not after its answer.
  auto held = std::async(std::launch::async, [&] {
    return c.Call(kSvc, "Hold", StateRequest(), nullptr, {.timeout = 10min});
  });
  for (int i = 0; i < 300 && Held() < 1; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(Held(), 1u);
  EXPECT_EQ(server_->pending_deadlines(), 1u);
  {
    MutexLock l(&mu_);
    EXPECT_TRUE(held_[0].second.Reply(OkStatus()));
  }
  EXPECT_TRUE(held.get().ok());
  EXPECT_EQ(server_->pending_deadlines(), 0u);

  // Nor after its connection is gone.
  Client gone = Connect();
  auto lost = std::async(std::launch::async, [&] {
    return gone.Call(kSvc, "Hold", StateRequest(), nullptr, {.timeout = 10min});
  });
  for (int i = 0; i < 300 && Held() < 2; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(Held(), 2u);
  EXPECT_EQ(server_->pending_deadlines(), 1u);
  gone.Close();
  (void)lost.get();
  for (int i = 0; i < 300 && server_->connection_count() > 1; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(server_->pending_deadlines(), 0u);
}

TEST_F(AsyncServerTest, BusyConnectionIsReadLaterNotRefused) {
  // Four plain calls block (the per-connection limit); forty more queue in
  // the socket and all complete once those finish: none is refused.
  Client c = Connect();
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 44; ++i) {
    ts.emplace_back([&] {
      if (c.Call(kSvc, "Block", StateRequest(), nullptr).ok()) ++ok;
    });
  }
  for (int i = 0; i < 200; ++i) {
    {
      MutexLock l(&mu_);
      if (blocked_ >= 4) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  std::this_thread::sleep_for(100ms);
  {
    MutexLock l(&mu_);
    EXPECT_EQ(blocked_, 4);  // never more than the limit at once
    released_ = true;
    cv_.SignalAll();
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 44);
}

TEST_F(AsyncServerTest, PendingCapIsResourceExhaustedAndBounded) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  server_->ServeConnection(UniqueFd(sv[0]));
  UniqueFd raw(sv[1]);
  std::thread writer([&] {
    for (uint32_t i = 0; i < 2100; ++i) {
      ASSERT_TRUE(
          WriteFrame(raw.get(), 2 * i + 1, FrameType::kRequest, 0, Request("Hold", StateRequest()))
              .ok());
    }
  });
  int exhausted = 0;
  for (int i = 0; i < 100; ++i) {
    Frame f;
    ASSERT_TRUE(ReadFrame(raw.get(), &f).ok());
    ::ttrpc::Response r;
    ASSERT_TRUE(r.ParseFromString(f.payload));
    if (r.status().code() == static_cast<int>(Code::kResourceExhausted)) ++exhausted;
  }
  writer.join();
  EXPECT_EQ(exhausted, 100);
  EXPECT_EQ(Held(), 2000u);
}

}  // namespace
}  // namespace runhcs::ttrpc
