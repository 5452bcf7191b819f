// Stdin through a terminal, byte for byte, driven over containerd's gRPC API
// with fifos of the test's own (as CRI does for `kubectl exec -it`/attach):
// the process puts its terminal in raw mode and counts what it reads, in
// process and hypervisor isolation.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cctype>

#include "base/fd.h"
#include "base/io.h"
#include "runhcs/options.pb.h"
#include "tests/ctrd_client.h"
#include "tests/subprocess.h"

namespace runhcs::testing {
namespace {

using namespace std::chrono_literals;
constexpr char kNs[] = "tty";

class TerminalStdinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ctrd_.ok()) << ctrd_.log();
    spec_ = BusyboxSpec(ctrd_.dir());
    ASSERT_FALSE(spec_.is_null()) << "no busybox rootfs or runc spec";
  }

  // What the container printed for `n` bytes of text sent to its terminal.
  std::string CountThroughTerminal(const std::string& id, size_t n, bool hypervisor) {
    std::string dir = ctrd_.dir() + "/" + id;
    ::mkdir(dir.c_str(), 0700);
    std::string in = dir + "/stdin", out = dir + "/stdout";
    EXPECT_EQ(::mkfifo(in.c_str(), 0600), 0);
    EXPECT_EQ(::mkfifo(out.c_str(), 0600), 0);
    UniqueFd out_r(::open(out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    nlohmann::json s = spec_;
    s["process"]["terminal"] = true;
    s["process"]["args"] = {"/bin/sh", "-c",
                            "stty raw -echo; echo n=$(head -c " + std::to_string(n) + " | wc -c)"};
    s["hostname"] = id;
    s["linux"]["cgroupsPath"] = std::string("/") + kNs + "/" + id;
    if (hypervisor) {
      s["annotations"]["io.containerd.runhcs.v1.isolation"] = "hypervisor";
      s["annotations"]["io.containerd.runhcs.v1.vm-accelerator"] = "tcg";
    }
    ctrs::CreateContainerRequest cc;
    auto* ct = cc.mutable_container();
    ct->set_id(id);
    ct->mutable_runtime()->set_name("io.containerd.runhcs.v1");
    ct->mutable_spec()->set_type_url("types.containerd.io/opencontainers/runtime-spec/1/Spec");
    ct->mutable_spec()->set_value(s.dump());
    ctrs::CreateContainerResponse ccr;
    CtrdClient::Check(client_.containers().Create(client_.Ctx().get(), cc, &ccr),
                      "create container");
    tasks::CreateTaskRequest tc;
    tc.set_container_id(id);
    tc.set_stdin(in);
    tc.set_stdout(out);
    tc.set_stderr(dir + "/stderr-unused");  // what CRI sends with a terminal
    tc.set_terminal(true);
    tasks::CreateTaskResponse tcr;
    CtrdClient::Check(client_.tasks().Create(client_.Ctx(120s).get(), tc, &tcr), "create task");
    std::string data = TestText(n);
    std::thread writer([&] {
      UniqueFd w(::open(in.c_str(), O_WRONLY | O_CLOEXEC));  // the shim holds the read end
      EXPECT_TRUE(WriteAll(w.get(), data).ok());
    });
    tasks::StartRequest st;
    st.set_container_id(id);
    tasks::StartResponse str;
    CtrdClient::Check(client_.tasks().Start(client_.Ctx().get(), st, &str), "start");
    writer.join();
    tasks::CloseIORequest ci;
    ci.set_container_id(id);
    ci.set_stdin(true);
    runhcs::wkt::Empty e;
    CtrdClient::Check(client_.tasks().CloseIO(client_.Ctx().get(), ci, &e), "close io");
    // The output until the shim closes its end (the process exited).
    std::string got;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    char buf[65536];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_r.get(), POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      ssize_t r = ::read(out_r.get(), buf, sizeof buf);
      if (r > 0) got.append(buf, static_cast<size_t>(r));
      if (r == 0) break;
    }
    tasks::WaitRequest w;
    w.set_container_id(id);
    tasks::WaitResponse wr;
    CtrdClient::Check(client_.tasks().Wait(client_.Ctx().get(), w, &wr), "wait");
    tasks::DeleteTaskRequest d;
    d.set_container_id(id);
    tasks::DeleteResponse dr;
    CtrdClient::Check(client_.tasks().Delete(client_.Ctx().get(), d, &dr), "delete task");
    ctrs::DeleteContainerRequest dc;
    dc.set_id(id);
    CtrdClient::Check(client_.containers().Delete(client_.Ctx().get(), dc, &e), "delete container");
    return got;
  }

  Containerd ctrd_{DirName(RUNHCS_SHIM_BINARY)};
  CtrdClient client_{ctrd_.grpc_address(), kNs};
  nlohmann::json spec_;
};

// "n=<count>" as the process printed it (raw mode: no "\r"; input that came
// before `stty` is echoed in front of it, and holds no '=').
bool Counted(const std::string& got, size_t n) {
  std::string want = "n=" + std::to_string(n);
  size_t at = got.rfind(want);
  return at != std::string::npos &&
         (at + want.size() == got.size() || !std::isdigit(got[at + want.size()]));
}

TEST_F(TerminalStdinTest, EveryByteReachesAProcessOnATerminal) {
  for (size_t n : {size_t{1}, size_t{4096}, size_t{65537}}) {
    SCOPED_TRACE(n);
    std::string got = CountThroughTerminal("tty" + std::to_string(n), n, false);
    EXPECT_TRUE(Counted(got, n)) << got.substr(got.size() > 200 ? got.size() - 200 : 0);
  }
}

TEST_F(TerminalStdinTest, EveryByteReachesAProcessOnATerminalInAVm) {
  for (size_t n : {size_t{4096}, size_t{65537}}) {
    SCOPED_TRACE(n);
    std::string got = CountThroughTerminal("vmtty" + std::to_string(n), n, true);
    EXPECT_TRUE(Counted(got, n)) << got.substr(got.size() > 200 ? got.size() - 200 : 0);
  }
}

}  // namespace
}  // namespace runhcs::testing
