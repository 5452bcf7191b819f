// Soak: 1000 container lifecycles and 1000 execs through one shim (a
// process-isolated pod: the sandbox's shim serves every workload), via a real
// containerd and plain `ctr`. Afterwards the shim holds what it held before:
// fds, threads, child processes, mounts (under containerd's dirs and the
// shim's state: the rest of its namespace is the host's), sockets, pipes and
// fifos; its live heap (what the shim logs when it goes idle) and its RSS
// have not grown by more than 1%.
//
// The shim runs here with glibc's per-thread malloc cache and its cache of
// exited threads' stacks off. With the first on, each thread keeps freed
// blocks that mallinfo counts as in use: the live figure then wanders by a few
// percent (±12 KB) between idle moments, leak or not, and RSS with it. With
// the second on, how many stacks of the TTRPC server's exited workers stay
// mapped (with their touched pages) depends on the peak concurrency of the
// run: a few times 20 KB of RSS, leak or not. Off, the heap figure is exact
// (measured: +0 B after 800 operations) and RSS moves by under 1%, so 1% is a
// real bound (see docs/reliability.md). RSS is printed split into anonymous
// and file-backed pages: a leak shows in the first.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string_view>
#include <thread>

#include <fmt/format.h>

#include "base/io.h"
#include "tests/subprocess.h"

namespace runhcs::testing {
namespace {

using namespace std::chrono_literals;

int SoakCount() {
  const char* n = std::getenv("RUNHCS_SOAK_N");
  return n && *n ? std::atoi(n) : 1000;
}

struct Footprint {
  int fds = 0, threads = 0, children = 0, mounts = 0, sockets = 0, pipes = 0, fifos = 0;
  long rss_kb = 0, anon_kb = 0, file_kb = 0;
  bool operator==(const Footprint& o) const {
    return fds == o.fds && threads == o.threads && children == o.children && mounts == o.mounts &&
           sockets == o.sockets && pipes == o.pipes && fifos == o.fifos;
  }
};

std::string Describe(const Footprint& f) {
  return fmt::format(
      "fds={} threads={} children={} mounts={} sockets={} pipes={} fifos={} "
      "rss={}kB (anon {}, file {})",
      f.fds, f.threads, f.children, f.mounts, f.sockets, f.pipes, f.fifos, f.rss_kb, f.anon_kb,
      f.file_kb);
}

// `mount_roots`: only mounts under these count. The shim's mount namespace
// also holds the host's, which come and go with whatever else runs on it.
Footprint Measure(pid_t pid, const std::vector<std::string>& mount_roots) {
  Footprint f;
  std::string proc = fmt::format("/proc/{}", pid);
  if (DIR* d = ::opendir((proc + "/fd").c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      ++f.fds;
      std::string fd = proc + "/fd/" + e->d_name;
      char buf[512];
      ssize_t n = ::readlink(fd.c_str(), buf, sizeof buf - 1);
      std::string target = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
      struct stat st;
      if (target.rfind("socket:", 0) == 0) {
        ++f.sockets;
      } else if (target.rfind("pipe:", 0) == 0) {
        ++f.pipes;
      } else if (::stat(fd.c_str(), &st) == 0 && S_ISFIFO(st.st_mode)) {
        ++f.fifos;
      }
    }
    ::closedir(d);
  }
  f.threads = CountEntries(proc + "/task");
  std::string kids = RunCommand({"pgrep", "-P", std::to_string(pid)}).out;
  f.children = static_cast<int>(std::count(kids.begin(), kids.end(), '\n'));
  std::istringstream mi(ReadFileOr(proc + "/mountinfo"));
  for (std::string line; std::getline(mi, line);) {
    std::istringstream fields(line);
    std::string field[5];
    for (auto& x : field) fields >> x;
    for (const auto& root : mount_roots)
      if (field[4] == root || field[4].rfind(root + "/", 0) == 0) ++f.mounts;
  }
  std::string status = ReadFileOr(proc + "/status");
  auto field = [&](std::string_view name) {
    size_t at = status.find(name);
    return at == std::string::npos ? 0L : std::atol(status.c_str() + at + name.size());
  };
  f.rss_kb = field("VmRSS:");
  f.anon_kb = field("RssAnon:");
  f.file_kb = field("RssFile:");
  return f;
}

// What the shim logs each time it goes quiet, after trimming:
// "idle: heap N B in use, M B free".
constexpr std::string_view kIdleHeap = "idle: heap ";

// N from the shim's last idle line; 0 if none.
long LastIdleHeap(const std::string& log) {
  size_t at = log.rfind(kIdleHeap);
  return at == std::string::npos ? 0 : std::atol(log.c_str() + at + kIdleHeap.size());
}

class SoakTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(ctrd_.ok()) << ctrd_.log();
    rootfs_ = ctrd_.dir() + "/rootfs";
    ASSERT_TRUE(MakeBusyboxRootfs(rootfs_));
  }
  std::vector<std::string> Cri(const std::string& type) {
    return {"--annotation", "io.kubernetes.cri.container-type=" + type, "--annotation",
            "io.kubernetes.cri.sandbox-id=soak"};
  }
  // Every call carries a deadline, as CRI's do (containerd passes it on to
  // the shim): the shim must not keep anything of a call until its deadline.
  void Lifecycle(const std::string& id) {
    std::vector<std::string> a = {"--timeout", "10m",       "run",
                                  "--rm",      "--runtime", "io.containerd.runhcs.v1"};
    for (auto& x : Cri("container")) a.push_back(x);
    a.insert(a.end(), {"--rootfs", rootfs_, id, "/bin/true"});
    RunResult r = ctrd_.Ctr(a);
    ASSERT_EQ(r.exit_code, 0) << id << ": " << r.err;
  }
  void Exec(const std::string& exec_id) {
    RunResult r =
        ctrd_.Ctr({"--timeout", "10m", "task", "exec", "--exec-id", exec_id, "soak", "/bin/true"});
    ASSERT_EQ(r.exit_code, 0) << exec_id << ": " << r.err;
  }

