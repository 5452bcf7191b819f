#include "service/shim_registry.h"

#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/io.h"

namespace runhcs::service {
namespace {

bool ValidName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

std::string ReadLink(const std::string& path) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

}  // namespace

Status ShimRegistry::Register(const std::string& name, const std::string& socket_path) const {
  if (!ValidName(name)) return InvalidArgumentError("invalid shim name {:?}", name);
  RETURN_IF_ERROR(MkdirAll(dir_, 0700));
  // Made under a temporary name and renamed over: a reader never sees a
  // half-made entry, and a stale one is replaced atomically.
  std::string tmp = dir_ + "/." + name + "." + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  if (::symlink(socket_path.c_str(), tmp.c_str()) != 0) {
    return ErrnoError(errno, "registry: symlink " + tmp);
  }
  if (::rename(tmp.c_str(), (dir_ + "/" + name).c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError(err, "registry: rename to " + name);
  }
  return OkStatus();
}

void ShimRegistry::Unregister(const std::string& name, const std::string& socket_path) const {
  if (!ValidName(name)) return;
  std::string path = dir_ + "/" + name;
  if (ReadLink(path) == socket_path) ::unlink(path.c_str());
}

std::vector<ShimEntry> ShimRegistry::List() const {
  std::vector<ShimEntry> out;
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;
    std::string path = dir_ + "/" + name;
    std::string target = ReadLink(path);
    struct stat st;
    if (target.empty() || ::stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    out.push_back({name, target});
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const ShimEntry& a, const ShimEntry& b) { return a.name < b.name; });
  return out;
}

StatusOr<ShimEntry> ShimRegistry::Resolve(const std::string& name) const {
  if (!ValidName(name)) return InvalidArgumentError("invalid shim name {:?}", name);
  std::vector<ShimEntry> matches;
  for (auto& e : List()) {
    if (e.name == name) return e;
    if (e.name.compare(0, name.size(), name) == 0) matches.push_back(std::move(e));
  }
  if (matches.empty()) return NotFoundError("no such shim {:?}", name);
  if (matches.size() > 1) {
    std::string names;
    for (const auto& m : matches) names += (names.empty() ? "" : ", ") + m.name;
    return FailedPreconditionError("multiple shims beginning with {:?}: {}", name, names);
  }
  return matches.front();
}

}  // namespace runhcs::service
