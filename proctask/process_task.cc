#include "proctask/process_task.h"

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
#include "oci/spec.h"
#include "proctask/runtime_process.h"
#include "stats/oom_watcher.h"

namespace runhcs::proctask {

StatusOr<oci::Runtime::Config> ProcessTask::ReadRuntimeFile(const std::string& bundle) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(bundle + "/runtime"));
  try {
    auto j = nlohmann::json::parse(text);
    return oci::Runtime::Config{j.at("binary").get<std::string>(), j.at("root").get<std::string>()};
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
    RETURN_IF_ERROR(oci::MountAll(req.rootfs, rootfs));
    mounted = true;
  }
  auto unmount = [&] {
    if (mounted) (void)oci::UnmountAll(rootfs);
  };
  oci::Runtime::Config rc = cfg.runtime;
  if (rc.root.empty()) rc.root = oci::Runtime::DefaultRoot(rc.binary, cfg.ns);
  nlohmann::json rf = {{"binary", rc.binary}, {"root", rc.root}};
  Status st = WriteFileAtomic(req.bundle + "/runtime", rf.dump(), 0600);
  if (!st.ok()) {
    unmount();
    return st;
  }
  auto runtime = std::make_shared<oci::Runtime>(rc, req.bundle);
  auto spec = oci::Spec::Load(req.bundle);
  if (!spec.ok()) {
    unmount();
    return spec.status();
  }
  const bool kill_all_on_exit = !spec->HasOwnPidNamespace();
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
  auto read_pid = ReadPidFile(pid_file, fmt::format("container {:?}", req.id));
  if (!st.ok() || !read_pid.ok()) {
    (*io)->Close(std::chrono::milliseconds(0));
    (void)runtime->Delete(req.id, /*force=*/true);
    unmount();
    return st.ok() ? read_pid.status() : st;
  }
  pid_t pid = *read_pid;

  auto task =
      std::make_shared<ProcessTask>(req.id, req.bundle, cfg.ns, runtime, publisher, mounted);
  task->SetInit({req.id, "", req.bundle, req.stdio, static_cast<uint32_t>(pid)},
                RuntimeProcess::ForInit(runtime, req.id, pid, std::move(io).value(),
                                        std::move(expect), kill_all_on_exit));
  task->WatchCgroup(pid);
  publisher->Publish(task::CreateEvent(req, static_cast<uint32_t>(pid)));
  return task;
}

void ProcessTask::WatchCgroup(pid_t pid) {
  auto cg = stats::CgroupsOf(pid);
  if (!cg.ok()) {
    spdlog::warn("task {}: no cgroup to read stats from: {}", id(), cg.status().ToString());
    return;
  }
  {
    MutexLock l(&mu_);
    cgroups_ = *cg;
  }
  std::string dir = stats::MemoryDir(stats::kCgroupRoot, *cg);
  events::Publisher* pub = publisher();
  Status st = stats::OomWatcher::Get().Add(id(), dir, stats::IsUnified(),
                                           [pub, id = id()] { pub->Publish(task::OomEvent(id)); });
  if (!st.ok()) spdlog::warn("task {}: OOM events: {}", id(), st.ToString());
}

ProcessTask::ProcessTask(std::string id, std::string bundle, std::string ns,
                         std::shared_ptr<oci::Runtime> runtime, events::Publisher* publisher,
                         bool mounted)
    : TaskBase(std::move(id), std::move(bundle), std::move(ns), publisher),
      runtime_(std::move(runtime)),
      mounted_(mounted) {}

ProcessTask::~ProcessTask() { stats::OomWatcher::Get().Remove(id()); }

void ProcessTask::KillAll() { (void)runtime_->Kill(id(), SIGKILL, /*all=*/true); }

void ProcessTask::Teardown() {
  // An OOM kill is signalled before the killed process is reaped: report it
  // before the exit it caused. Nothing is left in the cgroup to OOM after.
  stats::OomWatcher::Get().Drain(id());
  stats::OomWatcher::Get().Remove(id());
}

