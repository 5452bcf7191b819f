// OomRelay: TaskOOM events for one container in a utility VM, from the
// agent's WaitOom (see proto/runhcs/agent.proto).
//
// Contract:
//  - Start() runs one thread that long-polls WaitOom and publishes one
//    TaskOOM{container_id} per OOM kill the agent hands over. It ends when
//    the agent reports the container ended (after publishing what came with
//    that answer), when the agent is gone, or when the relay is destroyed.
//  - Flush() takes what the agent has now (the agent rereads the cgroup
//    first) and returns once every OOM kill the agent has counted for the
//    container is published, by either thread (bounded by kFlushLimit). The
//    task calls it before the container's TaskExit: TaskOOM comes first.
//  - Publishing happens with no lock held.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "base/thread_annotations.h"
#include "events/publisher.h"
#include "uvm/agent_client.h"

namespace runhcs::vmtask {

class OomRelay {
 public:
  static constexpr std::chrono::milliseconds kPoll{5000};
  static constexpr std::chrono::milliseconds kFlushLimit{3000};

  OomRelay(std::shared_ptr<uvm::AgentClient> agent, std::string container_id,
           events::Publisher* publisher);
  ~OomRelay();
  OomRelay(const OomRelay&) = delete;
  OomRelay& operator=(const OomRelay&) = delete;

  void Start();
  void Flush();

 private:
  void Loop();
  // Publishes `n` TaskOOMs, then counts them.
  void Publish(uint32_t n);

  const std::shared_ptr<uvm::AgentClient> agent_;
  const std::string id_;
  events::Publisher* const publisher_;
  Mutex mu_;
  CondVar cv_;
  uint64_t published_ GUARDED_BY(mu_) = 0;
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace runhcs::vmtask
