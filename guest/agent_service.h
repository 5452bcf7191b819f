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
#include "base/latch.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "oci/runtime.h"
#include "runhcs/agent.ttrpc.h"
#include "ttrpc/server.h"

namespace runhcs::guest {

namespace pb = ::runhcs::agent::v1;

// The outcome of PID 1's setup after the agent starts serving. `status` is
// written once, before `done` opens; read it only after Wait() returned true.
struct GuestSetup {
  Latch done;
  Status status;
};

struct AgentConfig {
  std::string oci_runtime = "crun";
  std::string oci_root = "/run/crun";
  std::string state_dir = "/run/runhcs";
  std::string agent_version;
  std::string cgroup_root = "/sys/fs/cgroup";
  std::string sys_class_net = "/sys/class/net";
  std::string proc_sys = "/proc/sys";
  // Called after Shutdown has answered (PID 1 powers the VM off).
  std::function<void()> on_shutdown;
  // What PID 1 sets up after it starts serving: the system disk (crun,
  // busybox) and the kernel modules for shares, container layers and pod
  // networks. Until it is done, the calls that need them (MountShare,
  // CreatePod, CreateContainer, exec in the VM, PrepareTemplate, Restored)
  // wait (up to their deadline, else kSetupWait) and fail Unavailable past
  // it; if it failed, they fail FailedPrecondition with its error. Null:
  // nothing to wait for.
  std::shared_ptr<GuestSetup> setup;
  // Mounts virtiofs tag `tag` at `where` (a seam for unit tests; null:
  // mount(2)). MountShare and Restored mount each tag once, at
  // <state_dir>/shares/<tag>.
  std::function<Status(const std::string& tag, const std::string& where)> mount_virtiofs;
  // Restored's two writes to the kernel (seams for unit tests; null: the
  // real ones): entropy into the random pool, credited, then a reseed
  // (RNDADDENTROPY, RNDRESEEDCRNG on /dev/urandom); the wall clock
  // (clock_settime CLOCK_REALTIME).
  std::function<Status(const std::string& entropy)> add_entropy;
  std::function<Status(int64_t realtime_ns)> set_realtime;
  // The runtime warm-up (guest/warm_up.h), run by StartWarmUp and after
  // each successful Restored. Null: none.
  std::function<Status()> warm_up;
  // The guest's online CPUs; 0: the kernel's count. With one, there is no
  // warm-up: it pays ahead of time only on a CPU the first container does
  // not need, and on one CPU it competed with it (measured under TCG: a
  // booted pod's start 1604-1722 ms with it, 1417-1450 without).
  int online_cpus = 0;
};

class AgentService : public pb::AgentServer {
 public:
  explicit AgentService(AgentConfig cfg);
  ~AgentService() override;

  void Register(ttrpc::Server* server);

  // Runs AgentConfig::warm_up on a thread of its own, at idle priority,
  // unless it is running already or the guest has one CPU (then this is a
  // no-op). PID 1 calls it once
  // the system disk (crun) is mounted, before the rest of its setup and
  // before opening GuestSetup::done (so a PrepareTemplate the latch lets
  // through finds it running); Restored calls it (a restored VM has nothing
  // translated). PrepareTemplate waits for a running warm-up; so does the
  // destructor.
  void StartWarmUp();