StatusOr<std::unique_ptr<exec::Process>> ProcessTask::NewExecProcess(const task::ExecRequest& req) {
  return std::unique_ptr<exec::Process>(RuntimeProcess::ForExec(
      runtime_, id(), req.exec_id, bundle(), req.process_json, req.stdio, {id(), ns(), bundle()}));
}

Status ProcessTask::KillExec(std::string_view exec_id, uint32_t signal, bool all) {
  if (all && !exec_id.empty()) {
    return FailedPreconditionError("cannot signal all for non-empty exec: '{}'", exec_id);
  }
  ASSIGN_OR_RETURN(auto e, GetExec(exec_id));
  if (all) {
    if (e->state() == exec::State::kExited) return e->Kill(signal);  // NotFound
    return runtime_->Kill(id(), static_cast<int>(signal), /*all=*/true);
  }
  return e->Kill(signal);
}

void ProcessTask::PrepareDelete() {
  // Kills a created-but-never-started container, removes runtime state.
  Status ds = runtime_->Delete(id(), /*force=*/true);
  if (!ds.ok()) spdlog::warn("task {}: {}", id(), ds.ToString());
}

void ProcessTask::FinishDelete() {
  if (mounted_) {
    Status us = oci::UnmountAll(bundle() + "/rootfs");
    if (!us.ok()) spdlog::warn("task {}: {}", id(), us.ToString());
  }
  ::unlink((bundle() + "/runtime").c_str());
}

StatusOr<std::vector<task::ProcessDetails>> ProcessTask::Pids() {
  ASSIGN_OR_RETURN(auto pids, runtime_->Ps(id()));
  std::map<uint32_t, std::string> by_pid;
  for (auto& e : execs().List()) by_pid[e->pid()] = e->id();
  std::vector<task::ProcessDetails> out;
  for (pid_t p : pids) {
    auto it = by_pid.find(static_cast<uint32_t>(p));
    out.push_back({static_cast<uint32_t>(p), it == by_pid.end() ? "" : it->second});
  }
  return out;
}

Status ProcessTask::Pause() {
  if (init()->state() != exec::State::kRunning) {
    return FailedPreconditionError("cannot pause task '{}': not running", id());
  }
  RETURN_IF_ERROR(runtime_->Pause(id()));
  {
    MutexLock l(&mu_);
    paused_ = true;
  }
  publisher()->Publish(task::PausedEvent(id()));
  return OkStatus();
}

Status ProcessTask::Resume() {
  RETURN_IF_ERROR(runtime_->Resume(id()));
  {
    MutexLock l(&mu_);
    paused_ = false;
  }
  publisher()->Publish(task::ResumedEvent(id()));
  return OkStatus();
}

bool ProcessTask::Paused() {
  MutexLock l(&mu_);
  return paused_;
}

Status ProcessTask::Update(const runhcs::wkt::Any& resources) {
  ASSIGN_OR_RETURN(std::string json, task::LinuxResourcesJson(id(), resources));
  std::string path = bundle() + "/.resources.json";
  RETURN_IF_ERROR(WriteFileAtomic(path, json, 0600));
  Status st = runtime_->Update(id(), path);
  ::unlink(path.c_str());
  return st;
}

StatusOr<runhcs::wkt::Any> ProcessTask::Stats() {
  std::optional<stats::ProcessCgroups> cg;
  {
    MutexLock l(&mu_);
    cg = cgroups_;
  }
  if (!cg) return NotFoundError("task '{}' has no cgroup to read stats from", id());
  auto any = stats::ReadMetricsAny(stats::kCgroupRoot, *cg);
  if (!any.ok()) return any.status().Wrap(fmt::format("stats of task '{}'", id()));
  return any;
}

StatusOr<int32_t> ProcessTask::ExecInHost(const containerd::runhcs::v1::diag::ExecProcessRequest&) {
  return task::NotIsolatedError(id());
}

Status ProcessTask::Share(const std::string&, const std::string&, bool) {
  return task::NotIsolatedError(id());
}

}  // namespace runhcs::proctask
