// A client of containerd's CRI streaming server: the URL a CRI Exec or Attach
// answers with, spoken as kubelet's API server proxy does over WebSocket with
// Kubernetes' `v4.channel.k8s.io` subprotocol. Every message is one channel
// byte then data: 0 stdin, 1 stdout, 2 stderr, 3 the final status (a JSON
// metav1.Status), 4 a terminal resize (JSON {"Width","Height"}). Port
// forwarding (URL + "?port=N") has channel 0 for data and 1 for errors, each
// opened by the server with the port in 2 bytes.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace runhcs::testing {

class CriStream {
 public:
  // Connects from inside the network namespace at `netns_path` (the
  // streaming server listens on that namespace's loopback) and upgrades.
  // nullptr with `*error` set when either fails.
  static std::unique_ptr<CriStream> Open(const std::string& netns_path, const std::string& url,
                                         std::string* error);
  virtual ~CriStream() = default;

  virtual bool Send(std::string_view stdin_data) { return SendOn(0, stdin_data); }
  // A message on `channel` (port forwarding writes data on channel 0).
  virtual bool SendOn(int channel, std::string_view data) = 0;
  virtual bool Resize(int width, int height) = 0;
  // Reads messages until `done()` holds, the server closes, or `limit`
  // passes; true when `done()` held (or, with no `done`, the server closed).
  // Running out of `limit` leaves the stream usable: write, then read again.
  virtual bool ReadUntil(const std::function<bool()>& done, std::chrono::milliseconds limit) = 0;

  // What arrived so far, per channel.
  std::string out, err, status;
  std::string data;  // channel 0 (port forwarding's data)
  bool closed = false;
  // The exit code the final status carries: 0 for Success, the ExitCode
  // cause for NonZeroExitCode, -1 without a status or for another failure.
  int ExitCode() const;
};

}  // namespace runhcs::testing