  // runhcs.agent.v1.Agent, one method per RPC. Callable directly (unit tests,
  // fuzzers): the context's deadline bounds the long polls (WaitProcess,
  // ReadStream); without one they wait as long as it takes.
  using Ctx = ttrpc::CallContext;
  Status Ping(const Ctx& ctx, const pb::PingRequest& req, pb::PingResponse* resp) override;
  Status PrepareTemplate(const Ctx& ctx, const pb::Empty& req, pb::Empty* resp) override;
  Status Restored(const Ctx& ctx, const pb::RestoredRequest& req, pb::Empty* resp) override;
  Status CreateContainer(const Ctx& ctx, const pb::CreateContainerRequest& req,
                         pb::Empty* resp) override;
  Status StartContainer(const Ctx& ctx, const pb::StartContainerRequest& req,
                        pb::StartResponse* resp) override;
  Status ExecProcess(const Ctx& ctx, const pb::ExecProcessRequest& req,
                     pb::StartResponse* resp) override;
  Status SignalProcess(const Ctx& ctx, const pb::SignalProcessRequest& req,
                       pb::Empty* resp) override;
  Status WaitProcess(const Ctx& ctx, const pb::WaitProcessRequest& req,
                     pb::WaitProcessResponse* resp) override;
  Status RemoveContainer(const Ctx& ctx, const pb::RemoveContainerRequest& req,
                         pb::Empty* resp) override;
  Status WriteStdin(const Ctx& ctx, const pb::WriteStdinRequest& req,
                    pb::WriteStdinResponse* resp) override;
  Status ReadStream(const Ctx& ctx, const pb::ReadStreamRequest& req,
                    pb::ReadStreamResponse* resp) override;
  Status CloseStdin(const Ctx& ctx, const pb::ProcessId& req, pb::Empty* resp) override;
  Status ResizeTty(const Ctx& ctx, const pb::ResizeTtyRequest& req, pb::Empty* resp) override;
  Status MountShare(const Ctx& ctx, const pb::MountShareRequest& req, pb::Empty* resp) override;
  Status UnmountShare(const Ctx& ctx, const pb::UnmountShareRequest& req, pb::Empty* resp) override;
  Status DumpStacks(const Ctx& ctx, const pb::Empty& req, pb::DumpStacksResponse* resp) override;
  Status Stats(const Ctx& ctx, const pb::Empty& req, pb::StatsResponse* resp) override;
  Status ContainerStats(const Ctx& ctx, const pb::ContainerRequest& req,
                        pb::ContainerStatsResponse* resp) override;
  Status PauseContainer(const Ctx& ctx, const pb::ContainerRequest& req, pb::Empty* resp) override;
  Status ResumeContainer(const Ctx& ctx, const pb::ContainerRequest& req, pb::Empty* resp) override;
  // Long poll bounded by the request's own timeout_ms (see agent.proto).
  Status WaitOom(const Ctx& ctx, const pb::WaitOomRequest& req, pb::WaitOomResponse* resp) override;
  // Answers, then calls AgentConfig::on_shutdown.
  Status Shutdown(const Ctx& ctx, const pb::Empty& req, pb::Empty* resp) override;
  Status UpdateContainer(const Ctx& ctx, const pb::UpdateContainerRequest& req,
                         pb::Empty* resp) override;
  Status CreatePod(const Ctx& ctx, const pb::CreatePodRequest& req,
                   pb::CreatePodResponse* resp) override;

 private:
  struct Process;
  struct Container;
  class RuntimeIo;
  using ProcessPtr = std::shared_ptr<Process>;

  StatusOr<ProcessPtr> Find(const pb::ProcessId& id);
  StatusOr<std::shared_ptr<Container>> FindContainer(const std::string& id);
  StatusOr<pb::StartResponse> ExecInVm(const pb::ExecProcessRequest& req);
  StatusOr<pb::StartResponse> ExecInContainer(const pb::ExecProcessRequest& req);
  // Drops a finished exec (of a container, or VM-level) once its status and
  // output are taken, so its id may be used again (as containerd allows
  // after deleting an exec) and nothing piles up. A container's init goes
  // with its container.
  void MaybeForget(const pb::ProcessId& id);
  // Watches the container's memory cgroup for OOM kills (best effort: a
  // container without a memory controller has none to report).
  void WatchOom(const std::shared_ptr<Container>& c);

  // Mounts `tag` at its share root unless it is mounted there; the root.
  StatusOr<std::string> MountTagRoot(const std::string& tag);
  // Waits for cfg_.setup (see AgentConfig).
  Status WaitForSetup(const ttrpc::CallContext& ctx);

  const AgentConfig cfg_;
  const int64_t started_boot_ns_;
  Mutex mu_;
  std::map<std::string, ProcessPtr> vm_processes_ GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Container>> containers_ GUARDED_BY(mu_);
  // The pod's namespace holder (CreatePod), 0 before; -1 while CreatePod
  // runs.
  pid_t pod_holder_ GUARDED_BY(mu_) = 0;
  CondVar oom_cv_;                        // a container's OOM count, init exit or removal changed
  bool warming_ GUARDED_BY(mu_) = false;  // StartWarmUp's thread runs
  CondVar warm_cv_;                       // warming_ went false
};

}  // namespace runhcs::guest
