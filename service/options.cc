#include "service/options.h"

#include <google/protobuf/util/json_util.h>

#include "base/io.h"
#include "containerd/runc/options/oci.pb.h"
#include "containerd/runtimeoptions/v1/api.pb.h"
#include "runhcs/options.pb.h"

namespace runhcs::service {

namespace {

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
  switch (o.vm_accelerator()) {
    case containerd::runhcs::v1::Options::KVM: s.accelerator = ShimOptions::Accelerator::kKvm; break;
    case containerd::runhcs::v1::Options::TCG: s.accelerator = ShimOptions::Accelerator::kTcg; break;
    default: s.accelerator = ShimOptions::Accelerator::kAuto; break;
  }
  if (o.debug()) s.log_level = "debug";
  if (!o.log_level().empty()) s.log_level = o.log_level();
  s.default_annotations = {o.default_container_annotations().begin(),
                           o.default_container_annotations().end()};
  return s;
}

}  // namespace

StatusOr<ShimOptions> DecodeOptions(const google::protobuf::Any& any) {
  if (any.type_url().empty() && any.value().empty()) return ShimOptions{};
  std::string_view name = TypeName(any.type_url());
  if (name == "containerd.runhcs.v1.Options") {
    containerd::runhcs::v1::Options o;
    if (!o.ParseFromString(any.value())) return InvalidArgumentError("cannot decode {}", name);
    if (o.vm_processor_count() < 0 || o.vm_memory_size_in_mb() < 0) {
      return InvalidArgumentError("{}: negative VM size", name);
    }
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
    containerd::runhcs::v1::Options ro;
    auto st = google::protobuf::util::JsonStringToMessage(*text, &ro);
    if (!st.ok()) {
      return InvalidArgumentError("runtime config {}: not containerd.runhcs.v1.Options JSON: {}",
                                  o.config_path(), st.ToString());
    }
    return FromRunhcs(ro);
  }
  return InvalidArgumentError("type with url {:?}: not a supported options type", any.type_url());
}

StatusOr<ShimOptions> DecodeOptionsBytes(std::string_view serialized) {
  if (serialized.empty()) return ShimOptions{};
  google::protobuf::Any any;
  if (!any.ParseFromArray(serialized.data(), static_cast<int>(serialized.size()))) {
    return InvalidArgumentError("options are not a serialized google.protobuf.Any");
  }
  return DecodeOptions(any);
}

}  // namespace runhcs::service
