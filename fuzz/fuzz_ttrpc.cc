// Fuzzes the TTRPC frame reader and the server's dispatch: the input is the
// byte stream a client sends. Every frame is read with ReadFrame from a
// memfd, then the whole stream is served by a Server over a socket pair.
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#include "base/fd.h"
#include "base/io.h"
#include "runhcs/wkt/empty.pb.h"
#include "ttrpc/frame.h"
#include "ttrpc/server.h"

namespace {

void ReadAllFrames(const uint8_t* data, size_t size) {
  runhcs::UniqueFd fd(::memfd_create("frames", MFD_CLOEXEC));
  if (!fd ||
      !runhcs::WriteAll(fd.get(), std::string_view(reinterpret_cast<const char*>(data), size)).ok())
    return;
  ::lseek(fd.get(), 0, SEEK_SET);
  for (int i = 0; i < 1000; ++i) {
    runhcs::ttrpc::Frame f;
    runhcs::Status st = runhcs::ttrpc::ReadFrame(fd.get(), &f);
    if (!st.ok() && st.code() != runhcs::Code::kResourceExhausted) break;
  }
}

void Serve(const uint8_t* data, size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  runhcs::UniqueFd client(sv[1]);
  runhcs::ttrpc::Server server;
  server.Register<runhcs::wkt::Empty, runhcs::wkt::Empty>(
      "fuzz.Service", "Echo",
      [](const runhcs::ttrpc::CallContext&, const runhcs::wkt::Empty&, runhcs::wkt::Empty*) {
        return runhcs::OkStatus();
      });
  server.Register<runhcs::wkt::Empty, runhcs::wkt::Empty>(
      "fuzz.Service", "Fail",
      [](const runhcs::ttrpc::CallContext& ctx, const runhcs::wkt::Empty&, runhcs::wkt::Empty*) {
        return runhcs::NotFoundError("no {}", ctx.Metadata("x"));
      });
  server.ServeConnection(runhcs::UniqueFd(sv[0]));
  // Responses are drained so the server never blocks writing them.
  std::thread drain([fd = client.get()] {
    char buf[4096];
    while (::read(fd, buf, sizeof buf) > 0) {
    }
  });
  (void)runhcs::WriteAll(client.get(), std::string_view(reinterpret_cast<const char*>(data), size));
  ::shutdown(client.get(), SHUT_WR);
  server.Shutdown(std::chrono::milliseconds(1000));
  drain.join();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ReadAllFrames(data, size);
  Serve(data, size);
  return 0;
}
