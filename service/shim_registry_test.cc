#include "service/shim_registry.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/io.h"

namespace runhcs::service {
namespace {

using ::testing::HasSubstr;

class ShimRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shimreg-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    reg_ = std::make_unique<ShimRegistry>(root_ + "/shims");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  // A listening socket, as a live shim has.
  std::string Socket(const std::string& name) {
    std::string path = root_ + "/" + name + ".sock";
    auto l = ListenUnix(UnixAddress::Parse("unix://" + path));
    EXPECT_TRUE(l.ok());
    listeners_.push_back(std::move(*l));
    return path;
  }

  std::string root_;
  std::unique_ptr<ShimRegistry> reg_;
  std::vector<UniqueFd> listeners_;
};

TEST_F(ShimRegistryTest, RegisteredShimsAreListedByNameWithTheirSockets) {
  ASSERT_TRUE(reg_->Register("k8s-pod-b", Socket("b")).ok());
  ASSERT_TRUE(reg_->Register("default-a", Socket("a")).ok());
  auto list = reg_->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "default-a");
  EXPECT_EQ(list[0].socket_path, root_ + "/a.sock");
  EXPECT_EQ(list[1].name, "k8s-pod-b");
  struct stat st;
  ASSERT_EQ(::stat(reg_->dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(ShimRegistryTest, AnEntryWhoseSocketIsGoneIsNotListed) {
  ASSERT_TRUE(reg_->Register("default-gone", root_ + "/nothing.sock").ok());
  EXPECT_TRUE(reg_->List().empty());
  EXPECT_EQ(reg_->Resolve("default-gone").status().code(), Code::kNotFound);
}

TEST_F(ShimRegistryTest, UnregisterRemovesOnlyItsOwnEntry) {
  std::string a = Socket("a"), b = Socket("b");
  ASSERT_TRUE(reg_->Register("default-x", a).ok());
  ASSERT_TRUE(reg_->Register("default-x", b).ok());  // a successor replaced it
  reg_->Unregister("default-x", a);
  ASSERT_EQ(reg_->List().size(), 1u);
  EXPECT_EQ(reg_->List()[0].socket_path, b);
  reg_->Unregister("default-x", b);
  EXPECT_TRUE(reg_->List().empty());
}

TEST_F(ShimRegistryTest, ResolveByExactNameOrUniquePrefix) {
  ASSERT_TRUE(reg_->Register("default-web", Socket("w")).ok());
  ASSERT_TRUE(reg_->Register("default-web2", Socket("w2")).ok());
  ASSERT_TRUE(reg_->Register("default-db", Socket("d")).ok());

  auto exact = reg_->Resolve("default-web");  // also a prefix of web2: exact wins
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->name, "default-web");
  auto prefix = reg_->Resolve("default-d");
  ASSERT_TRUE(prefix.ok());
  EXPECT_EQ(prefix->name, "default-db");

  auto amb = reg_->Resolve("default-");
  EXPECT_EQ(amb.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(amb.status().message(), HasSubstr("multiple shims beginning with"));
  EXPECT_THAT(amb.status().message(), HasSubstr("default-web2"));

  auto none = reg_->Resolve("k8s");
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("no such shim"));

  for (const char* bad : {"", ".", "..", "a/b"}) {
    auto r = reg_->Resolve(bad);
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("invalid shim name"));
  }
  EXPECT_EQ(reg_->Register("../escape", Socket("e")).code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace runhcs::service
