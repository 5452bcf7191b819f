// The real exec::Process implementations (RuntimeProcess, VmProcess) under
// the concurrency ProcessExec allows: CloseStdin and ResizePty from other
// threads while Start runs, Signal and ReleaseIo racing each other. Run under
// ThreadSanitizer (label tsan); the fake process cannot show these races.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "base/io.h"
#include "base/latch.h"
#include "oci/fake_runtime.h"
#include "proctask/runtime_process.h"
#include "ttrpc/server.h"
#include "uvm/fake_utility_vm.h"
#include "vmtask/vm_process.h"

namespace runhcs::vmtask {

namespace apb = ::runhcs::agent::v1;
namespace {

using namespace std::chrono_literals;

std::string TempDir() {
  char tmpl[] = "/tmp/runhcs-race.XXXXXX";
  return ::mkdtemp(tmpl);
}

// Starts `a`, `b` and `c` together and waits for all three.
void Together(const std::function<void()>& a, const std::function<void()>& b,
              const std::function<void()>& c) {
  std::atomic<int> ready{0};
  auto go = [&](const std::function<void()>& f) {
    return std::thread([&, f] {
      ++ready;
      while (ready < 3) std::this_thread::yield();
      f();
    });
  };
  std::thread ta = go(a), tb = go(b), tc = go(c);
  ta.join();
  tb.join();
  tc.join();
}

// An agent whose process runs until SignalProcess, streams nothing and
// counts the stdin it gets.
class FakeAgent : public apb::AgentServer {
 public:
  FakeAgent() { client_ = uvm::ServeFakeAgent(&server_, this); }
  Status ExecProcess(const ttrpc::CallContext&, const apb::ExecProcessRequest&,
                     apb::StartResponse* r) override {
    std::this_thread::sleep_for(2ms);  // a start takes a while
    r->set_pid(42);
    return OkStatus();
  }
  Status ReadStream(const ttrpc::CallContext&, const apb::ReadStreamRequest&,
                    apb::ReadStreamResponse* r) override {
    WaitKilled();
    r->set_eof(true);
    return OkStatus();
  }
  Status WaitProcess(const ttrpc::CallContext&, const apb::WaitProcessRequest&,
                     apb::WaitProcessResponse* r) override {
    WaitKilled();
    r->set_exit_status(137);
    return OkStatus();
  }
  Status WriteStdin(const ttrpc::CallContext&, const apb::WriteStdinRequest& q,
                    apb::WriteStdinResponse* r) override {
    stdin_bytes_ += q.data().size();
    r->set_written(static_cast<uint32_t>(q.data().size()));
    return OkStatus();
  }
  Status CloseStdin(const ttrpc::CallContext&, const apb::ProcessId&, apb::Empty*) override {
    return OkStatus();
  }
  Status SignalProcess(const ttrpc::CallContext&, const apb::SignalProcessRequest&,
                       apb::Empty*) override {
    MutexLock l(&mu_);
    killed_ = true;
    cv_.SignalAll();
    return OkStatus();
  }
  ~FakeAgent() {
    {
      MutexLock l(&mu_);
      killed_ = true;
      cv_.SignalAll();
    }
    server_.Shutdown(500ms);
  }
  void Reset() {
    MutexLock l(&mu_);
    killed_ = false;
  }
  std::shared_ptr<uvm::AgentClient> client() { return client_; }
  std::atomic<size_t> stdin_bytes_{0};

 private:
  void WaitKilled() {
    MutexLock l(&mu_);
    while (!killed_) cv_.WaitUntil(&mu_, std::chrono::steady_clock::now() + 5s);
  }
  ttrpc::Server server_;
  std::shared_ptr<uvm::AgentClient> client_;
  Mutex mu_;
  CondVar cv_;
  bool killed_ GUARDED_BY(mu_) = false;
};

TEST(ProcessRace, VmProcessStartCloseStdinResizeSignalAndRelease) {
  FakeAgent agent;
  std::string dir = TempDir();
  for (int i = 0; i < 30; ++i) {
    agent.Reset();
    std::string in = dir + "/in" + std::to_string(i);
    ASSERT_EQ(::mkfifo(in.c_str(), 0600), 0);
    exec::Stdio stdio{in, "", "", false};
    VmProcess p(agent.client(), "c1", "e" + std::to_string(i), R"({"args":["sh"]})", stdio,
                {"c1", "ns", dir}, nullptr);
    std::atomic<bool> exited{false};
    StatusOr<uint32_t> pid = Status();
    Together([&] { pid = p.Start([&](uint32_t) { exited = true; }); }, [&] { p.CloseStdin(); },
             [&] { (void)p.ResizePty(80, 24); });
    ASSERT_TRUE(pid.ok()) << pid.status().ToString();
    Together([&] { (void)p.Signal(SIGKILL); }, [&] { p.CloseStdin(); },
             [&] { (void)p.ResizePty(10, 10); });
    for (int k = 0; k < 500 && !exited; ++k) std::this_thread::sleep_for(10ms);
    EXPECT_TRUE(exited);
    Latch released;
    p.ReleaseIo([&] { released.Open(); });
    EXPECT_TRUE(released.Wait(std::chrono::steady_clock::now() + 10s));
    ::unlink(in.c_str());
  }
  ::rmdir(dir.c_str());
}

TEST(ProcessRace, RuntimeProcessStartCloseStdinResizeSignalAndRelease) {
  std::string dir = TempDir();
  // An OCI runtime that "execs" a sleeper and writes its pid.
  std::string rt = dir + "/fake-runtime";
  ASSERT_TRUE(oci::WriteFakeRuntime(rt, "sleep 3").ok());
  auto runtime =
      std::make_shared<oci::Runtime>(oci::Runtime::Config{rt, dir + "/root", false}, dir);
  for (int i = 0; i < 20; ++i) {
    std::string in = dir + "/in" + std::to_string(i);
    ASSERT_EQ(::mkfifo(in.c_str(), 0600), 0);
    exec::Stdio stdio{in, "", "", false};
    auto p = proctask::RuntimeProcess::ForExec(runtime, "c1", "e" + std::to_string(i), dir,
                                               R"({"args":["sh"]})", stdio, {"c1", "ns", dir});
    StatusOr<uint32_t> pid = Status();
    Together([&] { pid = p->Start([](uint32_t) {}); }, [&] { p->CloseStdin(); },
             [&] { (void)p->ResizePty(80, 24); });
    ASSERT_TRUE(pid.ok()) << pid.status().ToString();
    Latch released;
    Together([&] { (void)p->Signal(SIGKILL); }, [&] { p->ReleaseIo([&] { released.Open(); }); },
             [&] { p->CloseStdin(); });
    EXPECT_TRUE(released.Wait(std::chrono::steady_clock::now() + 10s));
    p.reset();
    ::unlink(in.c_str());
  }
  ::unlink(rt.c_str());
  ::unlink((dir + "/log.json").c_str());
  ::rmdir((dir + "/root").c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
}  // namespace runhcs::vmtask
