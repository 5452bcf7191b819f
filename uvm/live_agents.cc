#include "uvm/live_agents.h"

#include <utility>
#include <vector>

#include "base/thread_annotations.h"

namespace runhcs::uvm {
namespace {

struct Registry {
  Mutex mu;
  std::vector<std::pair<std::string, std::weak_ptr<AgentClient>>> agents GUARDED_BY(mu);

  // Drops the entries whose client is gone or closed.
  void PruneLocked() REQUIRES(mu) {
    std::erase_if(agents, [](const auto& e) {
      auto a = e.second.lock();
      return !a || a->closed();
    });
  }
};

Registry& Get() {
  static auto* r = new Registry;  // never destroyed: threads may outlive main
  return *r;
}

}  // namespace

void ListLiveAgent(const std::string& vm_id, const std::shared_ptr<AgentClient>& agent) {
  Registry& r = Get();
  MutexLock l(&r.mu);
  r.PruneLocked();
  for (const auto& e : r.agents) {
    if (e.first == vm_id && e.second.lock() == agent) return;
  }
  r.agents.emplace_back(vm_id, agent);
}

std::string DumpLiveGuestStacks(std::chrono::milliseconds timeout) {
  std::vector<std::pair<std::string, std::shared_ptr<AgentClient>>> live;
  {
    Registry& r = Get();
    MutexLock l(&r.mu);
    r.PruneLocked();
    for (const auto& e : r.agents) {
      if (auto a = e.second.lock()) live.emplace_back(e.first, std::move(a));
    }
  }
  // The calls outside the lock: each may take up to `timeout`.
  std::string out;
  for (const auto& [id, agent] : live) {
    apb::Empty e;
    apb::DumpStacksResponse resp;
    Status st = agent->DumpStacks(e, &resp, AgentClient::Within(timeout));
    out += "vm " + id + ":\n";
    out += st.ok() ? resp.stacks() : "  the guest did not answer: " + st.ToString() + "\n";
  }
  return out;
}

}  // namespace runhcs::uvm
