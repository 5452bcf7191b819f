// A TTRPC client over one connected byte stream.
//
// Contract:
//  - Call() is safe from many threads at once; calls are multiplexed on odd
//    stream ids (1, 3, 5, ...) and matched to responses by id.
//  - A call with a timeout sends timeout_nano and gives up locally with
//    DeadlineExceeded when no response arrives in time.
//  - When the connection closes, every pending and later call fails with
//    Unavailable ("ttrpc: closed"); closed() turns true.
//  - Error statuses come back as Status::FromWire (errdefs class stripped).
//  - CallAsync() holds no thread while it waits: `done` runs exactly once,
//    on the client's reader thread when the answer (or the close) comes, or
//    on the calling thread when the call cannot be sent. `done` must not
//    block: the reader serves every call of this client. Its timeout is
//    sent to the server (timeout_nano), which answers DeadlineExceeded; it
//    is not enforced locally.
#pragma once

#include <google/protobuf/message_lite.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "base/fd.h"
#include "base/io.h"
#include "base/status.h"
#include "base/thread_annotations.h"

namespace runhcs::ttrpc {

struct CallOptions {
  std::chrono::nanoseconds timeout{0};  // 0 = none
  std::vector<std::pair<std::string, std::string>> metadata;
};

class Client {
 public:
  explicit Client(UniqueFd fd);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  static StatusOr<std::unique_ptr<Client>> Dial(const UnixAddress& addr);

  StatusOr<std::string> CallRaw(std::string_view service, std::string_view method,
                                const std::string& payload, const CallOptions& opts = {});

  using Done = std::function<void(Status, std::string payload)>;
  void CallAsync(std::string_view service, std::string_view method, const std::string& payload,
                 Done done, const CallOptions& opts = {});

  Status Call(std::string_view service, std::string_view method,
              const google::protobuf::MessageLite& req, google::protobuf::MessageLite* resp,
              const CallOptions& opts = {});

  bool closed();
  // Closes the connection; pending calls fail with Unavailable.
  void Close();

 private:
  struct Pending {
    bool done = false;
    Status status;
    std::string payload;
    Done async;  // set for CallAsync: runs instead of waking a caller
  };
  void ReadLoop();
  // Fails every pending call; returns the async ones' callbacks, to be run
  // with no lock held.
  std::vector<Done> FailAllLocked(const Status& st) REQUIRES(mu_);
  // Registers and sends one request; 0 and the error if it was not sent.
  std::pair<uint32_t, Status> Send(std::string_view service, std::string_view method,
                                   const std::string& payload, const CallOptions& opts,
                                   std::shared_ptr<Pending> pending);

  UniqueFd fd_;
  Mutex write_mu_;  // serializes frames on fd_
  Mutex mu_;
  CondVar cv_;
  uint32_t next_stream_ GUARDED_BY(mu_) = 1;
  bool closed_ GUARDED_BY(mu_) = false;
  std::map<uint32_t, std::shared_ptr<Pending>> pending_ GUARDED_BY(mu_);
  std::thread reader_;
};

}  // namespace runhcs::ttrpc
