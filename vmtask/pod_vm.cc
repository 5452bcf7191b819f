#include "vmtask/pod_vm.h"

#include "base/log.h"
#include "runhcs/agent.pb.h"
#include "vmtask/vm_task.h"

namespace runhcs::vmtask {

namespace apb = ::runhcs::agent::v1;

StatusOr<SandboxShape> ReadSandboxShape(const oci::Spec& spec, const std::string& id) {
  SandboxShape shape;
  shape.hostname = spec.hostname();
  shape.sysctls = spec.sysctls();
  const std::map<std::string, std::string>& nss = spec.namespaces();  // type -> path
  const struct {
    const char* type;
    const char* cri;
  } owned[] = {{"pid", "HostPID"}, {"ipc", "HostIPC"}, {"network", "HostNetwork"}};
  for (const auto& o : owned) {
    auto it = nss.find(o.type);
    if (it == nss.end()) {
      return InvalidArgumentError(
          "pod '{}': a hypervisor-isolated pod cannot share the host's {} namespace ({}); run it "
          "with process isolation",
          id, o.type, o.cri);
    }
    if (!it->second.empty() && std::string(o.type) != "network") {
      return InvalidArgumentError(
          "pod '{}': the {} namespace {} is the host's; a VM pod has its own", id, o.type,
          it->second);
    }
  }
  shape.netns_path = nss.at("network");
  return shape;
}

StatusOr<PodVm> BootPodVm(const oci::Spec& spec, uvm::VmConfig base, const std::string& ns,
                          const std::string& id) {
  ASSIGN_OR_RETURN(SandboxShape shape, ReadSandboxShape(spec, id));
  PodVm pod;
  if (!shape.netns_path.empty()) {
    auto net = net::PodNetwork::Attach(shape.netns_path);
    if (!net.ok()) return net.status().Wrap(fmt::format("pod '{}': network", id));
    pod.network = std::move(net).value();
    for (auto& tap : pod.network->taps()) base.nics.push_back({tap.fd.get(), tap.mac});
  }
  ASSIGN_OR_RETURN(pod.vm, VmTask::BootVm(std::move(base), ns, id));
  apb::CreatePodRequest req;
  req.set_hostname(shape.hostname);
  for (const auto& [k, v] : shape.sysctls) (*req.mutable_sysctls())[k] = v;
  if (pod.network) {
    const net::NetworkConfig& cfg = pod.network->config();
    std::map<std::string, std::string> mac_of;
    for (const auto& i : cfg.interfaces) {
      mac_of[i.name] = i.mac;
      auto* ni = req.add_interfaces();
      ni->set_mac(i.mac);
      ni->set_mtu(static_cast<uint32_t>(i.mtu));
      for (const auto& a : i.addresses) ni->add_addresses(a);
    }
    for (const auto& r : cfg.routes) {
      auto* nr = req.add_routes();
      nr->set_destination(r.destination);
      nr->set_gateway(r.gateway);
      nr->set_interface_mac(mac_of[r.device]);
      nr->set_ipv6(r.ipv6);
    }
  }
  auto agent = pod.vm->agent();
  apb::CreatePodResponse resp;
  Status st = agent
                  ? agent->CreatePod(req, &resp, uvm::AgentClient::Within(std::chrono::seconds(30)))
                  : UnavailableError("the VM's agent is gone");
  if (!st.ok()) {
    (void)pod.vm->Close();
    return st.Wrap(fmt::format("pod '{}': set up in the VM", id));
  }
  spdlog::info("pod {}: VM {} (pid {}), pod namespaces held by guest pid {}, {} interface(s)", id,
               pod.vm->id(), pod.vm->pid(), resp.holder_pid(), req.interfaces_size());
  return pod;
}

}  // namespace runhcs::vmtask
