#include "guest/netlink.h"

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace runhcs::guest {

namespace {

constexpr size_t kMsgSize = 512;

// A request being built: the header, the family's fixed part, attributes.
struct Msg {
  alignas(nlmsghdr) char buf[kMsgSize] = {};

  nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf); }
  template <typename T>
  T* Start(uint16_t type, uint16_t flags) {
    hdr()->nlmsg_type = type;
    hdr()->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    hdr()->nlmsg_len = NLMSG_LENGTH(sizeof(T));
    return reinterpret_cast<T*>(NLMSG_DATA(hdr()));
  }
  void Attr(uint16_t type, const void* data, size_t len) {
    // Fixed attributes of a few bytes each: far below kMsgSize.
    auto* rta = reinterpret_cast<rtattr*>(buf + NLMSG_ALIGN(hdr()->nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
    std::memcpy(RTA_DATA(rta), data, len);
    hdr()->nlmsg_len = NLMSG_ALIGN(hdr()->nlmsg_len) + RTA_ALIGN(rta->rta_len);
  }
};

struct Address {
  int family = AF_UNSPEC;
  unsigned char bytes[16] = {};
  size_t len() const { return family == AF_INET6 ? 16 : 4; }
};

StatusOr<Address> ParseAddress(const std::string& text, int family) {
  Address a;
  a.family = family;
  if (::inet_pton(family, text.c_str(), a.bytes) != 1) {
    return InvalidArgumentError("{:?} is not an IPv{} address", text, family == AF_INET6 ? 6 : 4);
  }
  return a;
}

// "address/prefix" of `family`.
StatusOr<std::pair<Address, int>> ParseCidr(const std::string& cidr, int family) {
  auto slash = cidr.find('/');
  if (slash == std::string::npos) return InvalidArgumentError("{:?} has no /prefix", cidr);
  std::string addr = cidr.substr(0, slash), prefix = cidr.substr(slash + 1);
  ASSIGN_OR_RETURN(Address a, ParseAddress(addr, family));
  const int max = family == AF_INET6 ? 128 : 32;
  int len = -1;
  if (!prefix.empty() && prefix.size() <= 3 &&
      prefix.find_first_not_of("0123456789") == std::string::npos) {
    len = std::stoi(prefix);
  }
  if (len < 0 || len > max) return InvalidArgumentError("{:?}: bad prefix length", cidr);
  return std::make_pair(a, len);
}

StatusOr<int> IfIndex(const std::string& dev) {
  unsigned idx = dev.size() < IFNAMSIZ ? ::if_nametoindex(dev.c_str()) : 0;
  if (idx == 0) return NotFoundError("no network interface {:?}", dev);
  return static_cast<int>(idx);
}

}  // namespace

StatusOr<Rtnetlink> Rtnetlink::Open() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return ErrnoError(errno, "netlink socket");
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    return ErrnoError(errno, "bind the netlink socket");
  }
  return Rtnetlink(std::move(fd));
}

