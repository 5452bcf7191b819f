#include "oci/runtime.h"

#include <signal.h>

#include <poll.h>

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/io.h"
#include "base/reaper.h"
#include "oci/crun_state.h"

namespace runhcs::oci {

namespace {

bool IsCrun(const std::string& binary) { return binary.substr(binary.rfind('/') + 1) == "crun"; }

}  // namespace

Runtime::Runtime(Config cfg, std::string bundle)
    : cfg_(std::move(cfg)),
      bundle_(std::move(bundle)),
      log_path_(bundle_ + "/log.json"),
      crun_(IsCrun(cfg_.binary)) {}

std::string Runtime::DefaultRoot(const std::string& binary, const std::string& ns) {
  return fmt::format("/run/containerd/{}/{}", IsCrun(binary) ? "crun" : "runc", ns);
}

std::string Runtime::LastError() const {
  auto text = ReadFile(log_path_);
  if (!text.ok()) return "";
  std::string last;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t nl = text->find('\n', pos);
    std::string line = text->substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text->size() : nl + 1;
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("level", "") == "error" && j.contains("msg")) last = j["msg"].get<std::string>();
    } catch (const nlohmann::json::exception&) {
      if (!line.empty()) last = line;
    }
  }
  return last;
}

Status Runtime::Run(const std::string& verb, std::vector<std::string> args, const Stdio& io,
                    std::string* out) {
  SpawnOptions so;
  so.argv = {cfg_.binary};
  if (!cfg_.root.empty()) {
    so.argv.push_back("--root");
    so.argv.push_back(cfg_.root);
  }
  so.argv.insert(so.argv.end(), {"--log", log_path_, "--log-format", "json", verb});
  so.argv.insert(so.argv.end(), args.begin(), args.end());
  so.cwd = bundle_;
  so.fixed_address_layout = cfg_.fixed_address_layout;
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  int out_pipe[2] = {-1, -1};
  if (out && ::pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  so.fds = {{0, io.in >= 0 ? io.in : devnull.get()},
            {1, out ? out_w.get() : (io.out >= 0 ? io.out : devnull.get())},
            {2, io.err >= 0 ? io.err : devnull.get()}};
  auto pid = Reaper::Get().Spawn(so);
  if (!pid.ok()) {
    if (pid.status().code() == Code::kNotFound) {
      return NotFoundError("OCI runtime binary {:?} not found", cfg_.binary);
    }
    return pid.status();
  }
  out_w.reset();
  const auto deadline = std::chrono::steady_clock::now() + cfg_.timeout;
  auto timed_out = [&] {
    ::kill(*pid, SIGKILL);
    (void)Reaper::Get().Wait(*pid);
    return DeadlineExceededError("OCI runtime {} did not finish within {} ms: {} killed", verb,
                                 cfg_.timeout.count(), cfg_.binary);
  };
  if (out) {
    std::string text;
    char buf[4096];
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return timed_out();
      pollfd p{out_r.get(), POLLIN, 0};
      int n = ::poll(&p, 1, static_cast<int>(left.count()));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) continue;
      ssize_t r = ::read(out_r.get(), buf, sizeof buf);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      text.append(buf, static_cast<size_t>(r));
    }
    *out = std::move(text);
  }
  auto waited = Reaper::Get().Wait(*pid, deadline);
  if (!waited.ok() && waited.status().code() == Code::kDeadlineExceeded) return timed_out();
  ASSIGN_OR_RETURN(int status, std::move(waited));
  if (status == 0) return OkStatus();
  std::string msg = LastError();
  if (msg.find("hybrid mode") != std::string::npos) {
    return FailedPreconditionError(
        "OCI runtime {} failed: {}: {} refuses this cgroup hybrid host while "
        "/sys/fs/cgroup/unified/cgroup.controllers lists a controller; use runc, or empty that "
        "list (e.g. bind-mount an empty file over it in the shim's mount namespace)",
        verb, msg, cfg_.binary);
  }
  // 128+N is how a death by signal N is encoded (Reaper::ExitStatus).
  std::string how = status > 128 && status < 128 + 65
                        ? fmt::format("exit status {} (signal {})", status, status - 128)
                        : fmt::format("exit status {}", status);
  return UnknownError("OCI runtime {} failed: {}: {} {}", verb, msg.empty() ? "(no log)" : msg,
                      cfg_.binary, how);
}

