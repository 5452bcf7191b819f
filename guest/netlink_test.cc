// Rtnetlink against the real kernel, in a network namespace of its own (one
// test thread's: nothing of this host's network is touched, and the
// namespace goes when the thread ends). Checked through other interfaces
// than netlink: ioctls and the thread's /proc/net files.
#include "guest/netlink.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <functional>
#include <set>
#include <thread>

#include "base/command.h"
#include "base/io.h"

namespace runhcs::guest {
namespace {

// Runs `body` on a thread in a new network namespace.
void InNewNetns(const std::function<void()>& body) {
  std::thread([&] {
    ASSERT_EQ(::unshare(CLONE_NEWNET), 0) << std::strerror(errno);
    body();
  }).join();
}

ifreq Ifreq(const char* dev, unsigned long request) {
  ifreq r{};
  std::strncpy(r.ifr_name, dev, IFNAMSIZ - 1);
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  EXPECT_EQ(::ioctl(s.get(), request, &r), 0) << std::strerror(errno);
  return r;
}

// Every address of `dev`, as "address/prefix".
std::set<std::string> Addresses(const char* dev) {
  std::set<std::string> out;
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return out;
  for (ifaddrs* a = all; a; a = a->ifa_next) {
    if (!a->ifa_addr || std::strcmp(a->ifa_name, dev) != 0) continue;
    char text[INET6_ADDRSTRLEN] = {};
    int prefix = 0;
    if (a->ifa_addr->sa_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text,
                  sizeof text);
      prefix = __builtin_popcount(reinterpret_cast<sockaddr_in*>(a->ifa_netmask)->sin_addr.s_addr);
    } else if (a->ifa_addr->sa_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr, text,
                  sizeof text);
      for (unsigned char b : reinterpret_cast<sockaddr_in6*>(a->ifa_netmask)->sin6_addr.s6_addr)
        prefix += __builtin_popcount(b);
    } else {
      continue;
    }
    out.insert(std::string(text) + "/" + std::to_string(prefix));
  }
  ::freeifaddrs(all);
  return out;
}

std::string ThreadFile(const std::string& name) {
  auto s = ReadFile("/proc/thread-self/net/" + name);
  return s.ok() ? *s : "";
}

TEST(RtnetlinkTest, BringsUpSetsMtuAddsAddressesAndRoutes) {
  InNewNetns([] {
    auto nl = Rtnetlink::Open();
    ASSERT_TRUE(nl.ok()) << nl.status().ToString();
    EXPECT_FALSE(Ifreq("lo", SIOCGIFFLAGS).ifr_flags & IFF_UP);
    ASSERT_TRUE(nl->LinkUp("lo").ok());
    EXPECT_TRUE(Ifreq("lo", SIOCGIFFLAGS).ifr_flags & IFF_UP);
    // A pod's NIC: one end of a veth pair (made by ip(8), which this
    // thread's child runs in the same namespace).
    auto made = RunCommand({"ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"});
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    ASSERT_TRUE(nl->SetMtu("v0", 1400).ok());
    EXPECT_EQ(Ifreq("v0", SIOCGIFMTU).ifr_mtu, 1400);
    Status st = nl->AddAddress("v0", "10.7.0.2/24");
    ASSERT_TRUE(st.ok()) << st.ToString();
    st = nl->AddAddress("v0", "fd00:7::2/64");
    ASSERT_TRUE(st.ok()) << st.ToString();
    auto addrs = Addresses("v0");
    EXPECT_TRUE(addrs.count("10.7.0.2/24")) << ::testing::PrintToString(addrs);
    EXPECT_TRUE(addrs.count("fd00:7::2/64")) << ::testing::PrintToString(addrs);
    ASSERT_TRUE(nl->LinkUp("v0").ok());
    EXPECT_TRUE(Ifreq("v0", SIOCGIFFLAGS).ifr_flags & IFF_UP);

    st = nl->AddRoute("192.168.5.0/24", "", "v0", false);
    ASSERT_TRUE(st.ok()) << st.ToString();
    st = nl->AddRoute("default", "10.7.0.1", "v0", false);
    ASSERT_TRUE(st.ok()) << st.ToString();
    st = nl->AddRoute("default", "fd00:7::1", "v0", true);
    ASSERT_TRUE(st.ok()) << st.ToString();
    // /proc/net/route: destination and gateway as the u32 in host order.
    std::string v4 = ThreadFile("route");
    EXPECT_NE(v4.find("v0\t0005A8C0\t00000000\t0001\t"), std::string::npos) << v4;
    EXPECT_NE(v4.find("v0\t00000000\t0100070A\t0003\t"), std::string::npos) << v4;
    std::string v6 = ThreadFile("ipv6_route");
    EXPECT_NE(v6.find("00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
                      "fd000007000000000000000000000001"),
              std::string::npos)
        << v6;
  });
}

TEST(RtnetlinkTest, RefusalsAndBadInputAreClearErrors) {
  InNewNetns([] {
    auto nl = Rtnetlink::Open();
    ASSERT_TRUE(nl.ok()) << nl.status().ToString();
    ASSERT_TRUE(nl->LinkUp("lo").ok());
    ASSERT_TRUE(nl->AddAddress("lo", "10.7.0.2/24").ok());
    // The kernel's refusals, in ip(8)'s words.
    Status st = nl->AddAddress("lo", "10.7.0.2/24");
    EXPECT_EQ(st.code(), Code::kAlreadyExists) << st.ToString();
    EXPECT_NE(st.message().find("ip addr add 10.7.0.2/24 dev lo: File exists"), std::string::npos)
        << st.message();
    st = nl->AddRoute("default", "10.99.0.1", "lo", false);  // gateway off every link
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("ip route add default via 10.99.0.1 dev lo: "), std::string::npos)
        << st.message();
    // Caught before anything is sent.
    EXPECT_EQ(nl->LinkUp("nosuch0").code(), Code::kNotFound);
    EXPECT_EQ(nl->AddAddress("nosuch0", "10.7.0.3/24").code(), Code::kNotFound);
    for (const char* bad : {"10.7.0.9", "10.7.0.300/24", "10.7.0.9/33", "10.7.0.9/", "x/8",
                            "fd00::g/64", "fd00::1/129"}) {
      EXPECT_EQ(nl->AddAddress("lo", bad).code(), Code::kInvalidArgument) << bad;
    }
    EXPECT_EQ(nl->AddRoute("10.9.0.0/16", "fd00::1", "lo", false).code(), Code::kInvalidArgument);
    EXPECT_EQ(nl->AddRoute("fd00::/64", "", "lo", false).code(), Code::kInvalidArgument);
    // Still usable after every refusal.
    EXPECT_TRUE(nl->AddRoute("10.9.0.0/16", "10.7.0.1", "lo", false).ok());
  });
}

}  // namespace
}  // namespace runhcs::guest
