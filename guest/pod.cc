#include "guest/pod.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <memory>
#include <thread>

#include "base/fd.h"
#include "base/io.h"
#include "guest/netlink.h"

namespace runhcs::guest {

namespace pb = ::runhcs::agent::v1;

namespace {

struct HolderArgs {
  char hostname[65];
  int ready_fd;  // the holder writes one byte here once its namespaces are set up
};

// The holder's (a clone of a multithreaded process: system calls and static
// buffers only, no allocation). In its new mount namespace, every mount but
// the root is detached. Private first: detaching a mount that is a shared
// peer of the agent's would unmount the agent's too.
bool DetachAllButRoot() {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  static char info[64 * 1024];
  static char* points[1024];
  int fd = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t len = 0;
  for (ssize_t n;
       len < sizeof info - 1 && (n = ::read(fd, info + len, sizeof info - 1 - len)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return false;
    }
    len += static_cast<size_t>(n);
  }
  ::close(fd);
  info[len] = '\0';
  // Each line: id parent major:minor root MOUNT-POINT ...; octal escapes
  // (\040) undone in place.
  int count = 0;
  for (char* line = info; *line != '\0' && count < static_cast<int>(std::size(points));) {
    char* end = ::strchr(line, '\n');
    if (end) *end = '\0';
    char* field = line;
    for (int i = 0; i < 4 && field; ++i) {
      field = ::strchr(field, ' ');
      if (field) ++field;
    }
    if (field) {
      char* sp = ::strchr(field, ' ');
      if (sp) *sp = '\0';
      char* out = field;
      for (char* in = field; *in != '\0'; ++in) {
        if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' && in[2] <= '7' &&
            in[3] >= '0' && in[3] <= '7') {
          *out++ = static_cast<char>((in[1] - '0') * 64 + (in[2] - '0') * 8 + (in[3] - '0'));
          in += 3;
        } else {
          *out++ = *in;
        }
      }
      *out = '\0';
      points[count++] = field;
    }
    if (!end) break;
    line = end + 1;
  }
  // Children are listed after their parents; a parent's detach takes its
  // children with it, whose own detach then fails: fine.
  for (int i = count - 1; i >= 0; --i) {
    if (::strcmp(points[i], "/") != 0) ::umount2(points[i], MNT_DETACH);
  }
  return true;
}

int HolderMain(void* arg) {
  auto* a = static_cast<HolderArgs*>(arg);
  if (!DetachAllButRoot()) _exit(4);
  if (a->hostname[0] != '\0' && ::sethostname(a->hostname, ::strlen(a->hostname)) != 0) _exit(2);
  ::prctl(PR_SET_NAME, "pod-holder", 0, 0, 0);
  sigset_t all;
  ::sigfillset(&all);
  ::sigprocmask(SIG_BLOCK, &all, nullptr);
  char ok = 1;
  if (::write(a->ready_fd, &ok, 1) != 1) _exit(3);
  ::close(a->ready_fd);
  for (;;) ::pause();
}

}  // namespace

std::string MacKey(std::string mac) {
  std::transform(mac.begin(), mac.end(), mac.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return mac;
}

StatusOr<pid_t> StartNamespaceHolder(const std::string& hostname) {
  HolderArgs args{};
  if (hostname.size() >= sizeof args.hostname) {
    return InvalidArgumentError("hostname {:?} is longer than 64 bytes", hostname);
  }
  std::copy(hostname.begin(), hostname.end(), args.hostname);
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe for the pod's holder");
  UniqueFd ready_r(ready[0]), ready_w(ready[1]);
  args.ready_fd = ready_w.get();
  // Without CLONE_VM the child runs on its own copy of this stack.
  constexpr size_t kStack = 64 * 1024;
  auto stack = std::make_unique<char[]>(kStack);
  pid_t pid = ::clone(HolderMain, stack.get() + kStack,
                      CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS | SIGCHLD, &args);
  if (pid < 0) return ErrnoError(errno, "clone the pod's namespace holder");
  // Callers enter the holder's namespaces at once (sysctls, the first
  // container): wait until its hostname is set. EOF means it died first.
  ready_w.reset();
  char ok = 0;
  ssize_t n;
  do {
    n = ::read(ready_r.get(), &ok, 1);
  } while (n < 0 && errno == EINTR);
  if (n == 1) return pid;
  int status = 0;
  // The caller's reaper may have collected it already (ECHILD).
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return InternalError(
      "the pod's namespace holder exited while setting up (hostname {:?}, status {})", hostname,
      status);
}

std::map<std::string, std::string> InterfacesByMac(const std::string& sys_class_net) {
  std::map<std::string, std::string> out;
  DIR* d = ::opendir(sys_class_net.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    auto mac = ReadFile(sys_class_net + "/" + name + "/address");
    if (!mac.ok()) continue;
    std::string m = MacKey(*mac);
    while (!m.empty() && std::isspace(static_cast<unsigned char>(m.back()))) m.pop_back();
    out[m] = name;
  }
  ::closedir(d);
  return out;
}

StatusOr<std::string> SysctlPath(const std::string& key) {
  std::string path;
  size_t part = 0;
  for (char c : key) {
    if (c == '.') {
      if (part == 0) break;
      path += '/';
      part = 0;
      continue;
    }
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
      return InvalidArgumentError("{:?} is not a sysctl key", key);
    }
    path += c;
    ++part;
  }
  if (part == 0) return InvalidArgumentError("{:?} is not a sysctl key", key);
  return path;
}

