#include "tests/cri_stream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>  // before Boost 1.74: asio/awaitable.hpp uses std::exchange unincluded

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

namespace runhcs::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ws = beast::websocket;

// A TCP connection made by a thread that entered `netns_path`: a socket
// stays in the namespace it was made in, whichever thread uses it later.
int ConnectIn(const std::string& netns_path, const std::string& ip, int port, std::string* error) {
  int fd = -1;
  std::thread([&] {
    int ns = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
      *error = "cannot enter " + netns_path;
      if (ns >= 0) ::close(ns);
      return;
    }
    ::close(ns);
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      *error = "cannot connect to " + ip + ":" + std::to_string(port);
      ::close(s);
      return;
    }
    fd = s;
  }).join();
  return fd;
}

class BeastStream : public CriStream {
 public:
  bool Start(int fd, const std::string& host, const std::string& target, std::string* error) {
    beast::error_code ec;
    ws_.next_layer().assign(asio::ip::tcp::v4(), fd, ec);
    if (ec) {
      ::close(fd);
      *error = ec.message();
      return false;
    }
    ws_.set_option(ws::stream_base::decorator([](ws::request_type& req) {
      req.set(beast::http::field::sec_websocket_protocol, "v4.channel.k8s.io");
    }));
    ws::response_type res;
    ws_.handshake(res, host, target, ec);
    if (ec) {
      *error = "websocket upgrade: " + ec.message();
      return false;
    }
    if (res[beast::http::field::sec_websocket_protocol] != "v4.channel.k8s.io") {
      *error = "the server chose subprotocol '" +
               std::string(res[beast::http::field::sec_websocket_protocol]) + "'";
      return false;
    }
    ws_.binary(true);
    // The server reads each frame as a whole message (channel byte first):
    // a fragmented message would lose its continuation frames.
    ws_.auto_fragment(false);
    return true;
  }

  bool SendOn(int channel, std::string_view data) override {
    return Write(static_cast<uint8_t>(channel), data);
  }

  bool Resize(int width, int height) override {
    return Write(4, nlohmann::json{{"Width", width}, {"Height", height}}.dump());
  }

  // A read that outlives `limit` stays pending for the next call: cancelling
  // it would leave the WebSocket failed, and the caller may want to write
  // and read again (ask until an answer comes).
  bool ReadUntil(const std::function<bool()>& done, std::chrono::milliseconds limit) override {
    auto end = std::chrono::steady_clock::now() + limit;
    while (!(done && done())) {
      if (closed) return !done;
      auto left = end - std::chrono::steady_clock::now();
      if (left <= std::chrono::milliseconds(0)) return false;
      if (!reading_) {
        reading_ = true;
        read_done_ = false;
        ws_.async_read(read_buf_, [this](beast::error_code e, size_t) {
          read_ec_ = e;
          read_done_ = true;
        });
      }
      ioc_.restart();
      ioc_.run_for(left);
      if (!read_done_) return false;  // still pending
      reading_ = false;
      if (read_ec_) {
        closed = true;
        continue;
      }
      std::string msg = beast::buffers_to_string(read_buf_.data());
      read_buf_.consume(read_buf_.size());
      if (msg.empty()) continue;
      std::string* to[] = {&data, &out, &err, &status};
      if (msg[0] >= 0 && msg[0] < 4) to[static_cast<int>(msg[0])]->append(msg, 1);
    }
    return true;
  }

  ~BeastStream() override {
    beast::error_code ignored;
    ws_.next_layer().close(ignored);
    // A pending read ends (aborted) before its handler's state goes.
    ioc_.restart();
    ioc_.run();
  }

 private:
  bool Write(uint8_t channel, std::string_view data) {
    std::string msg(1, static_cast<char>(channel));
    msg.append(data);
    beast::error_code ec;
    ws_.write(asio::buffer(msg), ec);
    return !ec;
  }

  asio::io_context ioc_;
  ws::stream<asio::ip::tcp::socket> ws_{ioc_};
  bool reading_ = false;  // an async_read is pending
  bool read_done_ = false;
  beast::error_code read_ec_;
  beast::flat_buffer read_buf_;
};

}  // namespace

std::unique_ptr<CriStream> CriStream::Open(const std::string& netns_path, const std::string& url,
                                           std::string* error) {
  std::smatch m;
  static const std::regex kUrl(R"(^http://([0-9.]+):([0-9]+)(/.*)$)");  // path and query
  if (!std::regex_match(url, m, kUrl)) {
    *error = "not a streaming URL: " + url;
    return nullptr;
  }
  int fd = ConnectIn(netns_path, m[1], std::stoi(m[2]), error);
  if (fd < 0) return nullptr;
  auto s = std::make_unique<BeastStream>();
  if (!s->Start(fd, std::string(m[1]) + ":" + std::string(m[2]), m[3], error)) return nullptr;
  return s;
}

int CriStream::ExitCode() const {
  nlohmann::json j = nlohmann::json::parse(status, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return -1;
  if (j.value("status", "") == "Success") return 0;
  if (j.value("reason", "") != "NonZeroExitCode") return -1;
  if (!j.contains("details") || !j["details"].contains("causes")) return -1;
  for (const auto& c : j["details"]["causes"]) {
    if (c.value("reason", "") == "ExitCode") return std::atoi(c.value("message", "-1").c_str());
  }
  return -1;
}

}  // namespace runhcs::testing
