// AgentClient: typed calls to the guest agent (runhcs.agent.v1.Agent) over
// the VM's channel. Every call carries a deadline, so an agent that stops
// answering yields DeadlineExceeded, never a hang; a VM that is gone yields
// Unavailable.
//
// Thread-safety: calls may be made from any thread concurrently.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "base/status.h"
#include "runhcs/agent.pb.h"
#include "ttrpc/client.h"

namespace runhcs::uvm {

namespace apb = ::runhcs::agent::v1;

class AgentClient {
 public:
  static constexpr auto kDefaultTimeout = std::chrono::seconds(10);

  explicit AgentClient(std::unique_ptr<ttrpc::Client> client) : client_(std::move(client)) {}

  template <typename Req, typename Resp>
  Status Call(const char* method, const Req& req, Resp* resp,
              std::chrono::nanoseconds timeout = kDefaultTimeout) {
    ttrpc::CallOptions o;
    o.timeout = timeout;
    return client_->Call("runhcs.agent.v1.Agent", method, req, resp, o);
  }

  bool closed() { return client_->closed(); }
  void Close() { client_->Close(); }

 private:
  std::unique_ptr<ttrpc::Client> client_;
};

}  // namespace runhcs::uvm
