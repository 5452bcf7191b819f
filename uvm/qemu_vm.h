// QemuUtilityVm: a UtilityVm run by QEMU on this host.
//
//  - Machine: microvm (virtio-mmio, no PCI, no firmware) by default, with
//    `tsc_early_khz` on the kernel command line (without it the kernel hangs
//    about one boot in eight under TCG while calibrating the TSC); q35 on
//    request. -nodefaults; a virtio-net card per VmConfig::nics (tap fds).
//  - Accelerator: tcg, kvm, or auto: KVM first, and TCG when a KVM boot has
//    not reached the agent within `kvm_probe_timeout` (KVM guests can hang at
//    early boot on nested hosts); that outcome is remembered for the host in
//    `kvm_verdict_file`, so the next VMs skip the probe for a while.
//  - The host<->guest channel is the virtio-serial port "runhcs.agent",
//    exposed by QEMU as a unix socket in the VM's state directory; the agent
//    serves TTRPC on it. Start returns once the agent answers Ping.
//  - Shares: one virtiofsd per VM exports `<state>/shares` with tag
//    "runhcs"; each Share bind-mounts a host path under it and asks the agent
//    to mount it at the guest path.
//  - Memory: a virtio-balloon with free page reporting and no target: the
//    guest hands back the 2 MiB blocks it frees, and QEMU drops them from its
//    memfd (a workload's peak does not stay on the host for the VM's life).
//  - The serial console goes to `console` line by line (the shim's log).
//  - Close: agent Shutdown (the guest powers off), then QMP quit, then
//    SIGKILL; then virtiofsd, the share mounts and the state directory go.
//    Wait returns when QEMU is gone; if it went for any reason other than
//    Close (crash, SIGKILL), Wait reports Unavailable with how it ended and
//    the same cleanup runs.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/latch.h"
#include "base/thread_annotations.h"
#include "uvm/agent_client.h"
#include "uvm/utility_vm.h"

namespace runhcs::uvm {

// QEMU's own knobs beside the common VmConfig.
struct QemuConfig : VmConfig {
  enum class Machine { kMicrovm, kQ35 };

  QemuConfig() = default;
  explicit QemuConfig(const VmConfig& common) : VmConfig(common) {}

  std::string qemu = "qemu-system-x86_64";
  std::string virtiofsd = "/usr/lib/qemu/virtiofsd";
  Machine machine = Machine::kMicrovm;
  // 0 = read from the host (sysfs, else /proc/cpuinfo).
  int64_t tsc_khz = 0;
  std::chrono::milliseconds boot_timeout{30000};      // TCG, or KVM when forced
  std::chrono::milliseconds kvm_probe_timeout{6000};  // auto: then TCG

  // How this QEMU starts (set by QemuUtilityVm for templating):
  //  kCold: boots the kernel.
  //  kTemplate: boots the kernel as a template: q35 with hot-plug root ports,
  //    guest RAM shared in `memory_file` (the saved template's memory), and
  //    neither share device nor NICs (vhost-user cannot be saved); the
  //    caller saves it once the agent is ready.
  //  kRestore: the template's machine over `memory_file`, a private copy of
  //    the template's memory, waiting for the saved state (-incoming defer);
  //    the share device's and NICs' backends are on the command line, the
  //    devices are plugged once it runs.
  enum class Mode { kCold, kTemplate, kRestore };
  Mode mode = Mode::kCold;
  std::string memory_file;
};

// Root ports a template machine has for devices plugged after a restore: the
// share device first, then NICs.
inline constexpr int kTemplateRootPorts = 4;

// QEMU's argv for one boot attempt (exposed for unit tests).
std::vector<std::string> QemuArgs(const QemuConfig& cfg, QemuConfig::Accel accel, int64_t tsc_khz);
// virtiofsd's argv for a VM of `cfg`: it listens on <state_dir>/fs.sock
// and exports <state_dir>/shares (exposed for the bench's reference boot).
std::vector<std::string> VirtiofsdArgs(const QemuConfig& cfg);
// The bytes the file behind QEMU `qemu`'s guest RAM holds on the host (its
// memfd, or a restored VM's unlinked copy of its template's memory): what
// the guest touched, less what it gave back. 0 if none is open.
uint64_t GuestRamBytes(pid_t qemu);
// auto's verdict file (VmConfig::kvm_verdict_file): the reason it holds if
// it was written less than `ttl` ago, else nullopt (also when missing or
// unreadable: then KVM is tried).
std::optional<std::string> RecentKvmFailure(const std::string& file, std::chrono::seconds ttl);
// Writes `reason` to the verdict file (atomically; its directory is made).
Status RecordKvmFailure(const std::string& file, const std::string& reason);
// Removes the templates under `root` (but `keep`) that can never be
// restored again: those whose recorded inputs (QEMU and the boot files, by
// identity) no longer match the files, and that no one is making, copying
// or restoring (their locks). Templates without a record are left alone.
// Returns how many went. MakeTemplate runs it after making a template.
int RemoveStaleTemplates(const std::string& root, const std::string& keep);
// The host TSC frequency in kHz, 0 if unknown.
int64_t HostTscKhz();

class QemuUtilityVm : public UtilityVm {
 public:
  QemuUtilityVm(std::string id, QemuConfig cfg);
  ~QemuUtilityVm() override;

