// The OCI runtime spec of a bundle (config.json), as far as the shim reads
// it. nlohmann::json throws; nothing here lets an exception escape.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "base/status.h"

namespace runhcs::oci {

// Annotations that CRI sets and the shim groups pods by.
inline constexpr char kContainerTypeAnnotation[] = "io.kubernetes.cri.container-type";
inline constexpr char kSandboxIdAnnotation[] = "io.kubernetes.cri.sandbox-id";

class Spec {
 public:
  // Parses config.json text. InvalidArgument on anything that is not a JSON
  // object, or whose "annotations" is not a map of strings.
  static StatusOr<Spec> Parse(const std::string& json_text);
  // Reads and parses `<bundle>/config.json`.
  static StatusOr<Spec> Load(const std::string& bundle);

  const std::map<std::string, std::string>& annotations() const { return annotations_; }
  // The annotation's value, or "".
  std::string Annotation(const std::string& key) const;
  // The raw document (for the runtime driver), re-serialized.
  const std::string& text() const { return text_; }
  // linux.namespaces: type -> path to join, "" for one of its own. A type
  // not listed is the host's.
  const std::map<std::string, std::string>& namespaces() const { return namespaces_; }
  // True when linux.namespaces creates a pid namespace (type "pid", no
  // path). Without one, init's exit does not end the container's other
  // processes: the shim has to (as runc-v2 does).
  bool HasOwnPidNamespace() const {
    auto it = namespaces_.find("pid");
    return it != namespaces_.end() && it->second.empty();
  }
  // The spec's hostname, "" when unset.
  const std::string& hostname() const { return hostname_; }
  // linux.sysctl: key (dotted) -> value.
  const std::map<std::string, std::string>& sysctls() const { return sysctls_; }

 private:
  std::string text_;
  std::string hostname_;
  std::map<std::string, std::string> namespaces_;
  std::map<std::string, std::string> sysctls_;
  std::map<std::string, std::string> annotations_;
};

// How a container takes part in a pod, from the CRI annotations.
struct PodRole {
  enum Kind { kStandalone, kSandbox, kWorkload } kind = kStandalone;
  std::string sandbox_id;
};

// Validates the CRI annotations as the reference shim does: container-type
// must be "sandbox", "container" or absent; sandbox-id is required when the
// type is set and forbidden when it is not; a sandbox's id must be its own
// sandbox-id. InvalidArgument otherwise.
StatusOr<PodRole> PodRoleOf(const Spec& spec, const std::string& id);

}  // namespace runhcs::oci
