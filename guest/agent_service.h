// AgentService: the guest agent's side of runhcs.agent.v1.Agent
// (proto/runhcs/agent.proto), served over TTRPC on the VM's virtio-serial
// port by PID 1 of the utility VM.
//
// Contract (beyond the proto's):
//  - A process is (container_id, exec_id); container_id "" is the VM itself.
//    Ids are unique while their record lives: a reused id is AlreadyExists,
//    an unknown one NotFound.
//  - A process record lives until its container is removed (VM processes:
//    until WaitProcess has returned its status and both output streams
//    reached EOF), so a late ReadStream still drains what is left.
//  - ReadStream returns data as soon as there is some, eof once the stream
//    is closed, and DeadlineExceeded when the request's deadline passes
//    first (the host simply asks again). Output is never buffered in the
//    agent: a host that stops reading stops the process at a full pipe.
//  - Exits come from the process-wide Reaper (the agent is PID 1 in the VM,
//    so every orphan is reaped there).
//  - Containers run with the OCI runtime in the VM (crun), their bundle
//    under `state_dir`/<id>.
//
// Thread-safety: handlers run concurrently; all state is under mu_.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "base/fd.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "oci/runtime.h"
#include "runhcs/agent.pb.h"
#include "ttrpc/server.h"

namespace runhcs::guest {

namespace pb = ::runhcs::agent::v1;

struct AgentConfig {
  std::string oci_runtime = "crun";
  std::string oci_root = "/run/crun";
  std::string state_dir = "/run/runhcs";
  std::string agent_version;
  std::string cgroup_root = "/sys/fs/cgroup";
  // Called after Shutdown has answered (PID 1 powers the VM off).
  std::function<void()> on_shutdown;
};

class AgentService {
 public:
  explicit AgentService(AgentConfig cfg);
  ~AgentService();

  void Register(ttrpc::Server* server);

  // The handlers, callable directly (unit tests).
  StatusOr<pb::PingResponse> Ping();
  Status CreateContainer(const pb::CreateContainerRequest& req);
  StatusOr<pb::StartResponse> StartContainer(const pb::StartContainerRequest& req);
  StatusOr<pb::StartResponse> ExecProcess(const pb::ExecProcessRequest& req);
  Status SignalProcess(const pb::SignalProcessRequest& req);
  StatusOr<pb::WaitProcessResponse> WaitProcess(const pb::WaitProcessRequest& req,
                                                std::optional<ttrpc::Clock::time_point> deadline);
  Status RemoveContainer(const pb::RemoveContainerRequest& req);
  StatusOr<pb::WriteStdinResponse> WriteStdin(const pb::WriteStdinRequest& req);
  StatusOr<pb::ReadStreamResponse> ReadStream(const pb::ReadStreamRequest& req,
                                              std::optional<ttrpc::Clock::time_point> deadline);
  Status CloseStdin(const pb::ProcessId& id);
  Status ResizeTty(const pb::ResizeTtyRequest& req);
  Status MountShare(const pb::MountShareRequest& req);
  StatusOr<pb::DumpStacksResponse> DumpStacks();
  StatusOr<pb::StatsResponse> Stats();
  StatusOr<pb::ContainerStatsResponse> ContainerStats(const pb::ContainerRequest& req);
  Status PauseContainer(const pb::ContainerRequest& req);
  Status ResumeContainer(const pb::ContainerRequest& req);
  StatusOr<pb::WaitOomResponse> WaitOom(const pb::WaitOomRequest& req);

 private:
  struct Process;
  struct Container;
  class RuntimeIo;
  using ProcessPtr = std::shared_ptr<Process>;

  StatusOr<ProcessPtr> Find(const pb::ProcessId& id);
  StatusOr<std::shared_ptr<Container>> FindContainer(const std::string& id);
  StatusOr<pb::StartResponse> ExecInVm(const pb::ExecProcessRequest& req);
  StatusOr<pb::StartResponse> ExecInContainer(const pb::ExecProcessRequest& req);
  // Drops a finished VM-level process once its status and output are taken.
  void MaybeForgetVmProcess(const std::string& exec_id);
  // Watches the container's memory cgroup for OOM kills (best effort: a
  // container without a memory controller has none to report).
  void WatchOom(const std::shared_ptr<Container>& c);

  const AgentConfig cfg_;
  const int64_t started_boot_ns_;
  Mutex mu_;
  std::map<std::string, ProcessPtr> vm_processes_ GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Container>> containers_ GUARDED_BY(mu_);
  CondVar oom_cv_;  // a container's OOM count, init exit or removal changed
};

}  // namespace runhcs::guest
