// A TTRPC server over connected byte streams (unix sockets, or a VM's
// virtio-serial port).
//
// Contract:
//  - A plain handler (Register) runs on a pooled worker thread, so a slow one
//    never stalls other calls on the same connection. At most
//    Options::max_running_per_connection of them run at once per connection;
//    past that the server stops reading the connection until one finishes
//    (backpressure: the client's writes wait, nothing is refused).
//  - An async handler (RegisterAsync) runs on the connection's reader, must
//    return at once, and answers later through its Responder from any thread.
//    A call waiting that way holds no thread and counts only against
//    Options::max_pending_per_connection (past it: ResourceExhausted), so a
//    client may keep any number of long waits (Wait) open below that.
//  - Responses go out in completion order, each on its request's stream id,
//    exactly once per call.
//  - timeout_nano becomes CallContext::deadline. When it passes, the server
//    itself answers DeadlineExceeded (whatever the handler is still doing; its
//    answer is then dropped), for plain and async calls alike.
//  - A connection that closes drops its unanswered calls: their Responders
//    report Done() so whoever holds one can let go of it.
//  - Unknown service or method -> Unimplemented ("service X" / "method Y").
//    Undecodable payload -> Internal ("ttrpc: error unmarshalling payload").
//    Even stream id -> InvalidArgument. Frames above 4 MiB -> ResourceExhausted
//    on that stream; the connection stays usable. Non-request frames are
//    ignored, as ttrpc 1.1 does. A truncated frame ends the connection.
//  - Connections accepted by ServeListener must come from a peer with the
//    server's own uid (SO_PEERCRED); others are closed at once.
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
#include <type_traits>
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

// The answer to one call. Copies share the call; the first Reply wins and
// later ones do nothing. Thread-safe.
class Responder {
 public:
  struct Call;
  Responder() = default;
  explicit Responder(std::shared_ptr<Call> call) : call_(std::move(call)) {}

  // Sends `st` (and, if OK, `payload`). False if the call was already
  // answered, timed out or lost its connection.
  bool Reply(const Status& st, const std::string& payload = "") const;
  // Reply(OK, resp serialized).
  bool Send(const google::protobuf::MessageLite& resp) const;
  // Answered, past its deadline, or its connection is gone: nobody waits.
  bool Done() const;

 private:
  std::shared_ptr<Call> call_;
};

using AsyncRawHandler =
    std::function<void(const CallContext&, const std::string& request, Responder responder)>;

// A Responder for one response type (what generated async methods get).
template <typename Resp>
class TypedResponder {
 public:
  explicit TypedResponder(Responder r) : r_(std::move(r)) {}
  // Answers OK with `resp`. False if the call no longer waits (see Responder).
  bool Send(const Resp& resp) const { return r_.Send(resp); }
  // Answers with an error status; `st` must not be OK.
  bool Fail(const Status& st) const { return r_.Reply(st); }
  bool Done() const { return r_.Done(); }

 private:
  Responder r_;
};

// Calls one method of a server implementation directly, without a
// connection (unit tests, fuzzers): its response, or its error.
template <typename Svc, typename Req, typename Resp>
StatusOr<Resp> CallDirect(Svc* svc, Status (Svc::*method)(const CallContext&, const Req&, Resp*),
                          const std::type_identity_t<Req>& req,
                          std::optional<Clock::time_point> deadline = std::nullopt) {
  CallContext ctx;
  ctx.deadline = deadline;
  Resp resp;
  Status st = (svc->*method)(ctx, req, &resp);
  if (!st.ok()) return st;
  return resp;
}

class Server {
 public:
  struct Options {
    size_t max_running_per_connection = 32;
    size_t max_pending_per_connection = 16384;
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
  void RegisterAsyncRaw(const std::string& service, const std::string& method, AsyncRawHandler h);

  // `fn` answers through its TypedResponder.
  template <typename Req, typename Resp>
  void RegisterAsync(const std::string& service, const std::string& method,
                     std::function<void(const CallContext&, const Req&, TypedResponder<Resp>)> fn) {
    RegisterAsyncRaw(
        service, method,
        [fn = std::move(fn)](const CallContext& ctx, const std::string& in, Responder r) {
          Req req;
          if (!req.ParseFromString(in)) {
            r.Reply(InternalError("ttrpc: error unmarshalling payload: cannot parse {}",
                                  req.GetTypeName()));
            return;
          }
          fn(ctx, req, TypedResponder<Resp>(std::move(r)));
        });
  }

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
  // Number of calls whose deadline the server still tracks: unanswered calls
  // with a deadline that has not passed (for tests and diagnostics).
  size_t pending_deadlines();

 private:
  struct Conn;
  struct Shared;

  friend class Responder;
  friend struct Responder::Call;

  void AcceptLoop(int listen_fd);
  void DrainAndClose(Clock::time_point deadline);
  void StartConnection(UniqueFd fd);

  const Options opts_;
  struct Handler {
    RawHandler sync;
    AsyncRawHandler async;
  };
  using HandlerMap = std::map<std::string, std::map<std::string, Handler>>;
  // Handlers by service then method. Read-only once serving starts; shared
  // with connection threads so none can outlive it.
  std::shared_ptr<HandlerMap> handlers_ = std::make_shared<HandlerMap>();
  std::shared_ptr<Shared> shared_;
  UniqueFd listener_;
  UniqueFd wake_[2];  // self-pipe that ends the accept loop
  std::thread accept_thread_;
};

}  // namespace runhcs::ttrpc