Status Runtime::Create(const std::string& id, const std::string& pid_file,
                       const std::string& console_socket, const Stdio& io) {
  std::vector<std::string> args = {"--bundle", bundle_, "--pid-file", pid_file};
  if (cfg_.no_pivot) args.push_back("--no-pivot");
  if (!console_socket.empty()) {
    args.push_back("--console-socket");
    args.push_back(console_socket);
  }
  args.push_back(id);
  return Run("create", args, io);
}

Status Runtime::Start(const std::string& id) {
  if (crun_ && cfg_.in_process_start) {
    auto done = crun::ReleaseCreated(cfg_.root, id);
    if (!done.ok()) return done.status().Wrap("OCI runtime start failed");
    if (*done) return OkStatus();
  }
  return Run("start", {id}, {});
}

Status Runtime::Exec(const std::string& id, const std::string& process_json_path,
                     const std::string& pid_file, const std::string& console_socket,
                     const Stdio& io) {
  std::vector<std::string> args = {"--process", process_json_path, "--detach", "--pid-file",
                                   pid_file};
  if (!console_socket.empty()) {
    args.push_back("--console-socket");
    args.push_back(console_socket);
  }
  args.push_back(id);
  return Run("exec", args, io);
}

Status Runtime::Kill(const std::string& id, int signal, bool all) {
  std::vector<std::string> args;
  if (all) args.push_back("--all");
  args.push_back(id);
  args.push_back(std::to_string(signal));
  return Run("kill", args, {});
}

Status Runtime::KillAll(const std::string& id, int signal, const std::string& cgroup_dir) {
  if (crun_ && cfg_.in_process_kill_all) {
    auto done = crun::KillAll(cgroup_dir, signal);
    if (!done.ok()) return done.status().Wrap("OCI runtime kill failed");
    if (*done) return OkStatus();
  }
  return Kill(id, signal, /*all=*/true);
}

Status Runtime::Delete(const std::string& id, bool force) {
  std::vector<std::string> args;
  if (force) args.push_back("--force");
  args.push_back(id);
  return Run("delete", args, {});
}

Status Runtime::DeleteExited(const std::string& id, const std::string& cgroup_dir) {
  if (crun_ && cfg_.in_process_delete) {
    auto done = crun::RemoveExited(cfg_.root, id, cgroup_dir);
    if (!done.ok()) return done.status().Wrap("OCI runtime delete failed");
    if (*done) return OkStatus();
  }
  return Delete(id, /*force=*/true);
}

Status Runtime::Pause(const std::string& id) { return Run("pause", {id}, {}); }
Status Runtime::Resume(const std::string& id) { return Run("resume", {id}, {}); }

Status Runtime::Update(const std::string& id, const std::string& resources_json_path) {
  return Run("update", {"--resources", resources_json_path, id}, {});
}

StatusOr<std::vector<pid_t>> Runtime::Ps(const std::string& id) {
  std::string out;
  RETURN_IF_ERROR(Run("ps", {"--format", "json", id}, {}, &out));
  std::vector<pid_t> pids;
  try {
    auto j = nlohmann::json::parse(out);
    if (j.is_array()) {
      for (const auto& p : j) pids.push_back(p.get<pid_t>());
    }
  } catch (const nlohmann::json::exception& e) {
    return UnknownError("OCI runtime ps: unexpected output: {}", e.what());
  }
  return pids;
}

}  // namespace runhcs::oci
