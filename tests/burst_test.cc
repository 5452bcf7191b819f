// Exec bursts through a real containerd, driven over its gRPC API as an
// orchestrator would. Every exec must succeed with its own exit code and
// produce exactly one TaskExecStarted and one TaskExit; the shim's threads
// stay bounded during the burst and return to idle after. (The side-by-side
// figures against containerd-shim-runc-v2 are runhcs-bench's burst section:
// runc-v2 loses most of such a burst to Start deadlines here, so it cannot be
// asserted on.)
#include <gtest/gtest.h>

#include "base/io.h"
#include "containerd/runc/options/oci.pb.h"
#include "containerd/task/v2/shim.ttrpc.h"
#include "runhcs/options.pb.h"
#include "tests/ctrd_client.h"
#include "tests/subprocess.h"
#include "ttrpc/frame.h"
#include "ttrpc/ttrpc.pb.h"

namespace runhcs::testing {
namespace {

using namespace std::chrono_literals;
constexpr char kNs[] = "burst";
const int kExecs = std::getenv("BURST_EXECS") ? std::atoi(std::getenv("BURST_EXECS")) : 500;

class BurstTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ctrd_.ok()) << ctrd_.log();
    spec_ = BusyboxSpec(ctrd_.dir());
    ASSERT_FALSE(spec_.is_null()) << "no busybox rootfs or runc spec";
  }

  // A running container `id` of `runtime` (sleeping); returns its shim pid.
  pid_t Start(const std::string& id, const std::string& runtime) {
    runhcs::wkt::Any opts;
    if (runtime == "io.containerd.runhcs.v1") {
      containerd::runhcs::v1::Options o;
      o.set_oci_runtime("runc");
      opts.set_type_url("containerd.runhcs.v1.Options");
      opts.set_value(o.SerializeAsString());
    } else {
      containerd::runc::v1::Options o;
      o.set_binary_name("runc");
      opts.set_type_url("containerd.runc.v1.Options");
      opts.set_value(o.SerializeAsString());
    }
    nlohmann::json s = spec_;
    s["process"]["args"] = {"/bin/sleep", "1000"};
    s["hostname"] = id;
    s["linux"]["cgroupsPath"] = std::string("/") + kNs + "/" + id;
    CreateAndStart(&client_, id, runtime, opts, s);
    std::string bin = runtime == "io.containerd.runhcs.v1" ? "containerd-shim-runhcs-v1"
                                                           : "containerd-shim-runc-v2";
    return std::atoi(
        RunCommand({"pgrep", "-f", bin + " -namespace " + kNs + " -id " + id + "( |$)"})
            .out.c_str());
  }
  void Stop(const std::string& id) {
    ctrd_.Ctr({"task", "kill", "-s", "SIGKILL", id}, {}, kNs);
    WaitFor(
        [&] {
          return ctrd_.Ctr({"task", "ls"}, {}, kNs).out.find(id + " ") == std::string::npos ||
                 ctrd_.Ctr({"task", "ls"}, {}, kNs).out.find("STOPPED") != std::string::npos;
        },
        15s);
    ctrd_.Ctr({"task", "delete", id}, {}, kNs);
    ctrd_.Ctr({"container", "delete", id}, {}, kNs);
  }

  void Burst(const std::string& label, const std::string& runtime) {
    SCOPED_TRACE(label);
    std::string id = "burst-" + label;
    pid_t shim = Start(id, runtime);
    ASSERT_GT(shim, 0);
    std::this_thread::sleep_for(3s);  // pooled workers of the start are gone
    int idle = ThreadsOf(shim);
    BurstResult r = ExecBurst(&client_, id, spec_["process"], kExecs, shim);
    EXPECT_EQ(r.ok, kExecs) << (r.errors.empty() ? "" : r.errors.front());
    EXPECT_TRUE(r.errors.empty()) << r.errors.size() << " failed, e.g. "
                                  << (r.errors.empty() ? "" : r.errors[0]);
    // Exactly one start and one exit event per exec.
    WaitFor([&] { return events_.Count(id, "/tasks/exit").size() >= static_cast<size_t>(kExecs); },
            20s);
    auto started = events_.Count(id, "/tasks/exec-started");
    auto exits = events_.Count(id, "/tasks/exit");
    int bad = 0;
    for (int i = 0; i < kExecs; ++i) {
      std::string e = "b" + std::to_string(i);
      if (started[e] != 1 || exits[e] != 1) ++bad;
    }
    EXPECT_EQ(bad, 0) << "execs without exactly one TaskExecStarted and one TaskExit";
    std::printf("burst %s: %d/%d ok, p50 %.0f ms, p99 %.0f ms, shim threads idle %d peak %d\n",
                label.c_str(), r.ok, kExecs, r.ms.empty() ? 0 : r.ms[r.ms.size() / 2],
                r.ms.empty() ? 0 : r.ms[r.ms.size() * 99 / 100], idle, r.peak_threads);
    {
      // Bounded: the connection's 32 running handlers plus the exit
      // callbacks in flight (seen: 61 to 96 at the peak), not one per exec
      // or per Wait (500).
      EXPECT_LT(r.peak_threads, idle + 200) << "threads grew with the burst";
      EXPECT_TRUE(WaitFor([&] { return ThreadsOf(shim) <= idle; }, 15s))
          << "threads after the burst: " << ThreadsOf(shim) << ", idle before: " << idle;
    }
    Stop(id);
  }

  Containerd ctrd_{DirName(RUNHCS_SHIM_BINARY)};
  CtrdClient client_{ctrd_.grpc_address(), kNs};
  TaskEvents events_{&client_};
  nlohmann::json spec_;
};

