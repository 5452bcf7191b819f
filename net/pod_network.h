// The host side of a hypervisor-isolated pod's network: what CNI put in the
// pod's network namespace reaches the utility VM, the way Kata Containers
// does it ("tcfilter"):
//
//   pod netns:  eth0 (veth, from CNI)  <-- tc redirect, both ways -->  tap
//   VM:         virtio-net on that tap, with eth0's MAC, addresses, MTU
//   guest:      the interface configured from NetworkConfig (agent)
//
// Only Ethernet interfaces are carried; loopback stays in each side. IPv4
// addresses and global IPv6 addresses, and the main table's routes that the
// kernel did not add by itself (those follow from the addresses).
//
// The namespace's own loopback reaches the VM too, for what dials
// localhost:<port> there on the pod's behalf (CRI's PortForward, i.e.
// `kubectl port-forward`): a link-local pair on the first tap
// (kLocalHost in the namespace, kLocalGuest on the guest's first interface),
// tc letting that pair's IPv4 and ARP through to the namespace's stack
// ahead of the redirect, and iptables NAT there from 127.0.0.1 to the guest.
// Without iptables the pod runs and port forwarding to it does not.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/status.h"

namespace runhcs::net {

struct Interface {
  std::string name;  // in the pod's namespace (eth0)
  std::string mac;   // lower case, colon separated
  int mtu = 1500;
  std::vector<std::string> addresses;  // CIDR: "10.88.0.2/24", "fd00::2/64"
};

struct Route {
  std::string destination;  // "default" or CIDR
  std::string gateway;      // "" for a link route
  std::string device;       // an Interface's name
  bool ipv6 = false;
};

inline constexpr char kLocalHost[] = "169.254.73.1";
inline constexpr char kLocalGuest[] = "169.254.73.2";

struct NetworkConfig {
  std::vector<Interface> interfaces;
  std::vector<Route> routes;
};

// Parses `ip -j addr show`, `ip -j route show` and `ip -j -6 route show`
// (iproute2's JSON) into what the guest needs (exposed for unit tests).
// InvalidArgument when the text is not iproute2's JSON.
StatusOr<NetworkConfig> ParseIpJson(const std::string& addrs, const std::string& routes4,
                                    const std::string& routes6);

// One pod network namespace bridged to taps for a VM. Attach does the work;
// destroying the object undoes the tc redirects (the taps go when the last
// of their fds closes: this object's and the VM's).
class PodNetwork {
 public:
  struct Tap {
    UniqueFd fd;      // /dev/net/tun attached to the tap, for the VM
    std::string mac;  // the VM's NIC takes the pod interface's MAC
  };

  // Reads the interfaces of the network namespace at `netns_path` (a
  // bind-mounted nsfs file, as CNI and containerd make) and bridges each to
  // a new tap there. NotFound if the path is not there; InvalidArgument if it
  // is not a network namespace; the tool's error otherwise. On error nothing
  // is left behind.
  static StatusOr<std::unique_ptr<PodNetwork>> Attach(const std::string& netns_path);
  ~PodNetwork();

  const NetworkConfig& config() const { return config_; }
  std::vector<Tap>& taps() { return taps_; }

 private:
  explicit PodNetwork(std::string netns_path) : netns_path_(std::move(netns_path)) {}
  // Runs argv inside the pod's network namespace (nsenter); its stdout.
  StatusOr<std::string> InNamespace(std::vector<std::string> argv) const;
  Status Redirect(const std::string& from, const std::string& to);
  // The loopback path above, on `tap`; adds the guest's side to config_.
  Status ForwardLoopback(const std::string& tap);
  void Undo();

  const std::string netns_path_;
  NetworkConfig config_;
  std::vector<Tap> taps_;
  std::vector<std::string> redirected_;              // pod interfaces with our ingress qdisc
  std::vector<std::vector<std::string>> nat_rules_;  // iptables -t nat rules added (-A argv)
};

}  // namespace runhcs::net
