// A TTRPC server over connected byte streams (unix sockets, or a VM's
// virtio-serial port).
//
// Contract:
//  - Every request runs on a thread of its own (pooled: idle workers are
//    reused, and exit after 2 s without work), so a handler that blocks
//    (Wait) never stalls other calls on the same connection. Responses go out in
//    completion order, each on its request's stream id.
//  - Unknown service or method -> Unimplemented ("service X" / "method Y").
//    Undecodable payload -> Internal ("ttrpc: error unmarshalling payload").
//    Even stream id -> InvalidArgument. Frames above 4 MiB -> ResourceExhausted
//    on that stream; the connection stays usable. Non-request frames are
//    ignored, as ttrpc 1.1 does. A truncated frame ends the connection.
//  - timeout_nano becomes CallContext::deadline; handlers that block MUST
//    respect it (return DeadlineExceeded).
//  - Connections accepted by ServeListener must come from a peer with the
//    server's own uid (SO_PEERCRED); others are closed at once.
//  - At most Options::max_inflight_per_connection requests run at once per
//    connection; the next gets ResourceExhausted. This bounds per-connection
//    memory and threads.
//  - Handlers are registered before serving and are read-only afterwards.
#pragma once

#include <google/protobuf/message_lite.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "base/thread_annotations.h"

namespace runhcs::ttrpc {

using Clock = std::chrono::steady_clock;

class CallContext {
 public:
  std::string service;
  std::string method;
  std::optional<Clock::time_point> deadline;
  std::vector<std::pair<std::string, std::string>> metadata;

  // First value for `key` (lower-case), or "".
  std::string Metadata(std::string_view key) const;
  bool Expired() const { return deadline && Clock::now() >= *deadline; }
};

using RawHandler =
    std::function<Status(const CallContext&, const std::string& request, std::string* response)>;

class Server {
 public:
  struct Options {
    size_t max_inflight_per_connection = 128;
    bool require_same_uid = true;
    // Called (on the exiting worker, no lock held) when the last handler
    // worker has exited for want of work: the process has gone quiet. The
    // shim returns freed heap pages to the kernel there.
    std::function<void()> on_idle;
  };

  Server() : Server(Options{}) {}
  explicit Server(Options opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void RegisterRaw(const std::string& service, const std::string& method, RawHandler h);

  template <typename Req, typename Resp>
  void Register(const std::string& service, const std::string& method,
                std::function<Status(const CallContext&, const Req&, Resp*)> fn) {
    RegisterRaw(service, method,
                [fn = std::move(fn)](const CallContext& ctx, const std::string& in,
                                     std::string* out) -> Status {
                  Req req;
                  if (!req.ParseFromString(in)) {
                    return InternalError("ttrpc: error unmarshalling payload: cannot parse {}",
                                         req.GetTypeName());
                  }
                  Resp resp;
                  RETURN_IF_ERROR(fn(ctx, req, &resp));
                  if (!resp.SerializeToString(out)) return InternalError("ttrpc: marshal response");
                  return OkStatus();
                });
  }

  // Accepts connections on `listener` on a background thread.
  void ServeListener(UniqueFd listener);
  // Serves one already-connected stream (no credential check) on a
  // background thread.
  void ServeConnection(UniqueFd conn);
  // Stops accepting, gives running handlers up to 500 ms to answer, closes
  // every connection and waits up to `grace` in all for handlers. Idempotent.
  void Shutdown(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));

  // Number of open connections (for tests and diagnostics).
  size_t connection_count();

 private:
  struct Conn;
  struct Shared;

  void AcceptLoop(int listen_fd);
  void StartConnection(UniqueFd fd);

  const Options opts_;
  using HandlerMap = std::map<std::string, std::map<std::string, RawHandler>>;
  // Handlers by service then method. Read-only once serving starts; shared
  // with connection threads so none can outlive it.
  std::shared_ptr<HandlerMap> handlers_ = std::make_shared<HandlerMap>();
  std::shared_ptr<Shared> shared_;
  UniqueFd listener_;
  UniqueFd wake_[2];  // self-pipe that ends the accept loop
  std::thread accept_thread_;
};

}  // namespace runhcs::ttrpc
