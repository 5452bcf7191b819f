// FakeUtilityVm: an in-memory UtilityVm for unit tests (test-only target).
#pragma once

#include <sys/socket.h>

#include <vector>

#include "base/thread_annotations.h"
#include "ttrpc/server.h"
#include "uvm/utility_vm.h"

namespace runhcs::uvm {

// A test's fake agent: `agent` registered on `server`, served on one end of
// a socketpair; the returned client talks to it on the other.
inline std::shared_ptr<AgentClient> ServeFakeAgent(ttrpc::Server* server, apb::AgentServer* agent) {
  apb::RegisterAgentServer(server, agent);
  int sv[2] = {-1, -1};
  (void)::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
  server->ServeConnection(UniqueFd(sv[0]));
  return std::make_shared<AgentClient>(std::make_unique<ttrpc::Client>(UniqueFd(sv[1])));
}

class FakeUtilityVm : public UtilityVm {
 public:
  explicit FakeUtilityVm(std::string id = "vm") : id_(std::move(id)) {}

  const std::string& id() const override { return id_; }
  Status Start() override {
    MutexLock l(&mu_);
    if (started_) return FailedPreconditionError("already started");
    started_ = true;
    return OkStatus();
  }
  Status Wait() override {
    MutexLock l(&mu_);
    while (!gone_) cv_.Wait(&mu_);
    return crash_;
  }
  int OnGone(GoneCallbacks::Callback cb) override { return gone_cbs_.Add(std::move(cb)); }
  void CancelOnGone(int token) override { gone_cbs_.Cancel(token); }
  Status Close() override {
    {
      MutexLock l(&mu_);
      ++close_calls_;
      gone_ = true;
      cv_.SignalAll();
    }
    gone_cbs_.Fire(OkStatus());
    return OkStatus();
  }
  void Terminate(const std::string& why) override {
    Status crash;
    {
      MutexLock l(&mu_);
      if (!started_ || gone_) return;
      gone_ = true;
      crash_ = crash = UnavailableError("terminated: {}", why);
      terminated_ = why;
      cv_.SignalAll();
    }
    gone_cbs_.Fire(crash);
  }
  std::shared_ptr<AgentClient> agent() override {
    MutexLock l(&mu_);
    return gone_ ? nullptr : agent_;
  }
  StatusOr<int32_t> ExecInUvm(
      const containerd::runhcs::v1::diag::ExecProcessRequest& req) override {
    MutexLock l(&mu_);
    if (gone_) return UnavailableError("vm is gone");
    exec_args_.push_back(req.args().empty() ? "" : req.args(0));
    return 7;
  }
  Status Share(const std::string& host, const std::string& vm, bool ro) override {
    MutexLock l(&mu_);
    if (gone_) return UnavailableError("vm is gone");
    shares_.push_back(host + "->" + vm + (ro ? ":ro" : ""));
    return OkStatus();
  }
  StatusOr<std::string> DumpStacks() override { return std::string("guest stacks"); }
  int pid() override { return pid_; }
  void set_pid(int pid) { pid_ = pid; }  // before the VM is shared
  StatusOr<containerd::runhcs::stats::v1::VirtualMachineStatistics> Stats() override {
    containerd::runhcs::stats::v1::VirtualMachineStatistics s;
    s.mutable_processor()->set_total_runtime_ns(1234);
    s.mutable_memory()->set_working_set_bytes(64 << 20);
    return s;
  }

  // Test helper: the VM dies on its own.
  void Crash() {
    {
      MutexLock l(&mu_);
      gone_ = true;
      crash_ = UnavailableError("qemu exited: killed");
      cv_.SignalAll();
    }
    gone_cbs_.Fire(UnavailableError("qemu exited: killed"));
  }
  // Test helper: the agent agent() returns while the VM runs.
  void set_agent(std::shared_ptr<AgentClient> a) {
    MutexLock l(&mu_);
    agent_ = std::move(a);
  }
  std::string terminated() {
    MutexLock l(&mu_);
    return terminated_;
  }
  int close_calls() {
    MutexLock l(&mu_);
    return close_calls_;
  }
  std::vector<std::string> shares() {
    MutexLock l(&mu_);
    return shares_;
  }
  std::vector<std::string> exec_args() {
    MutexLock l(&mu_);
    return exec_args_;
  }

 private:
  const std::string id_;
  int pid_ = 0;
  GoneCallbacks gone_cbs_;
  Mutex mu_;
  CondVar cv_;
  bool started_ GUARDED_BY(mu_) = false;
  bool gone_ GUARDED_BY(mu_) = false;
  Status crash_ GUARDED_BY(mu_);
  int close_calls_ GUARDED_BY(mu_) = 0;
  std::shared_ptr<AgentClient> agent_ GUARDED_BY(mu_);
  std::string terminated_ GUARDED_BY(mu_);  // Terminate's why
  std::vector<std::string> shares_ GUARDED_BY(mu_);
  std::vector<std::string> exec_args_ GUARDED_BY(mu_);
};

}  // namespace runhcs::uvm
