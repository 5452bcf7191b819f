#include "uvm/agent_client.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "base/io.h"

namespace runhcs::uvm {

void AgentClient::RelayOutput(const apb::ProcessId& id, apb::ReadStreamRequest::Stream which,
                              int fd) {
  apb::ReadStreamRequest rr;
  *rr.mutable_id() = id;
  rr.set_stream(which);
  for (;;) {
    apb::ReadStreamResponse resp;
    Status st = ReadStream(rr, &resp, Within(kRelayPoll));
    if (st.code() == Code::kDeadlineExceeded) continue;
    if (!st.ok() || resp.eof()) return;
    if (fd >= 0 && !WriteAll(fd, resp.data()).ok()) fd = -1;  // reader gone: drain anyway
  }
}

void AgentClient::RelayStdin(const apb::ProcessId& id, int fd, int stop_fd) {
  char buf[32768];
  for (;;) {
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) break;
    if (p[1].revents) return;  // the process is gone
    if (!p[0].revents) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) break;
    apb::WriteStdinRequest w;
    *w.mutable_id() = id;
    w.set_data(buf, static_cast<size_t>(n));
    apb::WriteStdinResponse wr;
    if (!WriteStdin(w, &wr).ok()) return;
  }
  apb::Empty e;
  (void)CloseStdin(id, &e);
}

StatusOr<int32_t> AgentClient::WaitExit(const apb::ProcessId& id) {
  apb::WaitProcessRequest wr;
  *wr.mutable_id() = id;
  apb::WaitProcessResponse resp;
  Status st;
  do {
    st = WaitProcess(wr, &resp, Within(kRelayPoll));
  } while (st.code() == Code::kDeadlineExceeded);
  RETURN_IF_ERROR(st);
  return resp.exit_status();
}

}  // namespace runhcs::uvm
