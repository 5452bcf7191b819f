// QmpClient: QEMU's machine protocol (QMP) on its unix socket, for what the
// command line cannot do: saving and restoring a VM, plugging devices into
// a running one, quitting.
//
// One command at a time, answered in order; events QEMU sends in between
// are kept (the last kKeptEvents) for WaitEvent. Every call has a deadline:
// a QEMU that stops answering yields DeadlineExceeded, one that is gone
// Unavailable, a command QEMU refuses FailedPrecondition with QEMU's
// description.
//
// Thread-safety: none; one owner.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
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

  // Waits for the event `name` that `match` accepts (null: any; it gets the
  // whole event: "data", "timestamp"), counting those that came during
  // earlier calls; returns the event. DeadlineExceeded if none comes by
  // `deadline`; an event taken is gone. QEMU throttles some events (one a
  // second per source, the latest kept): match on the state they report,
  // not on every change.
  StatusOr<nlohmann::json> WaitEvent(const std::string& name,
                                     const std::function<bool(const nlohmann::json&)>& match,
                                     Clock::time_point deadline);
  // An event's "timestamp", in microseconds since the epoch (0 if absent).
  static int64_t EventTimeUs(const nlohmann::json& event);

  static constexpr size_t kKeptEvents = 64;

 private:
  explicit QmpClient(UniqueFd fd) : fd_(std::move(fd)) {}
  void Keep(nlohmann::json event);
  // The next JSON line from QEMU.
  StatusOr<nlohmann::json> ReadMessage(Clock::time_point deadline);

  UniqueFd fd_;
  std::string buf_;
  std::deque<nlohmann::json> events_;  // oldest first
};

}  // namespace runhcs::uvm
