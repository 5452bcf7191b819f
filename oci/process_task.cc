#include "oci/process_task.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "base/io.h"
#include "base/log.h"
#include "containerd/events/task.pb.h"
#include "exec/exec_events.h"
#include "oci/mounts.h"
#include "oci/runtime_process.h"
#include "stats/oom_watcher.h"

namespace runhcs::oci {

namespace {

constexpr auto kExecsDieWithInit = std::chrono::seconds(2);
constexpr auto kDeleteWaitForClose = std::chrono::seconds(30);
constexpr char kLinuxResourcesUrl[] = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

}  // namespace

StatusOr<Runtime::Config> ProcessTask::ReadRuntimeFile(const std::string& bundle) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(bundle + "/runtime"));
  try {
    auto j = nlohmann::json::parse(text);
    return Runtime::Config{j.at("binary").get<std::string>(), j.at("root").get<std::string>()};
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError("{}/runtime: {}", bundle, e.what());
  }
}

StatusOr<std::shared_ptr<ProcessTask>> ProcessTask::Create(const task::CreateRequest& req,
                                                           const Config& cfg,
                                                           events::Publisher* publisher) {
  std::string rootfs = req.bundle + "/rootfs";
  bool mounted = false;
  if (!req.rootfs.empty()) {
    ::mkdir(rootfs.c_str(), 0711);
    RETURN_IF_ERROR(MountAll(req.rootfs, rootfs));
    mounted = true;
  }
  auto unmount = [&] {
    if (mounted) (void)UnmountAll(rootfs);
  };
  Runtime::Config rc = cfg.runtime;
  if (rc.root.empty()) rc.root = Runtime::DefaultRoot(rc.binary, cfg.ns);
  nlohmann::json rf = {{"binary", rc.binary}, {"root", rc.root}};
  Status st = WriteFileAtomic(req.bundle + "/runtime", rf.dump(), 0600);
  if (!st.ok()) {
    unmount();
    return st;
  }
  auto runtime = std::make_shared<Runtime>(rc, req.bundle);
  auto io = stdio::ProcessIo::Open(req.stdio, {req.id, cfg.ns, req.bundle});
  if (!io.ok()) {
    unmount();
    return io.status();
  }
  std::string pid_file = req.bundle + "/init.pid";
  auto expect = Reaper::Get().Expect();
  st = runtime->Create(req.id, pid_file, (*io)->console_socket(),
                       {(*io)->child_stdin(), (*io)->child_stdout(), (*io)->child_stderr()});
  if (!st.ok()) {
    (*io)->Close(std::chrono::milliseconds(0));
    (void)runtime->Delete(req.id, /*force=*/true);
    unmount();
    return st;
  }
  st = (*io)->Started();
  auto pid_text = ReadFile(pid_file);
  pid_t pid = pid_text.ok() ? std::atoi(pid_text->c_str()) : 0;
  if (!st.ok() || pid <= 0) {
    (*io)->Close(std::chrono::milliseconds(0));
    (void)runtime->Delete(req.id, /*force=*/true);
    unmount();
    return st.ok() ? InternalError("runtime wrote no init pid to {}", pid_file) : st;
  }

  auto task = std::make_shared<ProcessTask>(req.id, req.bundle, cfg.ns, runtime, publisher, mounted);
  std::weak_ptr<ProcessTask> weak = task;
  task->init_ = exec::ProcessExec::Create(
      {req.id, "", req.bundle, req.stdio, static_cast<uint32_t>(pid)},
      RuntimeProcess::ForInit(runtime, req.id, pid, std::move(io).value(), std::move(expect)), publisher,
      [weak](const exec::ExecStatus&) {
        if (auto t = weak.lock()) t->OnInitExit();
      });

  task->WatchCgroup(pid);
  publisher->Publish(task::CreateEvent(req, static_cast<uint32_t>(pid)));
  return task;
}

void ProcessTask::WatchCgroup(pid_t pid) {
  auto cg = stats::CgroupsOf(pid);
  if (!cg.ok()) {
    spdlog::warn("task {}: no cgroup to read stats from: {}", id_, cg.status().ToString());
    return;
  }
  {
    MutexLock l(&mu_);
    cgroups_ = *cg;
  }
  std::string dir = stats::MemoryDir(stats::kCgroupRoot, *cg);
  events::Publisher* publisher = publisher_;
  Status st = stats::OomWatcher::Get().Add(id_, dir, stats::IsUnified(), [publisher, id = id_] {
    publisher->Publish(task::OomEvent(id));
  });
  if (!st.ok()) spdlog::warn("task {}: OOM events: {}", id_, st.ToString());
}

