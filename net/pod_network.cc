#include "net/pod_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/command.h"
#include "base/log.h"

namespace runhcs::net {

namespace {

using json = nlohmann::json;

StatusOr<json> ParseArray(const std::string& text, const char* what) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) return json::array();
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array()) {
    return InvalidArgumentError("{}: not iproute2 JSON: {:.80}", what, text);
  }
  return j;
}

std::string Str(const json& o, const char* key) {
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : "";
}

void AddRoutes(const json& routes, bool ipv6, NetworkConfig* cfg) {
  for (const auto& r : routes) {
    if (!r.is_object()) continue;
    std::string dst = Str(r, "dst"), dev = Str(r, "dev");
    // The kernel's own routes come back with the addresses; link-local,
    // multicast and local routes are each side's own.
    std::string type = Str(r, "type");
    if (Str(r, "protocol") == "kernel" || dst.starts_with("fe80") || dst.starts_with("ff") ||
        (!type.empty() && type != "unicast")) {
      continue;
    }
    bool ours = false;
    for (const auto& i : cfg->interfaces) ours = ours || i.name == dev;
    if (!ours || dst.empty()) continue;
    cfg->routes.push_back({dst, Str(r, "gateway"), dev, ipv6});
  }
}

// A thread of its own enters the namespace: setns(CLONE_NEWNET) changes
// only the calling thread, and a tap is created in the namespace of whoever
// opens it.
StatusOr<UniqueFd> OpenTapIn(int netns_fd, const std::string& name, int mtu) {
  Status st;
  UniqueFd tap;
  std::thread t([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      st = ErrnoError(errno, "setns");
      return;
    }
    tap.reset(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    if (!tap.valid()) {
      st = ErrnoError(errno, "open /dev/net/tun");
      return;
    }
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(tap.get(), TUNSETIFF, &ifr) != 0) {
      st = ErrnoError(errno, fmt::format("TUNSETIFF {}", name));
      tap.reset();
      return;
    }
    UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifr.ifr_mtu = mtu;
    if (!sock.valid() || ::ioctl(sock.get(), SIOCSIFMTU, &ifr) != 0) {
      st = ErrnoError(errno, fmt::format("set mtu {} of {}", mtu, name));
      tap.reset();
      return;
    }
    if (::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0) {
      st = ErrnoError(errno, fmt::format("flags of {}", name));
      tap.reset();
      return;
    }
    ifr.ifr_flags |= IFF_UP;
    if (::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0) {
      st = ErrnoError(errno, fmt::format("set {} up", name));
      tap.reset();
    }
  });
  t.join();
  if (!st.ok()) return st;
  return tap;
}

}  // namespace

StatusOr<NetworkConfig> ParseIpJson(const std::string& addrs, const std::string& routes4,
                                    const std::string& routes6) {
  ASSIGN_OR_RETURN(json links, ParseArray(addrs, "ip addr"));
  ASSIGN_OR_RETURN(json r4, ParseArray(routes4, "ip route"));
  ASSIGN_OR_RETURN(json r6, ParseArray(routes6, "ip -6 route"));
  NetworkConfig cfg;
  for (const auto& l : links) {
    if (!l.is_object() || Str(l, "link_type") != "ether") continue;
    Interface i;
    i.name = Str(l, "ifname");
    i.mac = Str(l, "address");
    if (i.name.empty() || i.mac.empty()) continue;
    if (l.contains("mtu") && l["mtu"].is_number_integer()) i.mtu = l["mtu"].get<int>();
    if (l.contains("addr_info") && l["addr_info"].is_array()) {
      for (const auto& a : l["addr_info"]) {
        if (!a.is_object() || !a.contains("prefixlen")) continue;
        std::string fam = Str(a, "family"), local = Str(a, "local");
        if (local.empty() || (fam != "inet" && fam != "inet6")) continue;
        if (fam == "inet6" && Str(a, "scope") != "global") continue;
        i.addresses.push_back(local + "/" + std::to_string(a["prefixlen"].get<int>()));
      }
    }
    cfg.interfaces.push_back(std::move(i));
  }
  AddRoutes(r4, false, &cfg);
  AddRoutes(r6, true, &cfg);
  return cfg;
}

