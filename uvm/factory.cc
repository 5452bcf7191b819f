// The one place that maps a VmConfig to a hypervisor backend.
#include <thread>

#include "uvm/qemu_vm.h"
#include "uvm/utility_vm.h"

namespace runhcs::uvm {

int DefaultVmCpus() { return std::thread::hardware_concurrency() > 1 ? 2 : 1; }

int VmCpus(const VmConfig& cfg, VmConfig::Accel accel) {
  if (cfg.cpus > 0) return cfg.cpus;
  return accel == VmConfig::Accel::kTcg ? 1 : DefaultVmCpus();
}

std::unique_ptr<UtilityVm> NewUtilityVm(std::string id, const VmConfig& cfg) {
  switch (cfg.hypervisor) {
    case VmConfig::Hypervisor::kQemu:
      break;
  }
  return std::make_unique<QemuUtilityVm>(std::move(id), QemuConfig(cfg));
}

void CleanupVmStateDir(const std::string& state_dir) {
  // Only QEMU so far; a backend that leaves other things behind adds them here.
  QemuUtilityVm::CleanupStateDir(state_dir);
}

}  // namespace runhcs::uvm
