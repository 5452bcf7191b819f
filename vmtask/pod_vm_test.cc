// The sandbox spec checks of a VM pod and the namespace mapping of its
// workloads (no VM: the booting is tests/pod_integration_test.cc).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "vmtask/pod_vm.h"
#include "vmtask/vm_task.h"

namespace runhcs::vmtask {
namespace {

oci::Spec SandboxSpec(const std::string& namespaces) {
  auto spec =
      oci::Spec::Parse(R"({"hostname":"web-0","linux":{"namespaces":[)" + namespaces + "]}}");
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  return spec.ok() ? *spec : oci::Spec();
}

TEST(ReadSandboxShapeTest, TakesTheNetworkPathAndHostname) {
  auto s = ReadSandboxShape(
      SandboxSpec(R"({"type":"pid"},{"type":"ipc"},{"type":"uts"},)"
                  R"({"type":"mount"},{"type":"network","path":"/run/netns/cni-1"})"),
      "p");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->netns_path, "/run/netns/cni-1");
  EXPECT_EQ(s->hostname, "web-0");
}

TEST(ReadSandboxShapeTest, ANetworkNamespaceOfItsOwnHasNoPath) {
  auto s =
      ReadSandboxShape(SandboxSpec(R"({"type":"pid"},{"type":"ipc"},{"type":"network"})"), "p");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->netns_path, "");
}

TEST(ReadSandboxShapeTest, HostNamespacesAreRefusedByName) {
  struct Case {
    const char* nss;
    const char* named;
  } cases[] = {
      {R"({"type":"ipc"},{"type":"network"})", "HostPID"},
      {R"({"type":"pid"},{"type":"network"})", "HostIPC"},
      {R"({"type":"pid"},{"type":"ipc"})", "HostNetwork"},
      {R"({"type":"pid","path":"/proc/1/ns/pid"},{"type":"ipc"},{"type":"network"})", "host's"},
  };
  for (const auto& c : cases) {
    auto s = ReadSandboxShape(SandboxSpec(c.nss), "p");
    ASSERT_FALSE(s.ok()) << c.nss;
    EXPECT_EQ(s.status().code(), Code::kInvalidArgument);
    EXPECT_NE(s.status().message().find(c.named), std::string::npos) << s.status().message();
  }
  // (A spec that is not an object never gets here: oci::Spec::Parse refuses it.)
  EXPECT_EQ(oci::Spec::Parse("[1]").status().code(), Code::kInvalidArgument);
}

TEST(MapNamespacesTest, InAPodTheHostPathsBecomeThePodsAndNetworkTheVms) {
  std::vector<std::string> pod;
  auto out = MapNamespaces(
      R"({"linux":{"namespaces":[{"type":"pid"},{"type":"ipc","path":"/proc/9/ns/ipc"},)"
      R"({"type":"uts","path":"/proc/9/ns/uts"},{"type":"mount"},)"
      R"({"type":"network","path":"/run/netns/cni-1"}]}})",
      "c", /*in_pod=*/true, &pod);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(pod, (std::vector<std::string>{"ipc", "uts"}));
  auto nss = nlohmann::json::parse(*out)["linux"]["namespaces"];
  ASSERT_EQ(nss.size(), 4u);
  for (const auto& n : nss) {
    EXPECT_FALSE(n.contains("path")) << n.dump();
    EXPECT_NE(n["type"], "network");
  }
}

TEST(MapNamespacesTest, OtherJoinedNamespacesAndAnyOutsideAPodAreRefused) {
  std::vector<std::string> pod;
  auto user = MapNamespaces(
      R"({"linux":{"namespaces":[{"type":"user","path":"/proc/9/ns/user"}]}})", "c", true, &pod);
  EXPECT_EQ(user.status().code(), Code::kInvalidArgument);
  auto alone = MapNamespaces(R"({"linux":{"namespaces":[{"type":"ipc","path":"/proc/9/ns/ipc"}]}})",
                             "c", false, &pod);
  EXPECT_EQ(alone.status().code(), Code::kInvalidArgument);
  EXPECT_NE(alone.status().message().find("host's"), std::string::npos);
  auto none = MapNamespaces(R"({"process":{}})", "c", false, &pod);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, R"({"process":{}})");
}

}  // namespace
}  // namespace runhcs::vmtask
