// runhcs-agent: PID 1 of the utility VM. Sets up the guest, then serves
// runhcs.agent.v1.Agent on the virtio-serial port "runhcs.agent" for as long
// as the VM lives, reconnecting whenever the host side reconnects.
//
// Not PID 1, `--port DEV` names the port's device node instead (debugging an
// agent started by hand inside a VM).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <thread>

#include "base/fd.h"
#include "base/io.h"
#include "base/log.h"
#include "base/reaper.h"
#include "base/thread_group.h"
#include "guest/agent_service.h"
#include "guest/guest_init.h"
#include "guest/warm_up.h"
#include "proto/agent_channel.h"
#include "ttrpc/server.h"

namespace {

// In the initramfs (guest/image/build-image.sh).
constexpr char kModuleList[] = "/early/load.list";
constexpr char kSystemModuleList[] = "/early/load-system.list";
// On the system disk, mounted at /usr (/lib is /usr/lib).
constexpr char kLaterModuleList[] = "/lib/modules/load-later.list";
constexpr int kSystemDiskWaitMs = 10000;

// Waits until the host end of the virtio-serial port is connected: while it
// is not, poll reports POLLHUP (and a read would return EOF at once).
runhcs::UniqueFd OpenConnectedPort(const std::string& path) {
  for (;;) {
    runhcs::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    for (;;) {
      pollfd p{fd.get(), POLLIN, 0};
      ::poll(&p, 1, 100);
      if (!(p.revents & POLLHUP)) return fd;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

// Seconds since the kernel started (CLOCK_BOOTTIME): where boot time goes,
// in the agent's log.
double SinceBoot() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

[[noreturn]] void PowerOff() {
  ::sync();
  ::reboot(RB_POWER_OFF);
  ::_exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace runhcs;
  const bool pid1 = ::getpid() == 1;
  std::string port;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--port") == 0 && i + 1 < argc) port = argv[++i];
  }
  InitLogging("info");
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGCHLD, SIGTERM, SIGINT}) sigaddset(&mask, s);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  const double started = SinceBoot();
  double modules_loaded = started, port_found = started;
  if (pid1) {
    Status st = guest::MountBasics();
    if (!st.ok()) spdlog::warn("{}", st.ToString());
    // Only what reaching the host needs before serving; the rest follows.
    st = guest::LoadModules(kModuleList);
    if (!st.ok()) spdlog::warn("{}", st.ToString());
    modules_loaded = SinceBoot();
    auto found = guest::FindVirtioPort(agent::kPortName, 10000);
    if (!found.ok()) {
      spdlog::error("{}", found.status().ToString());
      PowerOff();
    }
    port = *found;
    port_found = SinceBoot();
  }
  if (port.empty()) {
    std::fprintf(stderr, "usage: runhcs-agent --port PATH (or run as PID 1 in the VM)\n");
    return 2;
  }
  Reaper::Get().Enable();
  std::shared_ptr<guest::GuestSetup> setup;
  if (pid1) setup = std::make_shared<guest::GuestSetup>();
  guest::AgentService svc({.agent_version = RUNHCS_VERSION_STRING,
                           .on_shutdown =
                               [pid1] {
                                 if (pid1) PowerOff();
                                 ::kill(::getpid(), SIGTERM);
                               },
                           .setup = setup,
                           .warm_up = [] { return guest::WarmUpRuntime({}); }});
  // One connection (the host) carries every long poll of every process in
  // the VM (ReadStream x2 and WaitProcess per process, WaitOom per
  // container), each holding a worker while it waits: a pod with dozens of
  // containers and execs must not run out of them. Idle workers leave.
  ttrpc::Server server(ttrpc::Server::Options{.max_running_per_connection = 1024});
  svc.Register(&server);
  const double serving = SinceBoot();

  // Owned, and never joined: the agent ends with the VM.
  Status acc = ThreadGroup::Get().Spawn("agent-port", [&server, port] {
    for (;;) {
      UniqueFd fd = OpenConnectedPort(port);
      server.ServeConnection(std::move(fd));
      // One host connection at a time; reopen when it ends.
      while (server.connection_count() > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  if (!acc.ok()) {
    spdlog::critical("{}", acc.ToString());
    return 2;
  }
  // After the port is served: a line on the serial console takes a few ms
  // under TCG, which the host's first Ping need not wait for.
  spdlog::info(
      "agent serving on {} at {:.3f} s since boot (started {:.3f}, modules {:.3f}, port {:.3f})",
      port, serving, started, modules_loaded, port_found);
  if (setup) {
    // Off the path to serving: under TCG the kernel unpacks an initramfs
    // at ~40 ms per MB before init runs, a disk costs nothing until read.
    auto set_up = [setup, &svc] {
      Status st = guest::LoadModules(kSystemModuleList);
      if (st.ok()) st = guest::MountSystemDisk("/usr", kSystemDiskWaitMs);
      // What the first container would otherwise pay, paid while the host
      // still sets the pod up: as soon as crun is there (the modules below
      // are not the warm-up's), so that it is mostly done when the first
      // create comes. Started before setup is done: a PrepareTemplate that
      // the latch lets through then sees it running and waits (else the
      // template could hold it half-way).
      if (st.ok()) svc.StartWarmUp();
      if (st.ok()) {
        Status later = guest::LoadModules(kLaterModuleList);
        if (!later.ok()) spdlog::warn("{}", later.ToString());
        // Not fatal: without it the VM only holds more host memory.
        if (Status mem = guest::TuneMemoryReturn(); !mem.ok())
          spdlog::warn("returning free memory to the host: {}", mem.ToString());
      } else {
        spdlog::error("system disk: {}", st.ToString());
      }
      spdlog::info("setup done at {:.3f} s since boot", SinceBoot());
      setup->status = st;
      setup->done.Open();
    };
    if (!ThreadGroup::Get().Spawn("setup", set_up).ok()) set_up();
  }

  UniqueFd sfd(::signalfd(-1, &mask, SFD_CLOEXEC));
  for (;;) {
    signalfd_siginfo si;
    ssize_t n = ::read(sfd.get(), &si, sizeof si);
    if (n != sizeof si) {
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    if (si.ssi_signo == SIGCHLD) {
      Reaper::Get().ReapAll();
    } else if (!pid1) {
      break;
    }
  }
  server.Shutdown(std::chrono::seconds(1));
  return 0;
}
