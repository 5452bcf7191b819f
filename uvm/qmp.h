// QmpClient: QEMU's machine protocol (QMP) on its unix socket, for what the
// command line cannot do: saving and restoring a VM, plugging devices into
// a running one, quitting.
//
// One command at a time, answered in order; events QEMU sends in between
// are skipped. Every call has a deadline: a QEMU that stops answering yields
// DeadlineExceeded, one that is gone Unavailable, a command QEMU refuses
// FailedPrecondition with QEMU's description.
//
// Thread-safety: none; one owner.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "base/fd.h"
#include "base/status.h"

namespace runhcs::uvm {

class QmpClient {
 public:
  using Clock = std::chrono::steady_clock;

  // Connects, reads the greeting and leaves negotiation mode
  // (qmp_capabilities). Retries the connect until `deadline` (QEMU creates
  // its socket soon after it starts).
  static StatusOr<QmpClient> Connect(const std::string& socket_path, Clock::time_point deadline);
  // Wraps a connected stream (unit tests); the greeting is still to come.
  static StatusOr<QmpClient> Handshake(UniqueFd fd, Clock::time_point deadline);

  // Runs `command` with `arguments` (null: none); returns its "return".
  StatusOr<nlohmann::json> Execute(const std::string& command,
                                   const nlohmann::json& arguments = nullptr,
                                   Clock::time_point deadline = Clock::now() +
                                                                std::chrono::seconds(10));

 private:
  explicit QmpClient(UniqueFd fd) : fd_(std::move(fd)) {}
  // The next JSON line from QEMU.
  StatusOr<nlohmann::json> ReadMessage(Clock::time_point deadline);

  UniqueFd fd_;
  std::string buf_;
};

}  // namespace runhcs::uvm
