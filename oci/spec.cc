#include "oci/spec.h"

#include <nlohmann/json.hpp>

#include "base/io.h"

namespace runhcs::oci {

StatusOr<Spec> Spec::Parse(const std::string& json_text) {
  Spec s;
  try {
    auto doc = nlohmann::json::parse(json_text);
    if (!doc.is_object()) return InvalidArgumentError("OCI spec is not a JSON object");
    if (auto it = doc.find("annotations"); it != doc.end() && !it->is_null()) {
      if (!it->is_object()) return InvalidArgumentError("OCI spec annotations is not an object");
      for (auto& [k, v] : it->items()) {
        if (!v.is_string())
          return InvalidArgumentError("OCI spec annotation {:?} is not a string", k);
        s.annotations_[k] = v.get<std::string>();
      }
    }
    if (auto h = doc.find("hostname"); h != doc.end() && h->is_string()) {
      s.hostname_ = h->get<std::string>();
    }
    if (auto l = doc.find("linux"); l != doc.end() && l->is_object()) {
      if (auto ns = l->find("namespaces"); ns != l->end() && ns->is_array()) {
        for (const auto& n : *ns) {
          if (n.is_object()) s.namespaces_[n.value("type", "")] = n.value("path", "");
        }
      }
      if (auto sc = l->find("sysctl"); sc != l->end() && !sc->is_null()) {
        if (!sc->is_object()) return InvalidArgumentError("OCI spec linux.sysctl is not an object");
        for (auto& [k, v] : sc->items()) {
          if (!v.is_string())
            return InvalidArgumentError("OCI spec sysctl {:?} is not a string", k);
          s.sysctls_[k] = v.get<std::string>();
        }
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError("invalid OCI spec: {}", e.what());
  }
  s.text_ = json_text;
  return s;
}

StatusOr<Spec> Spec::Load(const std::string& bundle) {
  std::string path = bundle + "/config.json";
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  auto spec = Parse(*text);
  if (!spec.ok()) return spec.status().Wrap(path);
  return spec;
}

std::string Spec::Annotation(const std::string& key) const {
  auto it = annotations_.find(key);
  return it == annotations_.end() ? "" : it->second;
}

StatusOr<PodRole> PodRoleOf(const Spec& spec, const std::string& id) {
  bool has_type = spec.annotations().count(kContainerTypeAnnotation) > 0;
  std::string type = spec.Annotation(kContainerTypeAnnotation);
  bool has_sandbox = spec.annotations().count(kSandboxIdAnnotation) > 0;
  std::string sandbox = spec.Annotation(kSandboxIdAnnotation);
  if (!has_type) {
    if (has_sandbox) {
      return InvalidArgumentError("cannot specify '{}' without '{}'", kSandboxIdAnnotation,
                                  kContainerTypeAnnotation);
    }
    return PodRole{};
  }
  if (type != "sandbox" && type != "container") {
    return InvalidArgumentError("invalid '{}': {:?}; want 'sandbox' or 'container'",
                                kContainerTypeAnnotation, type);
  }
  if (sandbox.empty()) {
    return InvalidArgumentError("'{}' is required with '{}'", kSandboxIdAnnotation,
                                kContainerTypeAnnotation);
  }
  if (type == "sandbox") {
    if (sandbox != id) {
      return InvalidArgumentError("'{}' {:?} does not match sandbox id {:?}", kSandboxIdAnnotation,
                                  sandbox, id);
    }
    return PodRole{PodRole::kSandbox, sandbox};
  }
  return PodRole{PodRole::kWorkload, sandbox};
}

}  // namespace runhcs::oci
