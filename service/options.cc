#include "service/options.h"

#include <charconv>
#include <initializer_list>

#include <nlohmann/json.hpp>

#include "base/io.h"
#include "containerd/runc/options/oci.pb.h"
#include "containerd/runtimeoptions/v1/api.pb.h"
#include "runhcs/options.pb.h"

namespace runhcs::service {

namespace {

// What the wire format allows but a shim cannot use: a VM size or cache
// size below 0 (0 means the default), a relative template path.
Status CheckOptions(const containerd::runhcs::v1::Options& o) {
  if (o.vm_processor_count() < 0 || o.vm_memory_size_in_mb() < 0 ||
      o.vm_tcg_cache_size_in_mb() < 0) {
    return InvalidArgumentError("negative VM size");
  }
  if (!o.vm_template_path().empty() && o.vm_template_path().front() != '/') {
    return InvalidArgumentError("vmTemplatePath {:?} is not absolute", o.vm_template_path());
  }
  return OkStatus();
}

// Type URLs may carry a host prefix ("type.googleapis.com/x"); compare names.
std::string_view TypeName(std::string_view url) {
  size_t slash = url.rfind('/');
  return slash == std::string_view::npos ? url : url.substr(slash + 1);
}

ShimOptions FromRunhcs(const containerd::runhcs::v1::Options& o) {
  ShimOptions s;
  s.isolation = o.sandbox_isolation() == containerd::runhcs::v1::Options::HYPERVISOR
                    ? ShimOptions::Isolation::kHypervisor
                    : ShimOptions::Isolation::kProcess;
  if (!o.oci_runtime().empty()) s.oci_runtime = o.oci_runtime();
  s.oci_runtime_root = o.oci_runtime_root();
  s.boot_files_path = o.boot_files_root_path();
  s.vm_processors = o.vm_processor_count();
  s.vm_memory_mb = o.vm_memory_size_in_mb();
  s.vm_tcg_cache_mb = o.vm_tcg_cache_size_in_mb();
  s.vm_template_path = o.vm_template_path();
  switch (o.vm_accelerator()) {
    case containerd::runhcs::v1::Options::KVM:
      s.accelerator = ShimOptions::Accelerator::kKvm;
      break;
    case containerd::runhcs::v1::Options::TCG:
      s.accelerator = ShimOptions::Accelerator::kTcg;
      break;
    default:
      s.accelerator = ShimOptions::Accelerator::kAuto;
      break;
  }
  if (o.debug()) s.log_level = "debug";
  if (!o.log_level().empty()) s.log_level = o.log_level();
  s.default_annotations = {o.default_container_annotations().begin(),
                           o.default_container_annotations().end()};
  return s;
}

// Reads an enum given, as protobuf JSON allows, by name or by number.
template <typename E, typename Parse>
bool EnumFromJson(const nlohmann::json& v, Parse parse, E* out) {
  if (v.is_string()) return parse(v.get<std::string>(), out);
  if (v.is_number_integer()) {
    *out = static_cast<E>(v.get<int>());
    return true;
  }
  return false;
}

}  // namespace

StatusOr<containerd::runhcs::v1::Options> OptionsFromJson(std::string_view text) {
  using containerd::runhcs::v1::Options;
  Options o;
  try {
    auto j = nlohmann::json::parse(text);
    if (!j.is_object()) return InvalidArgumentError("not a JSON object");
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string key = it.key();  // (clang 14 cannot capture bindings)
      const nlohmann::json& v = it.value();
      // Protobuf JSON: lowerCamelCase names, the .proto names accepted too.
      auto is = [&](std::string_view camel, std::string_view snake) {
        return key == camel || key == snake;
      };
      if (is("debug", "debug")) {
        o.set_debug(v.get<bool>());
      } else if (is("sandboxImage", "sandbox_image")) {
        o.set_sandbox_image(v.get<std::string>());
      } else if (is("sandboxPlatform", "sandbox_platform")) {
        o.set_sandbox_platform(v.get<std::string>());
      } else if (is("sandboxIsolation", "sandbox_isolation")) {
        Options::SandboxIsolation e;
        if (!EnumFromJson(v, &Options::SandboxIsolation_Parse, &e) ||
            !Options::SandboxIsolation_IsValid(e)) {
          return InvalidArgumentError("{}: {} is not PROCESS or HYPERVISOR", key, v.dump());
        }
        o.set_sandbox_isolation(e);
      } else if (is("bootFilesRootPath", "boot_files_root_path")) {
        o.set_boot_files_root_path(v.get<std::string>());
      } else if (is("vmProcessorCount", "vm_processor_count")) {
        o.set_vm_processor_count(v.get<int32_t>());
      } else if (is("vmMemorySizeInMb", "vm_memory_size_in_mb")) {
        o.set_vm_memory_size_in_mb(v.get<int32_t>());
      } else if (is("defaultContainerScratchSizeInGb", "default_container_scratch_size_in_gb")) {
        o.set_default_container_scratch_size_in_gb(v.get<int32_t>());
      } else if (is("logLevel", "log_level")) {
        o.set_log_level(v.get<std::string>());
      } else if (is("defaultContainerAnnotations", "default_container_annotations")) {
        for (const auto& [k, a] : v.items()) {
          (*o.mutable_default_container_annotations())[k] = a.get<std::string>();
        }
      } else if (is("vmAccelerator", "vm_accelerator")) {
        Options::VmAccelerator e;
        if (!EnumFromJson(v, &Options::VmAccelerator_Parse, &e) ||
            !Options::VmAccelerator_IsValid(e)) {
          return InvalidArgumentError("{}: {} is not AUTO, KVM or TCG", key, v.dump());
        }
        o.set_vm_accelerator(e);
      } else if (is("ociRuntime", "oci_runtime")) {
        o.set_oci_runtime(v.get<std::string>());
      } else if (is("ociRuntimeRoot", "oci_runtime_root")) {
        o.set_oci_runtime_root(v.get<std::string>());
      } else if (is("vmTcgCacheSizeInMb", "vm_tcg_cache_size_in_mb")) {
        o.set_vm_tcg_cache_size_in_mb(v.get<int32_t>());
      } else if (is("vmTemplatePath", "vm_template_path")) {
        o.set_vm_template_path(v.get<std::string>());
      } else {
        return InvalidArgumentError("unknown field {:?}", key);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError("{}", e.what());
  }
  return o;
}

StatusOr<ShimOptions> DecodeOptions(const runhcs::wkt::Any& any) {
  if (any.type_url().empty() && any.value().empty()) return ShimOptions{};
  std::string_view name = TypeName(any.type_url());
  if (name == "containerd.runhcs.v1.Options") {
    containerd::runhcs::v1::Options o;
    if (!o.ParseFromString(any.value())) return InvalidArgumentError("cannot decode {}", name);
    RETURN_IF_ERROR(CheckOptions(o).Wrap(name));
    return FromRunhcs(o);
  }
  if (name == "containerd.runc.v1.Options") {
    containerd::runc::v1::Options o;
    if (!o.ParseFromString(any.value())) return InvalidArgumentError("cannot decode {}", name);
    ShimOptions s;
    if (!o.binary_name().empty()) s.oci_runtime = o.binary_name();
    s.oci_runtime_root = o.root();
    return s;
  }
  if (name == "runtimeoptions.v1.Options") {
    runtimeoptions::v1::Options o;
    if (!o.ParseFromString(any.value())) return InvalidArgumentError("cannot decode {}", name);
    if (o.config_path().empty()) return ShimOptions{};
    auto text = ReadFile(o.config_path());
    if (!text.ok()) return text.status().Wrap("runtime config");
    auto ro = OptionsFromJson(*text);
    if (!ro.ok()) {
      return InvalidArgumentError("runtime config {}: not containerd.runhcs.v1.Options JSON: {}",
                                  o.config_path(), ro.status().message());
    }
    RETURN_IF_ERROR(CheckOptions(*ro).Wrap("runtime config " + o.config_path()));
    return FromRunhcs(*ro);
  }
  return InvalidArgumentError("type with url {:?}: not a supported options type", any.type_url());
}

StatusOr<ShimOptions> DecodeOptionsBytes(std::string_view serialized) {
  if (serialized.empty()) return ShimOptions{};
  runhcs::wkt::Any any;
  if (!any.ParseFromArray(serialized.data(), static_cast<int>(serialized.size()))) {
    return InvalidArgumentError("options are not a serialized google.protobuf.Any");
  }
  return DecodeOptions(any);
}

namespace {

constexpr char kIsolation[] = "io.containerd.runhcs.v1.isolation";
constexpr char kAccelerator[] = "io.containerd.runhcs.v1.vm-accelerator";
constexpr char kCpus[] = "io.containerd.runhcs.v1.vm-cpus";
constexpr char kMemory[] = "io.containerd.runhcs.v1.vm-memory-mb";
constexpr char kHcsCpus[] = "io.microsoft.virtualmachine.computetopology.processor.count";
constexpr char kHcsMemory[] = "io.microsoft.virtualmachine.computetopology.memory.sizeinmb";

// The value of the first of `keys` present, as an integer in [lo, hi];
// 0 when none is present.
StatusOr<int> IntAnnotation(const std::map<std::string, std::string>& a,
                            std::initializer_list<const char*> keys, int lo, int hi) {
  for (const char* k : keys) {
    auto it = a.find(k);
    if (it == a.end()) continue;
    const std::string& v = it->second;
    int n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) {
      return InvalidArgumentError("annotation {}={:?}: want a whole number from {} to {}", k, v, lo,
                                  hi);
    }
    return n;
  }
  return 0;
}

}  // namespace

Status ApplyAnnotations(const std::map<std::string, std::string>& a, ShimOptions* o) {
  if (auto it = a.find(kIsolation); it != a.end()) {
    if (it->second == "hypervisor") {
      o->isolation = ShimOptions::Isolation::kHypervisor;
    } else if (it->second == "process") {
      o->isolation = ShimOptions::Isolation::kProcess;
    } else {
      return InvalidArgumentError("annotation {}={:?}: want process or hypervisor", kIsolation,
                                  it->second);
    }
  }
  if (auto it = a.find(kAccelerator); it != a.end()) {
    if (it->second == "auto") {
      o->accelerator = ShimOptions::Accelerator::kAuto;
    } else if (it->second == "kvm") {
      o->accelerator = ShimOptions::Accelerator::kKvm;
    } else if (it->second == "tcg") {
      o->accelerator = ShimOptions::Accelerator::kTcg;
    } else {
      return InvalidArgumentError("annotation {}={:?}: want auto, kvm or tcg", kAccelerator,
                                  it->second);
    }
  }
  ASSIGN_OR_RETURN(int cpus, IntAnnotation(a, {kCpus, kHcsCpus}, 1, kMaxVmCpus));
  ASSIGN_OR_RETURN(int mem,
                   IntAnnotation(a, {kMemory, kHcsMemory}, kMinVmMemoryMb, kMaxVmMemoryMb));
  if (cpus > 0) o->vm_processors = cpus;
  if (mem > 0) o->vm_memory_mb = mem;
  return OkStatus();
}

}  // namespace runhcs::service
