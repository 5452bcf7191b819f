#include "service/options.h"

#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/io.h"
#include "containerd/runc/options/oci.pb.h"
#include "containerd/runtimeoptions/v1/api.pb.h"
#include "runhcs/options.pb.h"

namespace runhcs::service {
namespace {

runhcs::wkt::Any Pack(const google::protobuf::MessageLite& m, std::string url = "") {
  runhcs::wkt::Any a;
  a.set_type_url(url.empty() ? m.GetTypeName() : url);
  m.SerializeToString(a.mutable_value());
  return a;
}

TEST(Options, EmptyMeansDefaults) {
  auto o = DecodeOptionsBytes("");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->oci_runtime, "runc");
  EXPECT_EQ(o->isolation, ShimOptions::Isolation::kProcess);
}

TEST(Options, RunhcsOptions) {
  containerd::runhcs::v1::Options ro;
  ro.set_sandbox_isolation(containerd::runhcs::v1::Options::HYPERVISOR);
  ro.set_vm_processor_count(2);
  ro.set_vm_memory_size_in_mb(512);
  ro.set_vm_accelerator(containerd::runhcs::v1::Options::TCG);
  ro.set_debug(true);
  ro.set_oci_runtime("crun");
  ro.set_vm_tcg_cache_size_in_mb(32);
  ro.set_vm_template_path("/run/runhcs-templates");
  auto o = DecodeOptionsBytes(Pack(ro).SerializeAsString());
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->isolation, ShimOptions::Isolation::kHypervisor);
  EXPECT_EQ(o->vm_processors, 2);
  EXPECT_EQ(o->vm_memory_mb, 512);
  EXPECT_EQ(o->accelerator, ShimOptions::Accelerator::kTcg);
  EXPECT_EQ(o->log_level, "debug");
  EXPECT_EQ(o->oci_runtime, "crun");
  EXPECT_EQ(o->vm_tcg_cache_mb, 32);
  EXPECT_EQ(o->vm_template_path, "/run/runhcs-templates");
  // A googleapis-prefixed URL names the same type.
  EXPECT_TRUE(DecodeOptions(Pack(ro, "type.googleapis.com/containerd.runhcs.v1.Options")).ok());
  ro.set_vm_memory_size_in_mb(-1);
  EXPECT_EQ(DecodeOptions(Pack(ro)).status().code(), Code::kInvalidArgument);
  ro.set_vm_memory_size_in_mb(512);
  ro.set_vm_tcg_cache_size_in_mb(-1);
  EXPECT_EQ(DecodeOptions(Pack(ro)).status().code(), Code::kInvalidArgument);
  ro.set_vm_tcg_cache_size_in_mb(0);
  ro.set_vm_template_path("templates");
  auto rel = DecodeOptions(Pack(ro));
  EXPECT_EQ(rel.status().code(), Code::kInvalidArgument);
  EXPECT_NE(rel.status().message().find("not absolute"), std::string::npos);
}

TEST(Options, RuncOptionsPickTheRuntime) {
  containerd::runc::v1::Options rc;
  rc.set_binary_name("/usr/bin/crun");
  rc.set_root("/run/x");
  auto o = DecodeOptions(Pack(rc));
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->oci_runtime, "/usr/bin/crun");
  EXPECT_EQ(o->oci_runtime_root, "/run/x");
}

TEST(Options, RuntimeConfigFileIsProtobufJson) {
  std::string path = ::testing::TempDir() + "/runhcs-options.json";
  ASSERT_TRUE(
      WriteFileAtomic(path, R"({"sandboxIsolation":"HYPERVISOR","vmMemorySizeInMb":256})", 0644)
          .ok());
  runtimeoptions::v1::Options rt;
  rt.set_config_path(path);
  auto o = DecodeOptions(Pack(rt));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->isolation, ShimOptions::Isolation::kHypervisor);
  EXPECT_EQ(o->vm_memory_mb, 256);
  ASSERT_TRUE(WriteFileAtomic(path, "isolation = 'x'", 0644).ok());
  EXPECT_EQ(DecodeOptions(Pack(rt)).status().code(), Code::kInvalidArgument);
  rt.set_config_path("/nonexistent.json");
  EXPECT_EQ(DecodeOptions(Pack(rt)).status().code(), Code::kNotFound);
  EXPECT_TRUE(DecodeOptions(Pack(runtimeoptions::v1::Options())).ok());
  ::unlink(path.c_str());
}

