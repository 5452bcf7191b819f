// AgentClient: typed calls to the guest agent (runhcs.agent.v1.Agent) over
// the VM's channel. Every call carries a deadline, so an agent that stops
// answering yields DeadlineExceeded, never a hang; a VM that is gone yields
// Unavailable.
//
// Thread-safety: calls may be made from any thread concurrently.
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>

#include "base/status.h"
#include "runhcs/agent.ttrpc.h"
#include "ttrpc/client.h"

namespace runhcs::uvm {

namespace apb = ::runhcs::agent::v1;

class AgentClient : public apb::AgentClient {
 public:
  static constexpr auto kDefaultTimeout = std::chrono::seconds(10);
  // One long poll of ReadStream/WaitProcess.
  static constexpr auto kRelayPoll = std::chrono::seconds(30);

  // Every RPC of runhcs.agent.v1.Agent (from the generated base) with
  // kDefaultTimeout, or the CallOptions given (see Within).
  explicit AgentClient(std::unique_ptr<ttrpc::Client> client)
      : apb::AgentClient(client.get(), Within(kDefaultTimeout)), client_(std::move(client)) {}

  static ttrpc::CallOptions Within(std::chrono::nanoseconds timeout) {
    ttrpc::CallOptions o;
    o.timeout = timeout;
    return o;
  }
  // The time left until `deadline`, at least 1 ms (a call is still made, and
  // fails fast, once the deadline has passed).
  static ttrpc::CallOptions Until(std::chrono::steady_clock::time_point deadline) {
    return Within(std::max(std::chrono::duration_cast<std::chrono::nanoseconds>(
                               deadline - std::chrono::steady_clock::now()),
                           std::chrono::nanoseconds(std::chrono::milliseconds(1))));
  }

  // The relays between a process in the VM and host fds, shared by the
  // container processes (VmProcess) and exec-in-VM. Each blocks; long polls
  // that time out (DeadlineExceeded) are simply asked again.
  //
  // ReadStream until EOF (or the agent is gone), writing into `fd`; if the
  // fd's reader goes away, the stream is still drained. `fd` < 0 drains only.
  void RelayOutput(const apb::ProcessId& id, apb::ReadStreamRequest::Stream which, int fd);
  // `fd` into WriteStdin until EOF, then CloseStdin. Returns early, without
  // closing the guest's stdin, once `stop_fd` is readable (the process is
  // gone) or a write fails.
  void RelayStdin(const apb::ProcessId& id, int fd, int stop_fd);
  // Waits for the process's exit status.
  StatusOr<int32_t> WaitExit(const apb::ProcessId& id);

  bool closed() { return client_->closed(); }
  void Close() { client_->Close(); }

 private:
  std::unique_ptr<ttrpc::Client> client_;
};

}  // namespace runhcs::uvm