ProcessTask::ProcessTask(std::string id, std::string bundle, std::string ns,
                         std::shared_ptr<Runtime> runtime, events::Publisher* publisher,
                         bool mounted)
    : id_(std::move(id)),
      bundle_(std::move(bundle)),
      ns_(std::move(ns)),
      runtime_(std::move(runtime)),
      publisher_(publisher),
      mounted_(mounted) {}

ProcessTask::~ProcessTask() = default;

void ProcessTask::OnInitExit() {
  // Init is gone; its pid namespace takes the execs with it. Make sure, then
  // wait for their exits to be published before init's.
  auto running = execs_.InState(exec::State::kRunning);
  if (!running.empty()) {
    (void)runtime_->Kill(id_, SIGKILL, /*all=*/true);
    auto deadline = std::chrono::steady_clock::now() + kExecsDieWithInit;
    for (auto& e : running) {
      if (!e->Wait(deadline).ok()) e->ForceExit(128 + SIGKILL);
    }
  }
  // An OOM kill is signalled before the killed process is reaped: report it
  // before the exit it caused. Nothing is left in the cgroup to OOM after.
  stats::OomWatcher::Get().Drain(id_);
  stats::OomWatcher::Get().Remove(id_);
  publisher_->Publish(exec::ExitEvent(init_->status(), id_));
  closed_.Open();
}

Status ProcessTask::CreateExec(const task::ExecRequest& req) {
  RETURN_IF_ERROR(task::ValidateNewExecId(req.exec_id));
  if (init_->state() != exec::State::kRunning) {
    return FailedPreconditionError("cannot exec in task '{}': its init is not running", id_);
  }
  try {
    auto j = nlohmann::json::parse(req.process_json);
    if (!j.is_object() || !j.contains("args") || !j["args"].is_array() || j["args"].empty()) {
      return InvalidArgumentError("exec {:?}: process spec has no args", req.exec_id);
    }
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError("exec {:?}: process spec is not JSON: {}", req.exec_id, e.what());
  }
  auto e = exec::ProcessExec::Create(
      {id_, req.exec_id, bundle_, req.stdio, 0},
      RuntimeProcess::ForExec(runtime_, id_, req.exec_id, bundle_, req.process_json, req.stdio,
                              {id_, ns_, bundle_}),
      publisher_);
  RETURN_IF_ERROR(execs_.Add(req.exec_id, e));
  publisher_->Publish(task::ExecAddedEvent(id_, req.exec_id));
  return OkStatus();
}

StatusOr<std::shared_ptr<exec::Exec>> ProcessTask::GetExec(std::string_view exec_id) {
  if (exec_id.empty()) return std::shared_ptr<exec::Exec>(init_);
  ASSIGN_OR_RETURN(auto e, execs_.Get(exec_id));
  return std::shared_ptr<exec::Exec>(std::move(e));
}

std::vector<std::shared_ptr<exec::Exec>> ProcessTask::ListExecs() {
  std::vector<std::shared_ptr<exec::Exec>> out;
  for (auto& e : execs_.List()) out.push_back(e);
  return out;
}

Status ProcessTask::KillExec(std::string_view exec_id, uint32_t signal, bool all) {
  if (all && !exec_id.empty()) {
    return FailedPreconditionError("cannot signal all for non-empty exec: '{}'", exec_id);
  }
  ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
  if (all) {
    if (e->state() == exec::State::kExited) return e->Kill(signal);  // NotFound
    return runtime_->Kill(id_, static_cast<int>(signal), /*all=*/true);
  }
  return e->Kill(signal);
}

