#include "oci/spec.h"

#include <gtest/gtest.h>

namespace runhcs::oci {
namespace {

TEST(Spec, ParsesAnnotations) {
  auto s = Spec::Parse(R"({"ociVersion":"1.0.2","annotations":{"a":"1","b":"x"}})");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->Annotation("a"), "1");
  EXPECT_EQ(s->Annotation("missing"), "");
}

TEST(Spec, BadDocumentsAreInvalidArgument) {
  EXPECT_EQ(Spec::Parse("{").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Spec::Parse("[]").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Spec::Parse(R"({"annotations":[1]})").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Spec::Parse(R"({"annotations":{"a":1}})").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Spec::Load("/nonexistent-bundle").status().code(), Code::kNotFound);
}

TEST(Spec, ReadsSysctls) {
  auto s = Spec::Parse(
      R"({"linux":{"sysctl":{"kernel.shm_rmid_forced":"1","net.core.somaxconn":"64"}}})");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->sysctls(), (std::map<std::string, std::string>{{"kernel.shm_rmid_forced", "1"},
                                                              {"net.core.somaxconn", "64"}}));
  EXPECT_EQ(Spec::Parse(R"({"linux":{"sysctl":["a"]}})").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Spec::Parse(R"({"linux":{"sysctl":{"a.b":1}}})").status().code(),
            Code::kInvalidArgument);
}

Spec With(const std::string& annotations) {
  return Spec::Parse(R"({"annotations":)" + annotations + "}").value();
}

TEST(PodRole, Combinations) {
  EXPECT_EQ(PodRoleOf(With("{}"), "c")->kind, PodRole::kStandalone);
  auto sb = PodRoleOf(With(R"({"io.kubernetes.cri.container-type":"sandbox",
                               "io.kubernetes.cri.sandbox-id":"p"})"),
                      "p");
  ASSERT_TRUE(sb.ok());
  EXPECT_EQ(sb->kind, PodRole::kSandbox);
  auto wl = PodRoleOf(With(R"({"io.kubernetes.cri.container-type":"container",
                               "io.kubernetes.cri.sandbox-id":"p"})"),
                      "c");
  ASSERT_TRUE(wl.ok());
  EXPECT_EQ(wl->kind, PodRole::kWorkload);
  EXPECT_EQ(wl->sandbox_id, "p");
  // Invalid combinations.
  EXPECT_EQ(PodRoleOf(With(R"({"io.kubernetes.cri.sandbox-id":"p"})"), "c").status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(
      PodRoleOf(With(R"({"io.kubernetes.cri.container-type":"container"})"), "c").status().code(),
      Code::kInvalidArgument);
  EXPECT_EQ(PodRoleOf(With(R"({"io.kubernetes.cri.container-type":"vm",
                               "io.kubernetes.cri.sandbox-id":"p"})"),
                      "c")
                .status()
                .code(),
            Code::kInvalidArgument);
  EXPECT_EQ(PodRoleOf(With(R"({"io.kubernetes.cri.container-type":"sandbox",
                               "io.kubernetes.cri.sandbox-id":"other"})"),
                      "p")
                .status()
                .code(),
            Code::kInvalidArgument);
}

}  // namespace
}  // namespace runhcs::oci