Status Rtnetlink::Request(void* buf, const std::string& what) {
  auto* h = static_cast<nlmsghdr*>(buf);
  h->nlmsg_seq = ++seq_;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  ssize_t n;
  do {
    n = ::sendto(fd_.get(), buf, h->nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel),
                 sizeof kernel);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ErrnoError(errno, what + ": netlink send");
  alignas(nlmsghdr) char reply[4096];
  for (;;) {
    do {
      n = ::recv(fd_.get(), reply, sizeof reply, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return ErrnoError(errno, what + ": netlink receive");
    // The messages in the datagram (NLMSG_OK and NLMSG_NEXT, without their
    // signed/unsigned comparisons).
    const size_t size = static_cast<size_t>(n);
    for (size_t off = 0; off + sizeof(nlmsghdr) <= size;) {
      auto* r = reinterpret_cast<nlmsghdr*>(reply + off);
      if (r->nlmsg_len < sizeof(nlmsghdr) || r->nlmsg_len > size - off) break;
      off += NLMSG_ALIGN(r->nlmsg_len);
      if (r->nlmsg_seq != seq_) continue;  // an earlier request's late answer
      if (r->nlmsg_type != NLMSG_ERROR) continue;
      if (r->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) {
        return InternalError("{}: short netlink acknowledgement", what);
      }
      int err = -static_cast<nlmsgerr*>(NLMSG_DATA(r))->error;
      return err == 0 ? OkStatus() : ErrnoError(err, what);
    }
  }
}

Status Rtnetlink::LinkUp(const std::string& dev) {
  ASSIGN_OR_RETURN(int idx, IfIndex(dev));
  Msg m;
  auto* ifi = m.Start<ifinfomsg>(RTM_NEWLINK, 0);
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = idx;
  ifi->ifi_flags = IFF_UP;
  ifi->ifi_change = IFF_UP;
  return Request(m.buf, "ip link set dev " + dev + " up");
}

Status Rtnetlink::SetMtu(const std::string& dev, uint32_t mtu) {
  ASSIGN_OR_RETURN(int idx, IfIndex(dev));
  Msg m;
  auto* ifi = m.Start<ifinfomsg>(RTM_NEWLINK, 0);
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = idx;
  m.Attr(IFLA_MTU, &mtu, sizeof mtu);
  return Request(m.buf, "ip link set dev " + dev + " mtu " + std::to_string(mtu));
}

Status Rtnetlink::AddAddress(const std::string& dev, const std::string& cidr) {
  const bool v6 = cidr.find(':') != std::string::npos;
  std::string what = std::string("ip ") + (v6 ? "-6 " : "") + "addr add " + cidr + " dev " + dev;
  auto parsed = ParseCidr(cidr, v6 ? AF_INET6 : AF_INET);
  if (!parsed.ok()) return parsed.status().Wrap(what);
  auto [addr, prefix] = *parsed;
  ASSIGN_OR_RETURN(int idx, IfIndex(dev));
  Msg m;
  auto* ifa = m.Start<ifaddrmsg>(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  ifa->ifa_family = static_cast<uint8_t>(addr.family);
  ifa->ifa_prefixlen = static_cast<uint8_t>(prefix);
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  ifa->ifa_index = static_cast<uint32_t>(idx);
  // As ip(8) sends it: the local address, and the same as the (peer)
  // address of a link that is not point-to-point.
  m.Attr(IFA_LOCAL, addr.bytes, addr.len());
  m.Attr(IFA_ADDRESS, addr.bytes, addr.len());
  return Request(m.buf, what);
}

Status Rtnetlink::AddRoute(const std::string& dest, const std::string& gateway,
                           const std::string& dev, bool v6) {
  const int family = v6 ? AF_INET6 : AF_INET;
  std::string what = std::string("ip ") + (v6 ? "-6 " : "") + "route add " + dest +
                     (gateway.empty() ? "" : " via " + gateway) + " dev " + dev;
  Address dst;
  dst.family = family;
  int dst_len = 0;
  if (dest != "default") {
    auto parsed = ParseCidr(dest, family);
    if (!parsed.ok()) return parsed.status().Wrap(what);
    std::tie(dst, dst_len) = *parsed;
  }
  Address gw;
  if (!gateway.empty()) {
    auto parsed = ParseAddress(gateway, family);
    if (!parsed.ok()) return parsed.status().Wrap(what);
    gw = *parsed;
  }
  ASSIGN_OR_RETURN(int idx, IfIndex(dev));
  Msg m;
  auto* rt = m.Start<rtmsg>(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  rt->rtm_family = static_cast<uint8_t>(family);
  rt->rtm_dst_len = static_cast<uint8_t>(dst_len);
  rt->rtm_table = RT_TABLE_MAIN;
  rt->rtm_protocol = RTPROT_BOOT;
  rt->rtm_scope = gateway.empty() ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
  rt->rtm_type = RTN_UNICAST;
  if (dst_len > 0) m.Attr(RTA_DST, dst.bytes, dst.len());
  if (!gateway.empty()) m.Attr(RTA_GATEWAY, gw.bytes, gw.len());
  uint32_t oif = static_cast<uint32_t>(idx);
  m.Attr(RTA_OIF, &oif, sizeof oif);
  return Request(m.buf, what);
}

}  // namespace runhcs::guest
