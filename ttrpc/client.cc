#include "ttrpc/client.h"

#include <sys/socket.h>

#include "base/log.h"
#include "ttrpc/frame.h"
#include "ttrpc/ttrpc.pb.h"

namespace runhcs::ttrpc {

Client::Client(UniqueFd fd) : fd_(std::move(fd)) {
  reader_ = std::thread([this] { ReadLoop(); });
}

Client::~Client() {
  Close();
  if (reader_.joinable()) reader_.join();
}

StatusOr<std::unique_ptr<Client>> Client::Dial(const UnixAddress& addr) {
  ASSIGN_OR_RETURN(UniqueFd fd, ConnectUnix(addr));
  return std::make_unique<Client>(std::move(fd));
}

void Client::Close() {
  ::shutdown(fd_.get(), SHUT_RDWR);
  std::vector<Done> failed;
  {
    MutexLock l(&mu_);
    failed = FailAllLocked(UnavailableError("ttrpc: closed"));
  }
  for (auto& d : failed) d(UnavailableError("ttrpc: closed"), "");
}

bool Client::closed() {
  MutexLock l(&mu_);
  return closed_;
}

std::vector<Client::Done> Client::FailAllLocked(const Status& st) {
  closed_ = true;
  std::vector<Done> failed;
  for (auto& [id, p] : pending_) {
    if (p->async) {
      failed.push_back(std::exchange(p->async, nullptr));
    } else if (!p->done) {
      p->done = true;
      p->status = st;
    }
  }
  pending_.clear();
  cv_.SignalAll();
  return failed;
}

void Client::ReadLoop() {
  for (;;) {
    Frame f;
    Status st = ReadFrame(fd_.get(), &f);
    Status result;
    std::string payload;
    if (st.code() == Code::kResourceExhausted) {
      result = st;
    } else if (!st.ok()) {
      std::vector<Done> failed;
      {
        MutexLock l(&mu_);
        failed = FailAllLocked(UnavailableError("ttrpc: closed"));
      }
      for (auto& d : failed) d(UnavailableError("ttrpc: closed"), "");
      return;
    } else if (f.header.type != static_cast<uint8_t>(FrameType::kResponse)) {
      continue;
    } else {
      ::ttrpc::Response resp;
      if (!resp.ParseFromString(f.payload)) {
        result = InternalError("ttrpc: undecodable response on stream {}", f.header.stream_id);
      } else if (resp.has_status() && resp.status().code() != 0) {
        result = Status::FromWire(resp.status().code(), resp.status().message());
      } else {
        payload = std::move(*resp.mutable_payload());
      }
    }
    Done async;
    {
      MutexLock l(&mu_);
      auto it = pending_.find(f.header.stream_id);
      if (it == pending_.end()) continue;  // timed out locally, or unsolicited
      if (it->second->async) {
        async = std::exchange(it->second->async, nullptr);
      } else {
        it->second->done = true;
        it->second->status = std::move(result);
        it->second->payload = std::move(payload);
        cv_.SignalAll();
      }
      pending_.erase(it);
    }
    if (async) async(std::move(result), std::move(payload));
  }
}

std::pair<uint32_t, Status> Client::Send(std::string_view service, std::string_view method,
                                         const std::string& payload, const CallOptions& opts,
                                         std::shared_ptr<Pending> pending) {
  ::ttrpc::Request req;
  req.set_service(std::string(service));
  req.set_method(std::string(method));
  req.set_payload(payload);
  if (opts.timeout.count() > 0) req.set_timeout_nano(opts.timeout.count());
  for (const auto& [k, v] : opts.metadata) {
    auto* kv = req.add_metadata();
    kv->set_key(k);
    kv->set_value(v);
  }
  std::string wire = req.SerializeAsString();
  uint32_t sid;
  {
    MutexLock l(&mu_);
    if (closed_) return {0, UnavailableError("ttrpc: closed")};
    sid = next_stream_;
    next_stream_ += 2;
    pending_[sid] = std::move(pending);
  }
  Status ws;
  {
    MutexLock l(&write_mu_);
    ws = WriteFrame(fd_.get(), sid, FrameType::kRequest, 0, wire);
  }
  if (ws.ok()) return {sid, OkStatus()};
  if (ws.code() != Code::kResourceExhausted) {
    ws = UnavailableError("ttrpc: send {}/{}: {}", service, method, ws.message());
  }
  return {sid, ws};
}

void Client::CallAsync(std::string_view service, std::string_view method,
                       const std::string& payload, Done done, const CallOptions& opts) {
  auto pending = std::make_shared<Pending>();
  pending->async = std::move(done);
  auto [sid, st] = Send(service, method, payload, opts, pending);
  if (st.ok()) return;
  Done d;
  {
    MutexLock l(&mu_);
    // Not sent: ours to fail, unless a close failed it already.
    if (sid != 0) pending_.erase(sid);
    d = std::exchange(pending->async, nullptr);
  }
  if (d) d(st, "");
}

StatusOr<std::string> Client::CallRaw(std::string_view service, std::string_view method,
                                      const std::string& payload, const CallOptions& opts) {
  auto pending = std::make_shared<Pending>();
  auto [sid, ws] = Send(service, method, payload, opts, pending);
  MutexLock l(&mu_);
  if (!ws.ok()) {
    if (sid != 0) pending_.erase(sid);
    return ws;
  }
  auto deadline = std::chrono::steady_clock::now() + opts.timeout;
  while (!pending->done) {
    if (opts.timeout.count() > 0) {
      if (!cv_.WaitUntil(&mu_, deadline) && !pending->done) {
        pending_.erase(sid);
        return DeadlineExceededError("ttrpc: {}/{} timed out", service, method);
      }
    } else {
      cv_.Wait(&mu_);
    }
  }
  if (!pending->status.ok()) return pending->status;
  return std::move(pending->payload);
}

Status Client::Call(std::string_view service, std::string_view method,
                    const google::protobuf::MessageLite& req, google::protobuf::MessageLite* resp,
                    const CallOptions& opts) {
  ASSIGN_OR_RETURN(std::string out, CallRaw(service, method, req.SerializeAsString(), opts));
  if (resp && !resp->ParseFromString(out)) {
    return InternalError("ttrpc: cannot decode {} from {}/{}", resp->GetTypeName(), service,
                         method);
  }
  return OkStatus();
}

}  // namespace runhcs::ttrpc
