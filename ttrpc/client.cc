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
  MutexLock l(&mu_);
  FailAllLocked(UnavailableError("ttrpc: closed"));
}

bool Client::closed() {
  MutexLock l(&mu_);
  return closed_;
}

void Client::FailAllLocked(const Status& st) {
  closed_ = true;
  for (auto& [id, p] : pending_) {
    if (!p->done) {
      p->done = true;
      p->status = st;
    }
  }
  pending_.clear();
  cv_.SignalAll();
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
      MutexLock l(&mu_);
      FailAllLocked(UnavailableError("ttrpc: closed"));
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
    MutexLock l(&mu_);
    auto it = pending_.find(f.header.stream_id);
    if (it == pending_.end()) continue;  // timed out locally, or unsolicited
    it->second->done = true;
    it->second->status = std::move(result);
    it->second->payload = std::move(payload);
    pending_.erase(it);
    cv_.SignalAll();
  }
}

StatusOr<std::string> Client::CallRaw(std::string_view service, std::string_view method,
                                      const std::string& payload, const CallOptions& opts) {
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
  auto pending = std::make_shared<Pending>();
  uint32_t sid;
  {
    MutexLock l(&mu_);
    if (closed_) return UnavailableError("ttrpc: closed");
    sid = next_stream_;
    next_stream_ += 2;
    pending_[sid] = pending;
  }
  Status ws;
  {
    MutexLock l(&write_mu_);
    ws = WriteFrame(fd_.get(), sid, FrameType::kRequest, 0, wire);
  }
  MutexLock l(&mu_);
  if (!ws.ok()) {
    pending_.erase(sid);
    if (ws.code() == Code::kResourceExhausted) return ws;
    return UnavailableError("ttrpc: send {}/{}: {}", service, method, ws.message());
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