  const std::string& id() const override { return id_; }
  Status Start() override;
  Status Wait() override;
  int OnGone(GoneCallbacks::Callback cb) override { return gone_cbs_.Add(std::move(cb)); }
  void CancelOnGone(int token) override { gone_cbs_.Cancel(token); }
  Status Close() override;
  void Terminate(const std::string& why) override;
  StatusOr<int32_t> ExecInUvm(const containerd::runhcs::v1::diag::ExecProcessRequest& req) override;
  Status Share(const std::string& host_path, const std::string& vm_path, bool read_only) override;

  // What a VM whose shim died left in `state_dir`: processes still running
  // from it (QEMU, virtiofsd) are SIGKILLed, share mounts unmounted, files
  // and the directory removed. For the shim's `delete` action. Idempotent.
  static void CleanupStateDir(const std::string& state_dir);
  Status Unshare(const std::string& vm_path) override;
  StatusOr<std::string> DumpStacks() override;
  StatusOr<containerd::runhcs::stats::v1::VirtualMachineStatistics> Stats() override;

  std::shared_ptr<AgentClient> agent() override;
  pid_t qemu_pid();
  int pid() override { return qemu_pid(); }
  // Which accelerator the running VM got.
  QemuConfig::Accel accel();
  // How many times Start launched QEMU (auto: 2 when KVM failed first).
  int boot_attempts();

 private:
  Status Boot(QemuConfig::Accel accel, std::chrono::milliseconds timeout,
              QemuConfig::Mode mode = QemuConfig::Mode::kCold) REQUIRES(start_mu_);
  // Templating: the template of this VM's shape (booted and saved if
  // missing), then this VM from it.
  Status StartFromTemplate() REQUIRES(start_mu_);
  Status MakeTemplate(const std::string& dir);
  // kRestore, once QEMU runs: loads the saved state, resumes, plugs the
  // share device and NICs.
  Status RestoreState(const std::string& template_dir,
                      std::chrono::steady_clock::time_point deadline);
  // On a template VM whose agent is ready: ends the host's agent connection
  // (the agent back to waiting for a host), saves the VM to `state_file`
  // and quits QEMU.
  Status SaveAndQuit(const std::string& state_file);
  Status StartVirtiofsd() REQUIRES(start_mu_);
  void StopVirtiofsd();
  void StopPid(pid_t pid);
  void KillQemuLocked() REQUIRES(mu_);
  void OnQemuExit(int status);
  void Cleanup();

  // Where QEMU's waiter reports its exit; cleared by the destructor.
  struct ExitSink {
    explicit ExitSink(QemuUtilityVm* v) : vm(v) {}
    Mutex mu;
    QemuUtilityVm* vm GUARDED_BY(mu);
  };
  const std::shared_ptr<ExitSink> exit_sink_ = std::make_shared<ExitSink>(this);
  // Unmounts one share mount point and removes it; false if still mounted.
  bool RemoveShareMount(const std::string& target);
  Status QmpQuit();

  const std::string id_;
  const QemuConfig cfg_;
  Mutex start_mu_;  // serializes Start and Close
  Mutex mu_;
  CondVar cv_;
  bool started_ GUARDED_BY(mu_) = false;
  bool closing_ GUARDED_BY(mu_) = false;
  GoneCallbacks gone_cbs_;  // fired once cleaned up, as Wait returns
  bool gone_ GUARDED_BY(mu_) = false;
  bool cleaning_ GUARDED_BY(mu_) = false;
  bool cleaned_ GUARDED_BY(mu_) = false;
  Status exit_ GUARDED_BY(mu_);
  std::string terminated_ GUARDED_BY(mu_);  // Terminate's why, for exit_
  pid_t qemu_pid_ GUARDED_BY(mu_) = 0;
  pid_t virtiofsd_pid_ GUARDED_BY(mu_) = 0;
  int boot_ GUARDED_BY(mu_) = 0;  // attempt number; exits of older ones are ignored
  QemuConfig::Accel accel_ GUARDED_BY(mu_) = QemuConfig::Accel::kTcg;
  std::string template_dir_ GUARDED_BY(start_mu_);  // the template this VM came from
  std::shared_ptr<AgentClient> agent_ GUARDED_BY(mu_);
  // Host mount points under <state>/shares, with the VM path each serves.
  std::vector<std::pair<std::string, std::string>> share_mounts_ GUARDED_BY(mu_);
  int next_share_ GUARDED_BY(mu_) = 0;
};

}  // namespace runhcs::uvm
