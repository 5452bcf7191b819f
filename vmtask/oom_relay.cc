#include "vmtask/oom_relay.h"

#include "base/log.h"
#include "runhcs/agent.pb.h"
#include "task/exec_set.h"

namespace runhcs::vmtask {

namespace apb = runhcs::agent::v1;

OomRelay::OomRelay(std::shared_ptr<uvm::AgentClient> agent, std::string container_id,
                   events::Publisher* publisher)
    : agent_(std::move(agent)), id_(std::move(container_id)), publisher_(publisher) {}

OomRelay::~OomRelay() {
  {
    MutexLock l(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void OomRelay::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void OomRelay::Publish(uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) publisher_->Publish(task::OomEvent(id_));
  if (n == 0) return;
  spdlog::info("task {}: {} OOM kill(s) in the VM", id_, n);
  MutexLock l(&mu_);
  published_ += n;
  cv_.SignalAll();
}

void OomRelay::Loop() {
  apb::WaitOomRequest req;
  req.set_container_id(id_);
  req.set_timeout_ms(static_cast<uint32_t>(kPoll.count()));
  for (;;) {
    {
      MutexLock l(&mu_);
      if (stop_) return;
    }
    apb::WaitOomResponse r;
    Status st = agent_->WaitOom(req, &r, uvm::AgentClient::Within(kPoll + std::chrono::seconds(5)));
    if (!st.ok()) {
      if (st.code() != Code::kNotFound && st.code() != Code::kUnavailable) {
        spdlog::warn("task {}: OOM events: {}", id_, st.ToString());
      }
      return;
    }
    Publish(r.taken());
    if (r.ended()) return;
  }
}

void OomRelay::Flush() {
  apb::WaitOomRequest req;
  req.set_container_id(id_);
  req.set_timeout_ms(0);
  apb::WaitOomResponse r;
  if (!agent_->WaitOom(req, &r, uvm::AgentClient::Within(std::chrono::seconds(5))).ok()) return;
  Publish(r.taken());
  auto until = std::chrono::steady_clock::now() + kFlushLimit;
  MutexLock l(&mu_);
  while (published_ < r.total()) {
    if (!cv_.WaitUntil(&mu_, until)) break;
  }
}

}  // namespace runhcs::vmtask
