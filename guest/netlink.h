// Rtnetlink: the few link, address and route changes a pod's network needs,
// made in-process over a NETLINK_ROUTE socket instead of one ip(8) process
// each (under TCG a process costs 50-140 ms to start in the agent: the
// fork of a large multithreaded process, then busybox translated).
//
// Contract:
//  - The socket belongs to the network namespace of the thread that called
//    Open(); every request acts there.
//  - Each call is one request, acknowledged by the kernel before it returns.
//    The kernel's refusal comes back as the errno's Status (ErrnoError:
//    EEXIST is AlreadyExists, ENOENT NotFound, EINVAL InvalidArgument),
//    prefixed with what was asked, in ip(8)'s words.
//  - An interface name that does not exist is NotFound; an address, prefix
//    or gateway that does not parse is InvalidArgument. Nothing is sent
//    then.
//  - Not thread-safe: one caller at a time.
#pragma once

#include <cstdint>
#include <string>

#include "base/fd.h"
#include "base/status.h"

namespace runhcs::guest {

class Rtnetlink {
 public:
  static StatusOr<Rtnetlink> Open();

  // ip link set dev DEV up
  Status LinkUp(const std::string& dev);
  // ip link set dev DEV mtu MTU
  Status SetMtu(const std::string& dev, uint32_t mtu);
  // ip addr add CIDR dev DEV: CIDR is "address/prefix", IPv4 or IPv6.
  Status AddAddress(const std::string& dev, const std::string& cidr);
  // ip route add DEST [via GATEWAY] dev DEV: DEST is "default" or a CIDR of
  // the family `v6` says; no gateway is a route on the link.
  Status AddRoute(const std::string& dest, const std::string& gateway, const std::string& dev,
                  bool v6);

 private:
  explicit Rtnetlink(UniqueFd fd) : fd_(std::move(fd)) {}
  // Sends the message in `buf` (its header's length set) and waits for its
  // acknowledgement.
  Status Request(void* buf, const std::string& what);

  UniqueFd fd_;
  uint32_t seq_ = 0;
};

}  // namespace runhcs::guest
