#include "uvm/qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "base/io.h"

namespace runhcs::uvm {

StatusOr<QmpClient> QmpClient::Connect(const std::string& socket_path, Clock::time_point deadline) {
  for (;;) {
    auto c = ConnectUnix(UnixAddress{socket_path, false});
    if (c.ok()) return Handshake(std::move(*c), deadline);
    if (Clock::now() >= deadline) return c.status().Wrap("qmp");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

StatusOr<QmpClient> QmpClient::Handshake(UniqueFd fd, Clock::time_point deadline) {
  QmpClient q(std::move(fd));
  ASSIGN_OR_RETURN(nlohmann::json greeting, q.ReadMessage(deadline));
  if (!greeting.contains("QMP")) {
    return FailedPreconditionError("qmp: expected a greeting, got {}", greeting.dump());
  }
  RETURN_IF_ERROR(q.Execute("qmp_capabilities", nullptr, deadline).status());
  return q;
}

StatusOr<nlohmann::json> QmpClient::ReadMessage(Clock::time_point deadline) {
  for (;;) {
    if (size_t nl = buf_.find('\n'); nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) {
        return InternalError("qmp: not a JSON object: {:?}", line.substr(0, 200));
      }
      return j;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return DeadlineExceededError("qmp: no answer from QEMU in time");
    pollfd p{fd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count() + 1, 60000)));
    if (r < 0 && errno != EINTR) return ErrnoError(errno, "qmp poll");
    if (r <= 0) continue;
    char chunk[4096];
    ssize_t n = ::read(fd_.get(), chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return UnavailableError("qmp: QEMU closed its socket");
    buf_.append(chunk, static_cast<size_t>(n));
  }
}

StatusOr<nlohmann::json> QmpClient::Execute(const std::string& command,
                                            const nlohmann::json& arguments,
                                            Clock::time_point deadline) {
  nlohmann::json req = {{"execute", command}};
  if (!arguments.is_null()) req["arguments"] = arguments;
  if (!fd_.valid()) return FailedPreconditionError("qmp: not connected");
  std::string line = req.dump() + "\n";
  // A QEMU that went away is Unavailable, not SIGPIPE.
  RETURN_IF_ERROR(SendAll(fd_.get(), line, "qmp " + command));
  for (;;) {
    ASSIGN_OR_RETURN(nlohmann::json m, ReadMessage(deadline));
    if (m.contains("event")) {
      Keep(std::move(m));
      continue;
    }
    if (m.contains("error")) {
      const auto& e = m["error"];
      std::string desc = e.is_object() && e.contains("desc") && e["desc"].is_string()
                             ? e["desc"].get<std::string>()
                             : e.dump();
      return FailedPreconditionError("qmp {}: {}", command, desc);
    }
    if (m.contains("return")) return m["return"];
    return InternalError("qmp {}: unexpected answer {}", command, m.dump().substr(0, 200));
  }
}

void QmpClient::Keep(nlohmann::json event) {
  events_.push_back(std::move(event));
  if (events_.size() > kKeptEvents) events_.pop_front();
}

StatusOr<nlohmann::json> QmpClient::WaitEvent(
    const std::string& name, const std::function<bool(const nlohmann::json&)>& match,
    Clock::time_point deadline) {
  auto wanted = [&](const nlohmann::json& e) {
    if (!e.contains("event") || e["event"] != name) return false;
    return !match || match(e);
  };
  for (auto it = events_.begin(); it != events_.end(); ++it) {
    if (wanted(*it)) {
      nlohmann::json e = std::move(*it);
      events_.erase(it);
      return e;
    }
  }
  if (!fd_.valid()) return FailedPreconditionError("qmp: not connected");
  for (;;) {
    auto m = ReadMessage(deadline);
    if (!m.ok()) {
      if (m.status().code() == Code::kDeadlineExceeded)
        return DeadlineExceededError("qmp: no {} event in time", name);
      return m.status();
    }
    if (wanted(*m)) return *m;
    if (m->contains("event")) Keep(std::move(*m));
  }
}

int64_t QmpClient::EventTimeUs(const nlohmann::json& event) {
  auto t = event.value("timestamp", nlohmann::json::object());
  if (!t.is_object()) return 0;
  auto num = [&](const char* k) -> int64_t {
    return t.contains(k) && t[k].is_number_integer() ? t[k].get<int64_t>() : 0;
  };
  return num("seconds") * 1000000 + num("microseconds");
}

}  // namespace runhcs::uvm
