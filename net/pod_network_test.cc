#include "net/pod_network.h"

#include <gtest/gtest.h>

namespace runhcs::net {
namespace {

// As iproute2 6.1 prints them for a CNI-made veth (measured).
constexpr char kAddrs[] =
    R"([{"ifindex":1,"ifname":"lo","mtu":65536,"link_type":"loopback","address":"00:00:00:00:00:00",)"
    R"("addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},)"
    R"({"ifindex":2,"ifname":"eth0","mtu":1400,"link_type":"ether","address":"0e:ae:86:14:6b:1c",)"
    R"("addr_info":[{"family":"inet","local":"10.88.0.2","prefixlen":24,"scope":"global"},)"
    R"({"family":"inet6","local":"fd00::2","prefixlen":64,"scope":"global"},)"
    R"({"family":"inet6","local":"fe80::cae:86ff:fe14:6b1c","prefixlen":64,"scope":"link"}]},)"
    R"({"ifindex":3,"ifname":"ipip0","mtu":1480,"link_type":"ipip","address":"0.0.0.0"}])";
constexpr char kRoutes4[] =
    R"([{"dst":"default","gateway":"10.88.0.1","dev":"eth0","flags":[]},)"
    R"({"dst":"10.88.0.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"10.88.0.2"},)"
    R"({"dst":"10.99.0.0/16","gateway":"10.88.0.1","dev":"eth0"},)"
    R"({"dst":"192.168.5.0/24","dev":"eth0","scope":"link"},)"
    R"({"dst":"10.1.0.0/16","dev":"ipip0"},)"
    R"({"type":"unreachable","dst":"10.200.0.0/16"}])";
constexpr char kRoutes6[] = R"([{"dst":"fd00::/64","dev":"eth0","protocol":"kernel","metric":256},)"
                            R"({"dst":"fe80::/64","dev":"eth0","protocol":"kernel"},)"
                            R"({"dst":"default","gateway":"fd00::1","dev":"eth0","metric":1024}])";

TEST(ParseIpJsonTest, CarriesEthernetInterfacesWithTheirMacMtuAndAddresses) {
  auto cfg = ParseIpJson(kAddrs, kRoutes4, kRoutes6);
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  ASSERT_EQ(cfg->interfaces.size(), 1u);  // not lo, not the ipip tunnel
  const Interface& i = cfg->interfaces[0];
  EXPECT_EQ(i.name, "eth0");
  EXPECT_EQ(i.mac, "0e:ae:86:14:6b:1c");
  EXPECT_EQ(i.mtu, 1400);
  EXPECT_EQ(i.addresses, (std::vector<std::string>{"10.88.0.2/24", "fd00::2/64"}));
}

TEST(ParseIpJsonTest, KeepsOnlyRoutesTheGuestMustAddItself) {
  auto cfg = ParseIpJson(kAddrs, kRoutes4, kRoutes6);
  ASSERT_TRUE(cfg.ok());
  ASSERT_EQ(cfg->routes.size(), 4u);
  EXPECT_EQ(cfg->routes[0].destination, "default");
  EXPECT_EQ(cfg->routes[0].gateway, "10.88.0.1");
  EXPECT_EQ(cfg->routes[0].device, "eth0");
  EXPECT_FALSE(cfg->routes[0].ipv6);
  EXPECT_EQ(cfg->routes[1].destination, "10.99.0.0/16");
  EXPECT_EQ(cfg->routes[2].destination, "192.168.5.0/24");
  EXPECT_EQ(cfg->routes[2].gateway, "");
  EXPECT_EQ(cfg->routes[3].destination, "default");
  EXPECT_EQ(cfg->routes[3].gateway, "fd00::1");
  EXPECT_TRUE(cfg->routes[3].ipv6);
}

TEST(ParseIpJsonTest, AnEmptyNamespaceHasNothingToCarry) {
  auto cfg = ParseIpJson(
      R"([{"ifname":"lo","link_type":"loopback","address":"00:00:00:00:00:00"}])", "[]", "");
  ASSERT_TRUE(cfg.ok());
  EXPECT_TRUE(cfg->interfaces.empty());
  EXPECT_TRUE(cfg->routes.empty());
}

TEST(ParseIpJsonTest, TextThatIsNotIproute2JsonIsInvalidArgument) {
  auto cfg = ParseIpJson("1: lo: <LOOPBACK,UP>", "[]", "[]");
  ASSERT_FALSE(cfg.ok());
  EXPECT_EQ(cfg.status().code(), Code::kInvalidArgument);
  EXPECT_FALSE(ParseIpJson("[]", "{}", "[]").ok());
}

TEST(PodNetworkTest, AMissingNamespaceIsNotFound) {
  auto pn = PodNetwork::Attach("/nonexistent/netns/pod");
  ASSERT_FALSE(pn.ok());
  EXPECT_EQ(pn.status().code(), Code::kNotFound);
}

}  // namespace
}  // namespace runhcs::net
