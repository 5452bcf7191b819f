// Fuzzes the OCI spec parser and the CRI pod-role decision made from it.
#include <cstdint>
#include <string>

#include "oci/spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto spec = runhcs::oci::Spec::Parse(std::string(reinterpret_cast<const char*>(data), size));
  if (spec.ok()) {
    (void)runhcs::oci::PodRoleOf(*spec, "c1");
    (void)spec->Annotation("io.containerd.runhcs.v1.isolation");
  }
  return 0;
}
