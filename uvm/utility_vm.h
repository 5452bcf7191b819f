// UtilityVm: the host side of one utility VM, as the pod-sandbox task and
// hypervisor-isolated tasks see it, and VmConfig, what every hypervisor
// backend takes. NewUtilityVm (factory.cc) is the only code that names a
// backend: a second VMM is one new file beside qemu_vm.cc and one case
// there. Unit tests use FakeUtilityVm.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_annotations.h"
#include "runhcs/diag.pb.h"
#include "runhcs/stats.pb.h"
#include "uvm/agent_client.h"

namespace runhcs::uvm {

// The size a VM gets when its options leave it unset (what a user gets,
// and what benchmarks measure first): 1024 MiB, and the vCPUs of VmCpus.
// DefaultVmCpus: a hardware-accelerated VM's, 2 (1 on a one-core host).
int DefaultVmCpus();
inline constexpr int kDefaultVmMemoryMb = 1024;

// A utility VM's shape, whatever runs it.
struct VmConfig {
  enum class Hypervisor { kQemu };
  // auto: hardware acceleration when it boots in time, else emulation.
  enum class Accel { kAuto, kKvm, kTcg };

  Hypervisor hypervisor = Hypervisor::kQemu;
  std::string boot_dir;   // holds vmlinux, initrd.img and system.img
  std::string state_dir;  // created by Start, removed by Close; must not exist
  int cpus = 1;           // 0: by accelerator (VmCpus)
  int memory_mb = 512;
  Accel accel = Accel::kAuto;
  // auto's memory, shared by every VM on the host: when a KVM boot failed
  // (no agent within the probe timeout, or QEMU exited) and TCG then booted
  // the same VM, the reason is written here, and for `kvm_verdict_ttl` after
  // that (the file's mtime) auto boots TCG straight away instead of trying
  // KVM again. Removing the file (or a host reboot, the file being on tmpfs)
  // makes the next VM try KVM. Empty: every auto VM probes.
  std::string kvm_verdict_file;
  std::chrono::seconds kvm_verdict_ttl{900};
  // TCG's translation cache in MiB (QEMU tb-size); 0 = QEMU's default.
  int tcg_cache_mb = 0;
  // VM templating: when set, the VM does not boot its kernel. The first VM
  // of a shape (size, accelerator, boot files) boots once into a template
  // saved under this directory (a subdirectory per shape; created on first
  // use, serialized between processes by a lock file); every VM of that
  // shape then starts by restoring it (~0.5 s instead of a boot) and gets
  // its own identity (entropy, clock, NIC MACs). A template that fails to
  // restore is discarded and the VM boots instead. Should be on tmpfs.
  std::string template_dir;
  std::string extra_cmdline;
  // Network cards, each on a tap the caller opened (PodNetwork) and keeps
  // open while the VM lives (a boot retried on another accelerator uses it
  // again).
  struct Nic {
    int tap_fd = -1;
    std::string mac;
  };
  std::vector<Nic> nics;
  std::function<void(const std::string&)> console;  // serial output lines
};

// The vCPUs a VM of `cfg` gets on `accel` (kKvm or kTcg): cfg.cpus when
// set, else under KVM DefaultVmCpus() and under TCG 1. QEMU runs all of a
// TCG VM's vCPUs on one host thread (see QemuArgs), so a second one adds
// no compute; measured, it cost 110-310 ms of boot and 270-750 ms of a
// booted pod's start, and the guest would run its low-priority work (the
// runtime warm-up) on it at the real work's host cost.
int VmCpus(const VmConfig& cfg, VmConfig::Accel accel);

// What UtilityVm::OnGone keeps: callbacks that run once, when the VM is
// gone. Thread-safe.
class GoneCallbacks {
 public:
  using Callback = std::function<void(const Status& why)>;
  // Runs `cb` at once, on this thread, if Fire already ran (and returns 0).
  int Add(Callback cb) EXCLUDES(mu_) {
    {
      MutexLock l(&mu_);
      if (!fired_) {
        cbs_.emplace(++next_, std::move(cb));
        return next_;
      }
    }
    cb(why_);
    return 0;
  }
  // After it returns, the callback does not start (it may be running).
  void Cancel(int token) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    cbs_.erase(token);
  }
  // Callbacks waiting to run.
  size_t size() EXCLUDES(mu_) {
    MutexLock l(&mu_);
    return cbs_.size();
  }
  // Runs each callback once, without the lock; later Adds run at once.
  void Fire(const Status& why) EXCLUDES(mu_) {
    std::map<int, Callback> cbs;
    {
      MutexLock l(&mu_);
      if (fired_) return;
      fired_ = true;
      why_ = why;
      cbs.swap(cbs_);
    }
    for (auto& [token, cb] : cbs) cb(why);
  }

