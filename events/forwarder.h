// Forwarder: the Publisher that sends events to containerd over TTRPC
// (containerd.services.events.ttrpc.v1.Events/Forward at TTRPC_ADDRESS).
//
//  - A bounded FIFO (Options::queue_limit). When full, the newest event is
//    dropped and counted; Publish() never blocks.
//  - One worker thread sends in order. A failed Forward is retried in place
//    (so order holds) up to Options::max_attempts with linear backoff,
//    reconnecting each time; then the event is dropped and logged.
//  - Each Envelope carries the publish timestamp, the namespace, the topic and
//    the bare-URL Any. Calls carry containerd-namespace-ttrpc metadata.
//  - Flush() waits for the queue to drain; the destructor flushes (bounded by
//    Options::flush_timeout, one attempt per event) and stops the worker.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "base/thread_annotations.h"
#include "containerd/services/events/ttrpc/v1/events.ttrpc.h"
#include "events/publisher.h"
#include "ttrpc/client.h"

namespace runhcs::events {

class Forwarder : public Publisher {
 public:
  struct Options {
    std::string address;  // TTRPC_ADDRESS: a socket path, "unix://" optional
    std::string ns;       // containerd namespace
    size_t queue_limit = 2048;
    int max_attempts = 5;
    std::chrono::milliseconds call_timeout{5000};
    std::chrono::milliseconds backoff{200};
    std::chrono::milliseconds flush_timeout{5000};
  };

  explicit Forwarder(Options opts);
  ~Forwarder() override;

  void Publish(const google::protobuf::MessageLite& event) override;
  // True if the queue drained (everything sent or given up) within `timeout`.
  bool Flush(std::chrono::milliseconds timeout);
  uint64_t dropped();
  uint64_t sent();

 private:
  void Run();
  Status Send(const containerd::services::events::ttrpc::v1::ForwardRequest& req);

  const Options opts_;
  Mutex mu_;
  CondVar cv_;
  std::deque<containerd::services::events::ttrpc::v1::ForwardRequest> queue_ GUARDED_BY(mu_);
  bool busy_ GUARDED_BY(mu_) = false;  // worker holds an event outside the queue
  bool stop_ GUARDED_BY(mu_) = false;
  bool draining_ GUARDED_BY(mu_) = false;  // shutting down: no retries
  uint64_t dropped_ GUARDED_BY(mu_) = 0;
  uint64_t sent_ GUARDED_BY(mu_) = 0;
  // Only the worker thread touches the connection.
  std::unique_ptr<ttrpc::Client> client_;
  std::thread worker_;
};

}  // namespace runhcs::events
