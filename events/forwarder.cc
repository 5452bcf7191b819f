#include "events/forwarder.h"

#include "runhcs/wkt/empty.pb.h"

#include "base/log.h"
#include "proto/timestamp.h"

namespace runhcs::events {

using containerd::services::events::ttrpc::v1::ForwardRequest;

Forwarder::Forwarder(Options opts) : opts_(std::move(opts)) {
  worker_ = std::thread([this] { Run(); });
}

Forwarder::~Forwarder() {
  {
    // From here on an event gets one attempt: a shim on its way out does not
    // wait out the backoff for a containerd that is not there.
    MutexLock l(&mu_);
    draining_ = true;
  }
  bool drained = Flush(opts_.flush_timeout);
  {
    MutexLock l(&mu_);
    if (!drained) spdlog::warn("events: {} events not sent at exit", queue_.size());
    stop_ = true;
    cv_.SignalAll();
  }
  if (client_) client_->Close();
  worker_.join();
}

void Forwarder::Publish(const google::protobuf::MessageLite& event) {
  ForwardRequest req;
  auto* env = req.mutable_envelope();
  *env->mutable_timestamp() = ToTimestamp(std::chrono::system_clock::now());
  env->set_namespace_(opts_.ns);
  env->set_topic(std::string(TopicFor(event)));
  *env->mutable_event() = PackBare(event);
  MutexLock l(&mu_);
  if (queue_.size() >= opts_.queue_limit) {
    ++dropped_;
    spdlog::error("events: queue full, dropped {} ({})", env->topic(), event.GetTypeName());
    return;
  }
  queue_.push_back(std::move(req));
  cv_.SignalAll();
}

Status Forwarder::Send(const ForwardRequest& req) {
  if (!client_ || client_->closed()) {
    client_.reset();
    ASSIGN_OR_RETURN(client_, ttrpc::Client::Dial(UnixAddress::Parse(opts_.address)));
  }
  ttrpc::CallOptions co;
  co.timeout = opts_.call_timeout;
  co.metadata = {{"containerd-namespace-ttrpc", opts_.ns}};
  runhcs::wkt::Empty empty;
  return containerd::services::events::ttrpc::v1::EventsClient(client_.get())
      .Forward(req, &empty, co);
}

void Forwarder::Run() {
  for (;;) {
    ForwardRequest req;
    {
      MutexLock l(&mu_);
      while (queue_.empty() && !stop_) cv_.Wait(&mu_);
      if (queue_.empty()) return;
      req = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    Status st;
    for (int attempt = 1; attempt <= opts_.max_attempts; ++attempt) {
      st = Send(req);
      if (st.ok()) break;
      client_.reset();
      spdlog::warn("events: forward {} attempt {}/{}: {}", req.envelope().topic(), attempt,
                   opts_.max_attempts, st.ToString());
      MutexLock l(&mu_);
      if (stop_ || draining_) break;
      cv_.WaitUntil(&mu_, std::chrono::steady_clock::now() + opts_.backoff * attempt);
    }
    MutexLock l(&mu_);
    busy_ = false;
    if (st.ok()) {
      ++sent_;
    } else {
      ++dropped_;
      spdlog::error("events: dropped {}: {}", req.envelope().topic(), st.ToString());
    }
    cv_.SignalAll();
  }
}

bool Forwarder::Flush(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock l(&mu_);
  while (!queue_.empty() || busy_) {
    if (!cv_.WaitUntil(&mu_, deadline)) return queue_.empty() && !busy_;
  }
  return true;
}

uint64_t Forwarder::dropped() {
  MutexLock l(&mu_);
  return dropped_;
}

uint64_t Forwarder::sent() {
  MutexLock l(&mu_);
  return sent_;
}

}  // namespace runhcs::events