  Containerd ctrd_{
      DirName(RUNHCS_SHIM_BINARY),
      {{"GLIBC_TUNABLES", "glibc.malloc.tcache_count=0:glibc.pthread.stack_cache_size=0"}}};
  std::string rootfs_;
};

TEST_F(SoakTest, AThousandLifecyclesAndExecsLeaveTheShimAsTheyFoundIt) {
  const int n = SoakCount();
  std::vector<std::string> a = {"run", "-d", "--runtime", "io.containerd.runhcs.v1"};
  for (auto& x : Cri("sandbox")) a.push_back(x);
  a.insert(a.end(), {"--rootfs", rootfs_, "soak", "/bin/sleep", "100000"});
  RunResult started = ctrd_.Ctr(a);
  ASSERT_EQ(started.exit_code, 0) << started.err << ctrd_.log();
  ASSERT_TRUE(WaitFor([&] { return ctrd_.TaskStatus("soak") == "RUNNING"; }, 15s));
  pid_t shim =
      std::atoi(RunCommand({"pgrep", "-f", "containerd-shim-runhcs-v1 .*-id soak "}).out.c_str());
  ASSERT_GT(shim, 0);

  // Warm-up: pools, arenas and lazily made things reach their steady size.
  for (int i = 0; i < 200; ++i) ASSERT_NO_FATAL_FAILURE(Lifecycle(fmt::format("warm{}", i)));
  for (int i = 0; i < 200; ++i) ASSERT_NO_FATAL_FAILURE(Exec(fmt::format("warm{}", i)));
  // Idle: the TTRPC server's pooled workers exit after 2 s without work.
  std::this_thread::sleep_for(3s);
  // Where the shim's mounts would be: the containers' bundles (containerd's
  // state) and the shim's own state.
  const std::vector<std::string> mount_roots = {ctrd_.dir(), "/run/runhcs"};
  Footprint before = Measure(shim, mount_roots);
  long heap_before = LastIdleHeap(ctrd_.log());
  auto idle_lines = [&] {
    std::string log = ctrd_.log();
    size_t count = 0;
    for (size_t at = log.find(kIdleHeap); at != std::string::npos; at = log.find(kIdleHeap, at + 1))
      ++count;
    return count;
  };
  const size_t lines_before = idle_lines();

  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) ASSERT_NO_FATAL_FAILURE(Lifecycle(fmt::format("w{}", i)));
  auto t1 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(3s);
  Footprint mid = Measure(shim, mount_roots);
  for (int i = 0; i < n; ++i) ASSERT_NO_FATAL_FAILURE(Exec(fmt::format("e{}", i)));
  auto t2 = std::chrono::steady_clock::now();

  Footprint after;
  std::this_thread::sleep_for(3s);
  WaitFor([&] { return (after = Measure(shim, mount_roots)) == before; }, 20s);
  // The figure after the execs must be a new one, not the last before them.
  WaitFor([&] { return idle_lines() > lines_before + 1; }, 20s);
  ASSERT_GT(idle_lines(), lines_before + 1)
      << "no idle heap line after the execs: nothing to compare";
  long heap_after = LastIdleHeap(ctrd_.log());
  {  // the whole series: a leak shows as a rising line
    std::string log = ctrd_.log();
    for (size_t at = log.find(kIdleHeap); at != std::string::npos; at = log.find(kIdleHeap, at + 1))
      std::cout << "soak: shim log: " << log.substr(at, log.find('\n', at) - at) << "\n";
  }
  std::cout << "soak: " << n << " lifecycles in "
            << std::chrono::duration_cast<std::chrono::seconds>(t1 - t0).count() << " s, " << n
            << " execs in " << std::chrono::duration_cast<std::chrono::seconds>(t2 - t1).count()
            << " s\n"
            << "soak: before " << Describe(before) << "\nsoak: after lifecycles " << Describe(mid)
            << "\nsoak: after execs " << Describe(after) << "\n"
            << fmt::format("soak: rss growth {:.2f}%\n",
                           100.0 * (after.rss_kb - before.rss_kb) / before.rss_kb)
            << fmt::format("soak: live heap {} -> {} B ({:+.2f}%)\n", heap_before, heap_after,
                           heap_before ? 100.0 * (heap_after - heap_before) / heap_before : 0.0);
  EXPECT_EQ(after.fds, before.fds);
  EXPECT_EQ(after.threads, before.threads);
  EXPECT_EQ(after.children, before.children);
  EXPECT_EQ(after.mounts, before.mounts);
  EXPECT_EQ(after.sockets, before.sockets);
  EXPECT_EQ(after.pipes, before.pipes);
  EXPECT_EQ(after.fifos, before.fifos);
  ASSERT_GT(heap_before, 0) << "no idle heap line in the shim's log";
  EXPECT_LE(heap_after, heap_before + heap_before / 100)
      << "the live heap grew by more than 1%: a leak";
  EXPECT_LE(after.rss_kb, before.rss_kb + before.rss_kb / 100) << "RSS grew by more than 1%";

  ctrd_.Ctr({"task", "kill", "-s", "SIGKILL", "soak"});
  WaitFor([&] { return ctrd_.TaskStatus("soak") == "STOPPED"; }, 15s);
  ctrd_.Ctr({"task", "delete", "soak"});
  ctrd_.Ctr({"container", "delete", "soak"});
}

}  // namespace
}  // namespace runhcs::testing
