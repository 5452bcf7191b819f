// A gRPC client of containerd (the orchestrator's side) for integration tests
// and the benchmark: containers, tasks, the event stream, and an exec burst.
#pragma once

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "base/thread_annotations.h"
#include "containerd/events/task.pb.h"
#include "containerd/services/containers/v1/containers.grpc.pb.h"
#include "containerd/services/events/v1/events.grpc.pb.h"
#include "containerd/services/tasks/v1/tasks.grpc.pb.h"
#include "tests/subprocess.h"

namespace runhcs::testing {

namespace ctrs = containerd::services::containers::v1;
namespace tasks = containerd::services::tasks::v1;
namespace evs = containerd::services::events::v1;

class CtrdClient {
 public:
  CtrdClient(const std::string& sock, std::string ns)
      : ns_(std::move(ns)),
        channel_(grpc::CreateChannel("unix://" + sock, grpc::InsecureChannelCredentials())),
        containers_(ctrs::Containers::NewStub(channel_)),
        tasks_(tasks::Tasks::NewStub(channel_)),
        events_(evs::Events::NewStub(channel_)) {}

  std::unique_ptr<grpc::ClientContext> Ctx(
      std::chrono::seconds timeout = std::chrono::seconds(60)) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("containerd-namespace", ns_);
    ctx->set_deadline(std::chrono::system_clock::now() + timeout);
    return ctx;
  }
  static void Check(const grpc::Status& st, const std::string& what) {
    if (!st.ok()) throw std::runtime_error(what + ": " + st.error_message());
  }
  const std::string& ns() const { return ns_; }
  ctrs::Containers::Stub& containers() { return *containers_; }
  tasks::Tasks::Stub& tasks() { return *tasks_; }
  evs::Events::Stub& events() { return *events_; }

 private:
  std::string ns_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<ctrs::Containers::Stub> containers_;
  std::unique_ptr<tasks::Tasks::Stub> tasks_;
  std::unique_ptr<evs::Events::Stub> events_;
};

// An OCI spec (`runc spec`, made in `dir/spec`) whose root is a busybox
// rootfs built at `dir/rootfs`; null if either fails.
inline nlohmann::json BusyboxSpec(const std::string& dir) {
  std::string scratch = dir + "/spec", rootfs = dir + "/rootfs";
  ::mkdir(scratch.c_str(), 0755);
  if (!MakeBusyboxRootfs(rootfs)) return nullptr;
  if (RunCommand({"runc", "spec", "--bundle", scratch}).exit_code != 0) return nullptr;
  nlohmann::json spec = nlohmann::json::parse(ReadFileOr(scratch + "/config.json"), nullptr, false);
  if (spec.is_discarded()) return nullptr;
  spec["process"]["terminal"] = false;
  spec["root"] = {{"path", rootfs}, {"readonly", false}};
  return spec;
}

// Creates container `id` (`runtime` with `opts`, `spec`) and its task, then
// starts it; `on_created` runs between the two (a benchmark's phase mark).
// Returns the task's init pid.
inline uint32_t CreateAndStart(CtrdClient* c, const std::string& id, const std::string& runtime,
                               const runhcs::wkt::Any& opts, const nlohmann::json& spec,
                               const std::function<void()>& on_created = nullptr) {
  ctrs::CreateContainerRequest cc;
  auto* ct = cc.mutable_container();
  ct->set_id(id);
  ct->mutable_runtime()->set_name(runtime);
  *ct->mutable_runtime()->mutable_options() = opts;
  ct->mutable_spec()->set_type_url("types.containerd.io/opencontainers/runtime-spec/1/Spec");
  ct->mutable_spec()->set_value(spec.dump());
  ctrs::CreateContainerResponse ccr;
  CtrdClient::Check(c->containers().Create(c->Ctx().get(), cc, &ccr), "create container");
  tasks::CreateTaskRequest tc;
  tc.set_container_id(id);
  *tc.mutable_options() = opts;
  tasks::CreateTaskResponse tcr;
  CtrdClient::Check(c->tasks().Create(c->Ctx().get(), tc, &tcr), "create task");
  if (on_created) on_created();
  tasks::StartRequest st;
  st.set_container_id(id);
  tasks::StartResponse str;
  CtrdClient::Check(c->tasks().Start(c->Ctx().get(), st, &str), "start task");
  return tcr.pid();
}

