// Fuzzes the guest agent's request handling: the first byte picks a handler,
// the rest is its request message. Handlers that start host processes
// (ExecProcess), mount (MountShare) or power off (Shutdown) are left out:
// here they would act on the machine running the fuzzer.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "guest/agent_service.h"

namespace pb = runhcs::agent::v1;

namespace {

runhcs::guest::AgentService& Agent() {
  static runhcs::guest::AgentService* svc = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/fuzz-agent-XXXXXX";
    std::string dir = ::mkdtemp(tmpl.data()) ? tmpl : "/tmp/fuzz-agent";
    return new runhcs::guest::AgentService(
        runhcs::guest::AgentConfig{.oci_runtime = "/nonexistent/oci-runtime",
                                   .oci_root = dir + "/root",
                                   .state_dir = dir + "/state",
                                   .cgroup_root = dir + "/cgroup"});
  }();
  return *svc;
}

template <typename Req>
bool Parse(const uint8_t* data, size_t size, Req* req) {
  return req->ParseFromArray(data, static_cast<int>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  auto& a = Agent();
  const uint8_t which = data[0] % 11;
  ++data;
  --size;
  auto now = std::chrono::steady_clock::now();
  switch (which) {
    case 0: {
      pb::CreateContainerRequest r;
      if (Parse(data, size, &r))
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::CreateContainer, r);
      break;
    }
    case 1: {
      pb::StartContainerRequest r;
      if (Parse(data, size, &r))
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::StartContainer, r);
      break;
    }
    case 2: {
      pb::SignalProcessRequest r;
      if (Parse(data, size, &r))
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::SignalProcess, r);
      break;
    }
    case 3: {
      pb::WaitProcessRequest r;
      if (Parse(data, size, &r))
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::WaitProcess, r, now);
      break;
    }
    case 4: {
      pb::WriteStdinRequest r;
      if (Parse(data, size, &r))
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::WriteStdin, r);
      break;
    }
    case 5: {
      pb::ReadStreamRequest r;
      if (Parse(data, size, &r))
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::ReadStream, r, now);
      break;
    }
    case 6: {
      pb::ProcessId r;
      if (Parse(data, size, &r))
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::CloseStdin, r);
      break;
    }
    case 7: {
      pb::ResizeTtyRequest r;
      if (Parse(data, size, &r))
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::ResizeTty, r);
      break;
    }
    case 8: {
      pb::ContainerRequest r;
      if (Parse(data, size, &r)) {
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::ContainerStats, r);
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::PauseContainer, r);
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::ResumeContainer, r);
      }
      break;
    }
    case 9: {
      pb::WaitOomRequest r;
      if (Parse(data, size, &r)) {
        r.set_timeout_ms(0);
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::WaitOom, r);
      }
      break;
    }
    case 10: {
      pb::RemoveContainerRequest r;
      if (Parse(data, size, &r))
        (void)runhcs::ttrpc::CallDirect(&a, &runhcs::guest::AgentService::RemoveContainer, r);
      break;
    }
  }
  return 0;
}