// 1000 Waits sent straight to the shim's socket and abandoned with their
// connection: no thread each, nothing kept after, and the shim serves on.
TEST_F(BurstTest, ThousandAbandonedWaitsCostNothingAfterwards) {
  const std::string id = "abandon";
  pid_t shim = Start(id, "io.containerd.runhcs.v1");
  ASSERT_GT(shim, 0);
  std::this_thread::sleep_for(3s);
  int idle = ThreadsOf(shim);
  std::string bundle = ctrd_.dir() + "/state/io.containerd.runtime.v2.task/" + kNs + "/" + id;
  auto addr = UnixAddress::Parse(ReadFileOr(bundle + "/address"));
  for (int round = 0; round < 3; ++round) {
    auto conn = ConnectUnix(addr);
    ASSERT_TRUE(conn.ok()) << conn.status().ToString();
    containerd::task::v2::WaitRequest w;
    w.set_id(id);
    ::ttrpc::Request req;
    req.set_service(std::string(containerd::task::v2::TaskClient::kServiceName));
    req.set_method("Wait");
    req.set_payload(w.SerializeAsString());
    std::string frame = req.SerializeAsString();
    for (uint32_t i = 0; i < 1000; ++i) {
      ASSERT_TRUE(
          ttrpc::WriteFrame(conn->get(), 2 * i + 1, ttrpc::FrameType::kRequest, 0, frame).ok());
    }
    std::this_thread::sleep_for(300ms);
    EXPECT_LE(ThreadsOf(shim), idle + 2) << "a thread per waiting call";
  }  // each connection closes with its 1000 calls open
  EXPECT_TRUE(WaitFor([&] { return ThreadsOf(shim) <= idle; }, 10s))
      << ThreadsOf(shim) << " vs " << idle;
  // Still serving: an exec runs and its Wait is answered.
  BurstResult r = ExecBurst(&client_, id, spec_["process"], 3, shim, "after");
  EXPECT_EQ(r.ok, 3) << (r.errors.empty() ? "" : r.errors[0]);
  Stop(id);
}

TEST_F(BurstTest, FiveHundredConcurrentExecsEachSucceedWithOneStartAndOneExit) {
  Burst("runhcs", "io.containerd.runhcs.v1");
}

}  // namespace
}  // namespace runhcs::testing