// Task events from containerd's stream, by container: topic and exec id (""
// for the init process and task-wide events).
class TaskEvents {
 public:
  struct Event {
    std::string topic, exec_id;
  };
  explicit TaskEvents(CtrdClient* c) {
    ctx_.AddMetadata("containerd-namespace", c->ns());
    evs::SubscribeRequest req;
    req.add_filters("namespace==" + c->ns());
    reader_ = c->events().Subscribe(&ctx_, req);
    thread_ = std::thread([this] {
      evs::Envelope env;
      while (reader_->Read(&env)) {
        if (env.topic().rfind("/tasks/", 0) != 0) continue;  // containers/... too
        const std::string& v = env.event().value();
        containerd::events::TaskStart any;  // container_id is field 1 of every task event
        any.ParseFromString(v);
        std::string exec_id;
        if (env.topic() == "/tasks/exit") {
          containerd::events::TaskExit e;
          e.ParseFromString(v);
          exec_id = e.id() == e.container_id() ? "" : e.id();
        } else if (env.topic() == "/tasks/exec-started") {
          containerd::events::TaskExecStarted e;
          e.ParseFromString(v);
          exec_id = e.exec_id();
        } else if (env.topic() == "/tasks/exec-added") {
          containerd::events::TaskExecAdded e;
          e.ParseFromString(v);
          exec_id = e.exec_id();
        } else if (env.topic() == "/tasks/delete") {
          containerd::events::TaskDelete e;
          e.ParseFromString(v);
          exec_id = e.id() == e.container_id() ? "" : e.id();
        }
        MutexLock l(&mu_);
        by_id_[any.container_id()].push_back({env.topic(), exec_id});
      }
    });
  }
  ~TaskEvents() {
    ctx_.TryCancel();
    thread_.join();
  }
  std::vector<Event> For(const std::string& id) {
    MutexLock l(&mu_);
    return by_id_[id];
  }
  std::vector<std::string> Topics(const std::string& id) {
    std::vector<std::string> out;
    for (auto& e : For(id)) out.push_back(e.topic);
    return out;
  }
  // How many `topic` events container `id` had for each exec id.
  std::map<std::string, int> Count(const std::string& id, const std::string& topic) {
    std::map<std::string, int> n;
    for (auto& e : For(id)) {
      if (e.topic == topic) ++n[e.exec_id];
    }
    return n;
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<evs::Envelope>> reader_;
  std::thread thread_;
  Mutex mu_;
  std::map<std::string, std::vector<Event>> by_id_ GUARDED_BY(mu_);
};

// Threads of process `pid` (0 if it is gone).
inline int ThreadsOf(pid_t pid) {
  std::string s = ReadFileOr("/proc/" + std::to_string(pid) + "/status");
  size_t at = s.find("\nThreads:");
  return at == std::string::npos ? 0 : std::atoi(s.c_str() + at + 9);
}

// `n` execs into running container `id`, all at once, each on a thread of
// its own: Exec, Start, Wait, Delete of `sh -c "exit i%100"`. Threads of
// `shim_pid` are sampled meanwhile.
struct BurstResult {
  int ok = 0;  // execs whose Wait gave their own exit code
  std::vector<std::string> errors;
  std::vector<double> ms;  // per exec, Exec through Wait
  int peak_threads = 0;
};
inline BurstResult ExecBurst(CtrdClient* c, const std::string& id, const nlohmann::json& process,
                             int n, pid_t shim_pid, const std::string& prefix = "b") {
  BurstResult r;
  Mutex mu;
  std::atomic<bool> done{false};
  std::thread sampler([&] {
    while (!done) {
      int t = ThreadsOf(shim_pid);
      {
        MutexLock l(&mu);
        r.peak_threads = std::max(r.peak_threads, t);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  std::vector<std::thread> ts;
  for (int i = 0; i < n; ++i) {
    ts.emplace_back([&, i] {
      std::string exec_id = prefix + std::to_string(i);
      auto t0 = std::chrono::steady_clock::now();
      try {
        tasks::ExecProcessRequest ex;
        ex.set_container_id(id);
        ex.set_exec_id(exec_id);
        nlohmann::json p = process;
        p["args"] = {"/bin/sh", "-c", "exit " + std::to_string(i % 100)};
        p["terminal"] = false;
        ex.mutable_spec()->set_type_url(
            "types.containerd.io/opencontainers/runtime-spec/1/Process");
        ex.mutable_spec()->set_value(p.dump());
        runhcs::wkt::Empty e;
        CtrdClient::Check(c->tasks().Exec(c->Ctx(std::chrono::seconds(120)).get(), ex, &e), "exec");
        tasks::StartRequest st;
        st.set_container_id(id);
        st.set_exec_id(exec_id);
        tasks::StartResponse str;
        CtrdClient::Check(c->tasks().Start(c->Ctx(std::chrono::seconds(120)).get(), st, &str),
                          "start");
        tasks::WaitRequest w;
        w.set_container_id(id);
        w.set_exec_id(exec_id);
        tasks::WaitResponse wr;
        CtrdClient::Check(c->tasks().Wait(c->Ctx(std::chrono::seconds(120)).get(), w, &wr), "wait");
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                        .count();
        tasks::DeleteProcessRequest d;
        d.set_container_id(id);
        d.set_exec_id(exec_id);
        tasks::DeleteResponse dr;
        CtrdClient::Check(c->tasks().DeleteProcess(c->Ctx(std::chrono::seconds(120)).get(), d, &dr),
                          "delete");
        MutexLock l(&mu);
        if (wr.exit_status() == static_cast<uint32_t>(i % 100)) {
          ++r.ok;
        } else {
          r.errors.push_back(exec_id + ": exit status " + std::to_string(wr.exit_status()));
        }
        r.ms.push_back(ms);
      } catch (const std::exception& ex) {
        MutexLock l(&mu);
        r.errors.push_back(exec_id + ": " + ex.what());
      }
    });
  }
  for (auto& t : ts) t.join();
  done = true;
  sampler.join();
  std::sort(r.ms.begin(), r.ms.end());
  return r;
}

}  // namespace runhcs::testing