TEST(Options, JsonAcceptsBothNameFormsAndEnumNumbers) {
  auto o = OptionsFromJson(R"({"oci_runtime":"crun","vmAccelerator":2,"vm_processor_count":3,
      "logLevel":"debug","defaultContainerAnnotations":{"a":"b"},"debug":true,
      "vm_tcg_cache_size_in_mb":16,"vmTemplatePath":"/run/t"})");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->oci_runtime(), "crun");
  EXPECT_EQ(o->vm_accelerator(), containerd::runhcs::v1::Options::TCG);
  EXPECT_EQ(o->vm_processor_count(), 3);
  EXPECT_EQ(o->log_level(), "debug");
  EXPECT_EQ(o->default_container_annotations().at("a"), "b");
  EXPECT_TRUE(o->debug());
  EXPECT_EQ(o->vm_tcg_cache_size_in_mb(), 16);
  EXPECT_EQ(o->vm_template_path(), "/run/t");
}

TEST(Options, JsonRejectsUnknownFieldsBadEnumsAndWrongTypes) {
  for (const char* bad : {R"({"ociRuntim":"crun"})", R"({"vmAccelerator":"FAST"})",
                          R"({"vmAccelerator":7})", R"({"vmProcessorCount":"two"})", "[]", "{"}) {
    auto o = OptionsFromJson(bad);
    EXPECT_EQ(o.status().code(), Code::kInvalidArgument) << bad;
  }
}

TEST(Options, UnknownTypeAndGarbageAreInvalidArgument) {
  runhcs::wkt::Any a;
  a.set_type_url("containerd.unknown.Options");
  auto o = DecodeOptions(a);
  EXPECT_EQ(o.status().code(), Code::kInvalidArgument);
  EXPECT_NE(o.status().message().find("containerd.unknown.Options"), std::string::npos);
  EXPECT_EQ(DecodeOptionsBytes("\xff\xff\xff").status().code(), Code::kInvalidArgument);
}

TEST(Options, AnnotationsSizeTheVmAndRunhcsNamesWinOverHcsshims) {
  ShimOptions o;
  o.vm_processors = 2;
  o.vm_memory_mb = 1024;
  ASSERT_TRUE(
      ApplyAnnotations({{"io.microsoft.virtualmachine.computetopology.processor.count", "3"},
                        {"io.microsoft.virtualmachine.computetopology.memory.sizeinmb", "768"}},
                       &o)
          .ok());
  EXPECT_EQ(o.vm_processors, 3);
  EXPECT_EQ(o.vm_memory_mb, 768);
  ASSERT_TRUE(
      ApplyAnnotations({{"io.containerd.runhcs.v1.vm-cpus", "1"},
                        {"io.microsoft.virtualmachine.computetopology.processor.count", "4"},
                        {"io.containerd.runhcs.v1.vm-memory-mb", "256"},
                        {"io.containerd.runhcs.v1.isolation", "hypervisor"},
                        {"io.containerd.runhcs.v1.vm-accelerator", "tcg"}},
                       &o)
          .ok());
  EXPECT_EQ(o.vm_processors, 1);
  EXPECT_EQ(o.vm_memory_mb, 256);
  EXPECT_EQ(o.isolation, ShimOptions::Isolation::kHypervisor);
  EXPECT_EQ(o.accelerator, ShimOptions::Accelerator::kTcg);
  // None given: the options stand.
  ASSERT_TRUE(ApplyAnnotations({{"unrelated", "x"}}, &o).ok());
  EXPECT_EQ(o.vm_processors, 1);
}

TEST(Options, BadSizingAnnotationsAreInvalidArgumentNamingTheAnnotation) {
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"io.containerd.runhcs.v1.vm-cpus", "0"},
           {"io.containerd.runhcs.v1.vm-cpus", "two"},
           {"io.containerd.runhcs.v1.vm-cpus", "2x"},
           {"io.containerd.runhcs.v1.vm-cpus", "65"},
           {"io.containerd.runhcs.v1.vm-memory-mb", "64"},
           {"io.containerd.runhcs.v1.vm-memory-mb", ""},
           {"io.microsoft.virtualmachine.computetopology.memory.sizeinmb", "-512"},
           {"io.containerd.runhcs.v1.isolation", "vm"},
           {"io.containerd.runhcs.v1.vm-accelerator", "hvf"}}) {
    ShimOptions o;
    Status st = ApplyAnnotations({{k, v}}, &o);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << k << "=" << v;
    EXPECT_THAT(st.message(), ::testing::HasSubstr(k)) << st.ToString();
    EXPECT_EQ(o.vm_processors, 0);
    EXPECT_EQ(o.vm_memory_mb, 0);
  }
}

}  // namespace
}  // namespace runhcs::service
