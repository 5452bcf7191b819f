// Runtime: the OCI runtime CLI (runc by default, or crun), one call per
// operation, as containerd-shim-runc-v2 drives it.
//
// Every call runs `<binary> --root R --log <bundle>/log.json --log-format json
// <verb> ...`; on failure the runtime's last error line is taken from that log
// and the Status reads like runc-v2's ("OCI runtime create failed: ...").
// A missing binary is NotFound; one that runs past Config::timeout is
// killed and DeadlineExceeded. crun 1.8 refuses cgroup hybrid hosts whose
// /sys/fs/cgroup/unified/cgroup.controllers lists a controller; that failure
// is reported as FailedPrecondition with the reason spelled out.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/status.h"

namespace runhcs::oci {

class Runtime {
 public:
  static constexpr std::chrono::milliseconds kDefaultTimeout{60000};
  struct Config {
    std::string binary = "runc";
    std::string root;  // --root; "" = the runtime's default
    // create --no-pivot: chroot instead of pivot_root, for a root that
    // cannot be pivoted (the initramfs of a utility VM).
    bool no_pivot = false;
    // Every command is SIGKILLed past this and fails with DeadlineExceeded:
    // a hung runtime never hangs the call (or the shim) with it.
    std::chrono::milliseconds timeout = kDefaultTimeout;
    // Run the runtime binary without address-space randomization
    // (SpawnOptions::fixed_address_layout): what makes each call cheap in a
    // TCG guest. The runtime's children inherit it: the caller gives the
    // container's processes their randomization back (linux.personality).
    bool fixed_address_layout = false;
    // The caller's leave for crun's steps in-process (oci/crun_state.h):
    // start (delete) only for a spec without poststart (poststop) hooks;
    // kill-all for a container on cgroup v2. Taken only when `binary` is
    // crun and `root` is set; Start (DeleteExited, KillAll) then does the
    // step itself when the container is in the shape for it, and runs the
    // runtime otherwise. Saves a runtime process per step.
    bool in_process_start = false;
    bool in_process_delete = false;
    bool in_process_kill_all = false;
  };

  // The process's stdio for create/exec (-1 = /dev/null).
  struct Stdio {
    int in = -1, out = -1, err = -1;
  };

  Runtime(Config cfg, std::string bundle);

  const Config& config() const { return cfg_; }

  Status Create(const std::string& id, const std::string& pid_file,
                const std::string& console_socket, const Stdio& io);
  Status Start(const std::string& id);
  // --detach; the process's pid lands in pid_file.
  Status Exec(const std::string& id, const std::string& process_json_path,
              const std::string& pid_file, const std::string& console_socket, const Stdio& io);
  Status Kill(const std::string& id, int signal, bool all);
  // Kill(id, signal, all=true), in-process for a SIGKILL when
  // Config::in_process_kill_all allows and `cgroup_dir` (the container's
  // cgroup v2 directory, "" = unknown) has cgroup.kill.
  Status KillAll(const std::string& id, int signal, const std::string& cgroup_dir);
  Status Delete(const std::string& id, bool force);
  // Deletes a container whose init the caller has reaped: as Delete(id,
  // force=true), in-process when Config::in_process_delete allows and
  // nothing of the container is left in `cgroup_dir` (its cgroup v2
  // directory, "" = unknown).
  Status DeleteExited(const std::string& id, const std::string& cgroup_dir);
  Status Pause(const std::string& id);
  Status Resume(const std::string& id);
  Status Update(const std::string& id, const std::string& resources_json_path);
  StatusOr<std::vector<pid_t>> Ps(const std::string& id);

  // The default --root for a namespace, as runc-v2 uses it.
  static std::string DefaultRoot(const std::string& binary, const std::string& ns);

 private:
  Status Run(const std::string& verb, std::vector<std::string> args, const Stdio& io,
             std::string* out = nullptr);
  std::string LastError() const;

  const Config cfg_;
  const std::string bundle_;
  const std::string log_path_;
  const bool crun_;  // `binary` is crun (the in_process_* steps are its)
};

}  // namespace runhcs::oci