 private:
  Mutex mu_;
  bool fired_ GUARDED_BY(mu_) = false;
  Status why_;  // written once, before fired_ is set
  int next_ GUARDED_BY(mu_) = 0;
  std::map<int, Callback> cbs_ GUARDED_BY(mu_);
};

class UtilityVm {
 public:
  virtual ~UtilityVm() = default;

  virtual const std::string& id() const = 0;
  // Boots the VM and returns once its agent answers. FailedPrecondition if
  // already started.
  virtual Status Start() = 0;
  // Blocks until the VM is gone, however it went (Close, crash, kill).
  // Returns the reason as an error if it did not stop through Close. Any
  // number of threads may wait.
  virtual Status Wait() = 0;
  // Wait's answer without a thread that waits: `cb` runs once, with what
  // Wait returns, when the VM is gone (at once, on this thread, if it is
  // already; else on a thread of the VM's, which it must not block). Returns
  // a token for CancelOnGone (0 when it already ran). For what lives
  // shorter than the VM (a pod's container): a waiting thread each would
  // stay for the life of the pod.
  virtual int OnGone(GoneCallbacks::Callback cb) = 0;
  virtual void CancelOnGone(int token) = 0;
  // Stops the VM: graceful first, then forced; returns when it is gone and
  // every resource (process, sockets, shares) is released. Idempotent.
  virtual Status Close() = 0;
  // Kills the VM now, without asking the guest (for a guest that no longer
  // answers): Wait then returns an error that says `why`, as for a crash.
  // Close still releases the rest. No-op unless running.
  virtual void Terminate(const std::string& why) = 0;
  // Runs a process in the VM itself (not in a container); returns its exit
  // code. Stdio fields name host-side pipes or sockets to relay.
  virtual StatusOr<int32_t> ExecInUvm(
      const containerd::runhcs::v1::diag::ExecProcessRequest& req) = 0;
  // Makes `host_path` visible at `vm_path` inside the VM.
  virtual Status Share(const std::string& host_path, const std::string& vm_path,
                       bool read_only) = 0;
  // Ends the Share at `vm_path`: the guest's mount there and the host's
  // (what the guest still holds open stays readable until it lets go).
  // NotFound if nothing is shared there.
  virtual Status Unshare(const std::string& vm_path) {
    return NotImplementedError("unshare {} is not supported", vm_path);
  }
  // The host process that runs the VM (QEMU's pid), 0 when none runs: what
  // the pod sandbox reports to containerd, as Kata does.
  virtual int pid() { return 0; }
  // The guest's stacks, or "" where the guest cannot tell.
  virtual StatusOr<std::string> DumpStacks() = 0;
  virtual StatusOr<containerd::runhcs::stats::v1::VirtualMachineStatistics> Stats() = 0;
  // The guest agent of a running VM (nullptr otherwise, and in fakes). Shared:
  // a caller may keep it past Close; its calls then fail with Unavailable.
  virtual std::shared_ptr<AgentClient> agent() { return nullptr; }
};

// A VM of `cfg`'s hypervisor, not yet started (Start boots it).
std::unique_ptr<UtilityVm> NewUtilityVm(std::string id, const VmConfig& cfg);

// What a VM whose shim died left in `state_dir` (any hypervisor): its
// processes are killed, mounts undone, files and the directory removed. For
// the shim's `delete` action. Idempotent.
void CleanupVmStateDir(const std::string& state_dir);

}  // namespace runhcs::uvm
