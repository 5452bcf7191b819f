// Microbenchmarks (Google Benchmark): the shim's hot paths in isolation.
#include <benchmark/benchmark.h>
#include <sys/socket.h>

#include "containerd/task/v2/shim.ttrpc.h"
#include "events/publisher.h"
#include "exec/fake_process.h"
#include "exec/process_exec.h"
#include "ttrpc/client.h"
#include "ttrpc/frame.h"
#include "ttrpc/server.h"
#include "ttrpc/ttrpc.pb.h"

namespace runhcs {
namespace {

class NullPublisher : public events::Publisher {
 public:
  void Publish(const google::protobuf::MessageLite&) override {}
};

// A State request as containerd sends it: header, Request envelope, payload.
void BM_FrameEncodeDecode(benchmark::State& state) {
  containerd::task::v2::StateRequest sr;
  sr.set_id("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  for (auto _ : state) {
    ::ttrpc::Request req;
    req.set_service(std::string(containerd::task::v2::TaskClient::kServiceName));
    req.set_method("State");
    req.set_payload(sr.SerializeAsString());
    std::string body = req.SerializeAsString();
    char hdr[ttrpc::kHeaderSize];
    ttrpc::EncodeHeader({static_cast<uint32_t>(body.size()), 1, 1, 0}, hdr);
    ttrpc::FrameHeader h = ttrpc::DecodeHeader(hdr);
    ::ttrpc::Request back;
    back.ParseFromArray(body.data(), static_cast<int>(h.length));
    containerd::task::v2::StateRequest out;
    out.ParseFromString(back.payload());
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_FrameEncodeDecode);

// Created -> Running -> Exited through the state machine, with a fake process.
void BM_ExecStateTransitions(benchmark::State& state) {
  NullPublisher pub;
  for (auto _ : state) {
    auto shared = std::make_shared<exec::FakeProcess::Shared>();
    auto e = exec::ProcessExec::Create({"task", "exec", "", {}},
                                       std::make_unique<exec::FakeProcess>(shared), &pub);
    (void)e->Start();
    exec::FakeProcess::Exit(shared, 0);
    benchmark::DoNotOptimize(e->Wait());
  }
}
BENCHMARK(BM_ExecStateTransitions);

// One State call through an in-process TTRPC server over a socketpair.
void BM_TtrpcRoundTrip(benchmark::State& state) {
  struct StateOnly : containerd::task::v2::TaskServer {
    Status State(const ttrpc::CallContext&, const containerd::task::v2::StateRequest& req,
                 containerd::task::v2::StateResponse* resp) override {
      resp->set_id(req.id());
      resp->set_status(containerd::v1::types::RUNNING);
      return OkStatus();
    }
  } impl;
  ttrpc::Server server;
  containerd::task::v2::RegisterTaskServer(&server, &impl);
  int sv[2];
  ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
  server.ServeConnection(UniqueFd(sv[0]));
  ttrpc::Client client{UniqueFd(sv[1])};
  containerd::task::v2::StateRequest req;
  req.set_id("c1");
  containerd::task::v2::StateResponse resp;
  for (auto _ : state) {
    Status st = containerd::task::v2::TaskClient(&client).State(req, &resp);
    benchmark::DoNotOptimize(st);
  }
  client.Close();
  server.Shutdown();
}
BENCHMARK(BM_TtrpcRoundTrip);

}  // namespace
}  // namespace runhcs

BENCHMARK_MAIN();