StatusOr<exec::ExecStatus> ProcessTask::DeleteExec(std::string_view exec_id) {
  ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
  switch (exec::State st = e->state()) {
    case exec::State::kCreated:
      if (!exec_id.empty()) e->ForceExit(0);
      break;
    case exec::State::kRunning:
      return exec::InvalidStateError(e->id(), id_, exec::StateName(st), "delete");
    case exec::State::kExited:
      break;
  }
  exec::ExecStatus status;
  if (exec_id.empty()) {
    bool created = e->state() == exec::State::kCreated;
    // Kills a created-but-never-started container, removes runtime state.
    Status ds = runtime_->Delete(id_, /*force=*/true);
    if (!ds.ok()) spdlog::warn("task {}: {}", id_, ds.ToString());
    if (created) e->ForceExit(0);
    if (!closed_.Wait(std::chrono::steady_clock::now() + kDeleteWaitForClose)) {
      return DeadlineExceededError("task '{}' did not finish exiting", id_);
    }
    if (mounted_) {
      Status us = UnmountAll(bundle_ + "/rootfs");
      if (!us.ok()) spdlog::warn("task {}: {}", id_, us.ToString());
    }
    ::unlink((bundle_ + "/runtime").c_str());
    status = e->status();
    MutexLock l(&mu_);
    deleted_ = true;
  } else {
    status = e->status();
    execs_.Remove(exec_id);
  }
  publisher_->Publish(exec::DeleteEvent(status));
  return status;
}

StatusOr<std::vector<task::ProcessDetails>> ProcessTask::Pids() {
  ASSIGN_OR_RETURN(auto pids, runtime_->Ps(id_));
  std::map<uint32_t, std::string> by_pid;
  for (auto& e : execs_.List()) by_pid[e->pid()] = e->id();
  std::vector<task::ProcessDetails> out;
  for (pid_t p : pids) {
    auto it = by_pid.find(static_cast<uint32_t>(p));
    out.push_back({static_cast<uint32_t>(p), it == by_pid.end() ? "" : it->second});
  }
  return out;
}

StatusOr<exec::ExecStatus> ProcessTask::Wait(exec::Deadline deadline) {
  if (!closed_.Wait(deadline)) return DeadlineExceededError("wait for task '{}'", id_);
  return init_->status();
}

Status ProcessTask::Pause() {
  if (init_->state() != exec::State::kRunning) {
    return FailedPreconditionError("cannot pause task '{}': not running", id_);
  }
  RETURN_IF_ERROR(runtime_->Pause(id_));
  {
    MutexLock l(&mu_);
    paused_ = true;
  }
  publisher_->Publish(task::PausedEvent(id_));
  return OkStatus();
}

Status ProcessTask::Resume() {
  RETURN_IF_ERROR(runtime_->Resume(id_));
  {
    MutexLock l(&mu_);
    paused_ = false;
  }
  publisher_->Publish(task::ResumedEvent(id_));
  return OkStatus();
}

bool ProcessTask::Paused() {
  MutexLock l(&mu_);
  return paused_;
}

Status ProcessTask::Update(const runhcs::wkt::Any& resources) {
  if (resources.type_url() != kLinuxResourcesUrl) {
    return InvalidArgumentError("update of task '{}': resources of type {:?}; want {}", id_,
                                resources.type_url(), kLinuxResourcesUrl);
  }
  if (!nlohmann::json::accept(resources.value())) {
    return InvalidArgumentError("update of task '{}': resources are not JSON", id_);
  }
  std::string path = bundle_ + "/.resources.json";
  RETURN_IF_ERROR(WriteFileAtomic(path, resources.value(), 0600));
  Status st = runtime_->Update(id_, path);
  ::unlink(path.c_str());
  return st;
}

StatusOr<runhcs::wkt::Any> ProcessTask::Stats() {
  std::optional<stats::ProcessCgroups> cg;
  {
    MutexLock l(&mu_);
    cg = cgroups_;
  }
  if (!cg) return NotFoundError("task '{}' has no cgroup to read stats from", id_);
  auto any = stats::ReadMetricsAny(stats::kCgroupRoot, *cg);
  if (!any.ok()) return any.status().Wrap(fmt::format("stats of task '{}'", id_));
  return any;
}

StatusOr<int32_t> ProcessTask::ExecInHost(const containerd::runhcs::v1::diag::ExecProcessRequest&) {
  return task::NotIsolatedError(id_);
}

Status ProcessTask::Share(const std::string&, const std::string&, bool) {
  return task::NotIsolatedError(id_);
}

}  // namespace runhcs::oci