StatusOr<std::unique_ptr<PodNetwork>> PodNetwork::Attach(const std::string& netns_path) {
  UniqueFd ns(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.valid()) return ErrnoError(errno, fmt::format("pod network namespace {}", netns_path));
  std::unique_ptr<PodNetwork> pn(new PodNetwork(netns_path));
  auto addrs = pn->InNamespace({"ip", "-j", "addr", "show"});
  if (!addrs.ok()) {
    return InvalidArgumentError("{} is not a network namespace this host can enter: {}", netns_path,
                                addrs.status().message());
  }
  ASSIGN_OR_RETURN(std::string r4, pn->InNamespace({"ip", "-j", "route", "show"}));
  ASSIGN_OR_RETURN(std::string r6, pn->InNamespace({"ip", "-j", "-6", "route", "show"}));
  ASSIGN_OR_RETURN(pn->config_, ParseIpJson(*addrs, r4, r6));
  for (size_t n = 0; n < pn->config_.interfaces.size(); ++n) {
    const Interface& i = pn->config_.interfaces[n];
    std::string tap_name = fmt::format("tap{}_runhcs", n);
    auto tap = OpenTapIn(ns.get(), tap_name, i.mtu);
    if (!tap.ok()) return tap.status().Wrap(fmt::format("pod interface {}", i.name));
    pn->taps_.push_back({std::move(tap).value(), i.mac});
    Status st = pn->Redirect(i.name, tap_name);
    if (st.ok()) st = pn->Redirect(tap_name, i.name);
    if (!st.ok()) return st.Wrap(fmt::format("pod interface {}: tc redirect", i.name));
  }
  if (!pn->config_.interfaces.empty()) {
    Status st = pn->ForwardLoopback("tap0_runhcs");
    if (!st.ok()) {
      spdlog::warn("pod network {}: no port forwarding into the VM: {}", netns_path, st.ToString());
    }
  }
  spdlog::info("pod network {}: {} interface(s) bridged to taps", netns_path,
               pn->config_.interfaces.size());
  return pn;
}

StatusOr<std::string> PodNetwork::InNamespace(std::vector<std::string> argv) const {
  argv.insert(argv.begin(), {"nsenter", "--net=" + netns_path_});
  return RunCommand(argv);
}

Status PodNetwork::Redirect(const std::string& from, const std::string& to) {
  RETURN_IF_ERROR(
      InNamespace({"tc", "qdisc", "add", "dev", from, "handle", "ffff:", "ingress"}).status());
  if (!from.starts_with("tap")) redirected_.push_back(from);
  return InNamespace({"tc",       "filter", "add",    "dev",      from,  "parent", "ffff:",
                      "protocol", "all",    "u32",    "match",    "u8",  "0",      "0",
                      "action",   "mirred", "egress", "redirect", "dev", to})
      .status();
}

Status PodNetwork::ForwardLoopback(const std::string& tap) {
  const std::string host = kLocalHost, guest = kLocalGuest;
  RETURN_IF_ERROR(
      InNamespace({"ip", "addr", "add", host, "peer", guest + "/32", "dev", tap}).status());
  // Ahead of the redirect (whose priority tc chose: 49152): the pair's
  // packets and the ARP asking for the namespace's side (target address at
  // byte 24) stay here. A match without an action ends classification and
  // lets the packet up (kernels without the gact action have no "pass").
  RETURN_IF_ERROR(
      InNamespace({"tc", "filter", "add", "dev", tap, "parent", "ffff:", "prio", "1", "protocol",
                   "ip", "u32", "match", "ip", "dst", host + "/32", "flowid", "ffff:1"})
          .status());
  in_addr host_addr{};
  ::inet_pton(AF_INET, kLocalHost, &host_addr);
  const std::string host_hex = fmt::format("0x{:08x}", ntohl(host_addr.s_addr));
  RETURN_IF_ERROR(InNamespace({"tc",         "filter", "add",   "dev",    tap,
                               "parent",     "ffff:",  "prio",  "2",      "protocol",
                               "arp",        "u32",    "match", "u32",    host_hex,
                               "0xffffffff", "at",     "24",    "flowid", "ffff:1"})
                      .status());
  // 127.0.0.1 may leave by the tap (after NAT) and come back by it.
  RETURN_IF_ERROR(
      InNamespace({"sysctl", "-q", "-w", "net.ipv4.conf." + tap + ".route_localnet=1"}).status());
  const std::vector<std::vector<std::string>> rules = {
      {"OUTPUT", "-d", "127.0.0.1/32", "-p", "tcp", "-j", "DNAT", "--to-destination", guest},
      {"POSTROUTING", "-o", tap, "-s", "127.0.0.1/32", "-j", "SNAT", "--to-source", host},
  };
  for (const auto& r : rules) {
    std::vector<std::string> argv = {"iptables", "-w", "-t", "nat", "-A"};
    argv.insert(argv.end(), r.begin(), r.end());
    RETURN_IF_ERROR(InNamespace(argv).status());
    nat_rules_.push_back(r);
  }
  config_.interfaces[0].addresses.push_back(guest + "/32");
  config_.routes.push_back({host + "/32", "", config_.interfaces[0].name, false});
  return OkStatus();
}

void PodNetwork::Undo() {
  for (const auto& r : nat_rules_) {
    std::vector<std::string> argv = {"iptables", "-w", "-t", "nat", "-D"};
    argv.insert(argv.end(), r.begin(), r.end());
    auto d = InNamespace(argv);
    if (!d.ok()) spdlog::debug("pod network {}: {}", netns_path_, d.status().ToString());
  }
  nat_rules_.clear();
  for (const auto& dev : redirected_) {
    auto r = InNamespace({"tc", "qdisc", "del", "dev", dev, "handle", "ffff:", "ingress"});
    // The namespace may be gone already (CNI's teardown came first).
    if (!r.ok()) spdlog::debug("pod network {}: {}", netns_path_, r.status().ToString());
  }
  redirected_.clear();
}

PodNetwork::~PodNetwork() { Undo(); }

}  // namespace runhcs::net