Status ApplyPodSysctls(const std::map<std::string, std::string>& sysctls, pid_t holder,
                       const std::string& proc_sys) {
  if (sysctls.empty()) return OkStatus();
  std::vector<std::pair<std::string, std::string>> writes;
  for (const auto& [key, value] : sysctls) {
    ASSIGN_OR_RETURN(std::string rel, SysctlPath(key));
    writes.emplace_back(proc_sys + "/" + rel, value);
  }
  Status st;
  // setns(2) of ipc and uts changes only the calling thread's namespaces.
  std::thread([&] {
    for (const char* type : {"ipc", "uts"}) {
      std::string p = "/proc/" + std::to_string(holder) + "/ns/" + type;
      UniqueFd ns(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns.valid() || ::setns(ns.get(), 0) != 0) {
        st = ErrnoError(errno, fmt::format("join the pod's {} namespace ({})", type, p));
        return;
      }
    }
    for (const auto& [path, value] : writes) {
      // Never created: a key the kernel does not have is NotFound.
      if (Status w = WriteExistingFile(path, value); !w.ok()) {
        st = w.Wrap("pod sysctl");
        return;
      }
    }
  }).join();
  return st;
}

std::string NetworkStep::ToString() const {
  switch (kind) {
    case Kind::kLinkUp:
      return "ip link set dev " + dev + " up";
    case Kind::kMtu:
      return "ip link set dev " + dev + " mtu " + std::to_string(mtu);
    case Kind::kAddress:
      return std::string("ip ") + (cidr.find(':') != std::string::npos ? "-6 " : "") + "addr add " +
             cidr + " dev " + dev;
    case Kind::kRoute:
      return std::string("ip ") + (v6 ? "-6 " : "") + "route add " + cidr +
             (gateway.empty() ? "" : " via " + gateway) + " dev " + dev;
  }
  return "?";
}

StatusOr<std::vector<NetworkStep>> NetworkSteps(const pb::CreatePodRequest& req,
                                                const std::map<std::string, std::string>& names) {
  using Kind = NetworkStep::Kind;
  std::vector<NetworkStep> steps = {{.kind = Kind::kLinkUp, .dev = "lo"}};
  auto dev_of = [&](const std::string& mac) -> StatusOr<std::string> {
    auto it = names.find(MacKey(mac));
    if (it == names.end()) return NotFoundError("no network interface in the VM has MAC {}", mac);
    return it->second;
  };
  for (const auto& i : req.interfaces()) {
    ASSIGN_OR_RETURN(std::string dev, dev_of(i.mac()));
    if (i.mtu() > 0) steps.push_back({.kind = Kind::kMtu, .dev = dev, .mtu = i.mtu()});
    for (const auto& a : i.addresses())
      steps.push_back({.kind = Kind::kAddress, .dev = dev, .cidr = a});
    steps.push_back({.kind = Kind::kLinkUp, .dev = dev});
  }
  for (bool gateways : {false, true}) {
    for (const auto& r : req.routes()) {
      if (r.gateway().empty() == gateways) continue;
      ASSIGN_OR_RETURN(std::string dev, dev_of(r.interface_mac()));
      steps.push_back({.kind = Kind::kRoute,
                       .dev = dev,
                       .cidr = r.destination(),
                       .gateway = r.gateway(),
                       .v6 = r.ipv6()});
    }
  }
  return steps;
}

Status ApplyNetworkSteps(const std::vector<NetworkStep>& steps) {
  using Kind = NetworkStep::Kind;
  ASSIGN_OR_RETURN(Rtnetlink nl, Rtnetlink::Open());
  for (const auto& s : steps) {
    Status st;
    switch (s.kind) {
      case Kind::kLinkUp:
        st = nl.LinkUp(s.dev);
        break;
      case Kind::kMtu:
        st = nl.SetMtu(s.dev, s.mtu);
        break;
      case Kind::kAddress:
        st = nl.AddAddress(s.dev, s.cidr);
        break;
      case Kind::kRoute:
        st = nl.AddRoute(s.cidr, s.gateway, s.dev, s.v6);
        break;
    }
    RETURN_IF_ERROR(st);
  }
  return OkStatus();
}

Status JoinPodNamespaces(nlohmann::json* spec, const std::vector<std::string>& types,
                         pid_t holder) {
  if (types.empty()) return OkStatus();
  for (const auto& t : types) {
    if (t != "pid" && t != "ipc" && t != "uts")
      return InvalidArgumentError("pod namespace {:?}: only pid, ipc and uts are the pod's", t);
  }
  nlohmann::json& linux_ = (*spec)["linux"];
  if (!linux_.is_object()) linux_ = nlohmann::json::object();
  nlohmann::json& nss = linux_["namespaces"];
  if (!nss.is_array()) nss = nlohmann::json::array();
  for (const auto& t : types) {
    std::string path = "/proc/" + std::to_string(holder) + "/ns/" + t;
    bool found = false;
    for (auto& n : nss) {
      if (n.is_object() && n.value("type", "") == t) {
        n["path"] = path;
        found = true;
      }
    }
    if (!found) nss.push_back({{"type", t}, {"path", path}});
  }
  return OkStatus();
}

bool HasOwnPidNamespace(const nlohmann::json& spec) {
  if (!spec.is_object() || !spec.contains("linux") || !spec["linux"].is_object()) return false;
  const nlohmann::json& linux_ = spec["linux"];
  if (!linux_.contains("namespaces") || !linux_["namespaces"].is_array()) return false;
  const nlohmann::json& nss = linux_["namespaces"];
  for (const auto& n : nss) {
    if (!n.is_object() || !n.contains("type") || !n["type"].is_string()) continue;
    if (n["type"].get<std::string>() != "pid") continue;
    return !n.contains("path") || (n["path"].is_string() && n["path"].get<std::string>().empty());
  }
  return false;
}

}  // namespace runhcs::guest
