// Shim and task options: what arrives as a google.protobuf.Any on the
// `start` action's stdin and in CreateTaskRequest.options.
//
// Accepted types (anything else is InvalidArgument, naming the type):
//   containerd.runhcs.v1.Options   this shim's own;
//   containerd.runc.v1.Options     so that `ctr run --runc-binary` works:
//                                  binary_name picks the OCI runtime, root its
//                                  state dir;
//   runtimeoptions.v1.Options      `ctr --runtime-config-path FILE`: FILE holds
//                                  containerd.runhcs.v1.Options as protobuf
//                                  JSON (e.g. {"sandboxIsolation":"HYPERVISOR"}).
// An empty Any (or empty stdin) means the defaults.
#pragma once

#include "runhcs/wkt/any.pb.h"

#include <map>
#include <string>
#include <string_view>

#include "base/status.h"
#include "runhcs/options.pb.h"

namespace runhcs::service {

struct ShimOptions {
  enum class Isolation { kProcess, kHypervisor };
  enum class Accelerator { kAuto, kKvm, kTcg };

  Isolation isolation = Isolation::kProcess;
  std::string oci_runtime = "runc";  // binary name or path
  std::string oci_runtime_root;      // "" = the runtime's default
  std::string boot_files_path;
  int vm_processors = 0;         // 0 = default
  int vm_memory_mb = 0;          // 0 = default
  int vm_tcg_cache_mb = 0;       // 0 = QEMU's default
  std::string vm_template_path;  // "" = VMs boot; else templates kept there
  Accelerator accelerator = Accelerator::kAuto;
  std::string log_level = "info";
  std::map<std::string, std::string> default_annotations;
};

StatusOr<ShimOptions> DecodeOptions(const runhcs::wkt::Any& any);
// The runtime config file: containerd.runhcs.v1.Options as protobuf JSON
// (lowerCamelCase or .proto field names; enums by name or number). Unknown
// fields are InvalidArgument, as protobuf's own JSON parser has them.
StatusOr<containerd::runhcs::v1::Options> OptionsFromJson(std::string_view text);
// `serialized` is a serialized Any (the start action's stdin); "" = defaults.
StatusOr<ShimOptions> DecodeOptionsBytes(std::string_view serialized);

// Annotations on a container's spec (for a pod: the sandbox's, which CRI
// fills from the pod's annotations its `pod_annotations` allows) override
// the options (docs/configuration.md):
//   io.containerd.runhcs.v1.isolation        process | hypervisor
//   io.containerd.runhcs.v1.vm-accelerator   auto | kvm | tcg
//   io.containerd.runhcs.v1.vm-cpus          vCPUs, 1..kMaxVmCpus
//   io.containerd.runhcs.v1.vm-memory-mb     MiB, kMinVmMemoryMb..kMaxVmMemoryMb
//   io.microsoft.virtualmachine.computetopology.processor.count   (hcsshim's name)
//   io.microsoft.virtualmachine.computetopology.memory.sizeinmb   (hcsshim's name)
// The runhcs names win over hcsshim's. A value out of range or not a number
// is InvalidArgument, naming the annotation.
inline constexpr int kMaxVmCpus = 64;
inline constexpr int kMinVmMemoryMb = 128;
inline constexpr int kMaxVmMemoryMb = 1 << 20;
Status ApplyAnnotations(const std::map<std::string, std::string>& annotations, ShimOptions* o);

}  // namespace runhcs::service
