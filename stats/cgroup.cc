#include "stats/cgroup.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "base/io.h"

namespace runhcs::stats {
namespace {

namespace v1 = io::containerd::cgroups::v1;
namespace v2 = io::containerd::cgroups::v2;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// Counts the files that could be read, so a cgroup that is gone can be told
// from one with a few files missing.
struct Reader {
  int found = 0;

  bool Text(const std::string& path, std::string* out) {
    auto t = ReadFile(path);
    if (!t.ok()) return false;
    ++found;
    *out = std::move(*t);
    return true;
  }
  // One number; "max" reads as `max_value`. Missing: 0.
  uint64_t U64(const std::string& path, uint64_t max_value = kMax) {
    std::string t;
    if (!Text(path, &t)) return 0;
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    if (t == "max") return max_value;
    return std::strtoull(t.c_str(), nullptr, 10);
  }
  // "key value" lines (memory.stat, cpu.stat, memory.events, ...).
  std::map<std::string, uint64_t> Keyed(const std::string& path) {
    std::map<std::string, uint64_t> kv;
    std::string t;
    if (!Text(path, &t)) return kv;
    std::istringstream in(t);
    std::string key;
    uint64_t v;
    while (in >> key >> v) kv[key] = v;
    return kv;
  }
};

uint64_t Get(const std::map<std::string, uint64_t>& kv, const char* key) {
  auto it = kv.find(key);
  return it == kv.end() ? 0 : it->second;
}

// "/dev/sda" for 8:0, from sysfs; "" when unknown.
std::string DeviceName(uint64_t major, uint64_t minor) {
  auto t = ReadFile(fmt::format("/sys/dev/block/{}:{}/uevent", major, minor));
  if (!t.ok()) return "";
  std::istringstream in(*t);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("DEVNAME=", 0) == 0) return "/dev/" + line.substr(8);
  }
  return "";
}

// blkio files: "8:0 Read 4096" lines (or "8:0 4096" for time/sectors),
// ending with "Total N".
void ParseBlkio(const std::string& text, google::protobuf::RepeatedPtrField<v1::BlkIOEntry>* out) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::string dev, a, b;
    if (!(ls >> dev >> a)) continue;
    size_t colon = dev.find(':');
    if (colon == std::string::npos) continue;  // "Total"
    v1::BlkIOEntry e;
    e.set_major(std::strtoull(dev.c_str(), nullptr, 10));
    e.set_minor(std::strtoull(dev.c_str() + colon + 1, nullptr, 10));
    if (ls >> b) {
      e.set_op(a);
      e.set_value(std::strtoull(b.c_str(), nullptr, 10));
    } else {
      e.set_value(std::strtoull(a.c_str(), nullptr, 10));
    }
    e.set_device(DeviceName(e.major(), e.minor()));
    *out->Add() = std::move(e);
  }
}

void ReadMemoryEntry(Reader& r, const std::string& prefix, v1::MemoryEntry* e) {
  e->set_usage(r.U64(prefix + ".usage_in_bytes"));
  e->set_limit(r.U64(prefix + ".limit_in_bytes"));
  e->set_max(r.U64(prefix + ".max_usage_in_bytes"));
  e->set_failcnt(r.U64(prefix + ".failcnt"));
}

// The page sizes ("2MB", "1GB") of the files `hugetlb.<size><suffix>` in
// `dir`, sorted; none if it cannot be read. Sizes never contain a dot, which
// keeps v2's `hugetlb.<size>.rsvd.current` out.
std::vector<std::string> HugePageSizes(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> sizes;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return sizes;
  const std::string prefix = "hugetlb.";
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n.size() <= prefix.size() + suffix.size() || !n.starts_with(prefix) || !n.ends_with(suffix))
      continue;
    std::string_view size = n.substr(prefix.size(), n.size() - prefix.size() - suffix.size());
    if (size.find('.') == std::string_view::npos) sizes.emplace_back(size);
  }
  ::closedir(d);
  std::sort(sizes.begin(), sizes.end());
  return sizes;
}

}  // namespace

ProcessCgroups ParseProcCgroup(std::string_view text) {
  ProcessCgroups cg;
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    size_t a = line.find(':');
    size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    if (controllers.empty()) {
      cg.v2 = path;
      cg.has_v2 = true;
      continue;
    }
    std::istringstream cs(controllers);
    for (std::string c; std::getline(cs, c, ',');) {
      if (c.rfind("name=", 0) != 0) cg.v1[c] = path;
    }
  }
  return cg;
}

StatusOr<ProcessCgroups> CgroupsOf(pid_t pid) {
  auto t = ReadFile(fmt::format("/proc/{}/cgroup", pid));
  if (!t.ok()) return NotFoundError("cgroups of pid {}: {}", pid, t.status().message());
  return ParseProcCgroup(*t);
}

bool IsUnified(const std::string& root) {
  return ::access((root + "/cgroup.controllers").c_str(), F_OK) == 0;
}

StatusOr<v1::Metrics> ReadV1(const std::string& root, const ProcessCgroups& cg) {
  Reader r;
  v1::Metrics m;
  auto dir = [&](const char* controller) -> std::string {
    auto it = cg.v1.find(controller);
    return it == cg.v1.end() ? "" : root + "/" + controller + it->second;
  };

  if (std::string d = dir("pids"); !d.empty()) {
    m.mutable_pids()->set_current(r.U64(d + "/pids.current"));
    m.mutable_pids()->set_limit(r.U64(d + "/pids.max", 0));
  }
  if (std::string d = dir("cpuacct"); !d.empty()) {
    auto* u = m.mutable_cpu()->mutable_usage();
    u->set_total(r.U64(d + "/cpuacct.usage"));
    std::string per;
    if (r.Text(d + "/cpuacct.usage_percpu", &per)) {
      std::istringstream in(per);
      for (uint64_t v; in >> v;) u->add_per_cpu(v);
    }
    // USER_HZ ticks.
    auto st = r.Keyed(d + "/cpuacct.stat");
    uint64_t ns_per_tick = 1000000000ULL / static_cast<uint64_t>(::sysconf(_SC_CLK_TCK));
    u->set_user(Get(st, "user") * ns_per_tick);
    u->set_kernel(Get(st, "system") * ns_per_tick);
  }
  if (std::string d = dir("cpu"); !d.empty()) {
    auto st = r.Keyed(d + "/cpu.stat");
    auto* t = m.mutable_cpu()->mutable_throttling();
    t->set_periods(Get(st, "nr_periods"));
    t->set_throttled_periods(Get(st, "nr_throttled"));
    t->set_throttled_time(Get(st, "throttled_time"));
  }
  if (std::string d = dir("memory"); !d.empty()) {
    auto st = r.Keyed(d + "/memory.stat");
    auto* mem = m.mutable_memory();
    mem->set_cache(Get(st, "cache"));
    mem->set_rss(Get(st, "rss"));
    mem->set_rss_huge(Get(st, "rss_huge"));
    mem->set_mapped_file(Get(st, "mapped_file"));
    mem->set_dirty(Get(st, "dirty"));
    mem->set_writeback(Get(st, "writeback"));
    mem->set_pg_pg_in(Get(st, "pgpgin"));
    mem->set_pg_pg_out(Get(st, "pgpgout"));
    mem->set_pg_fault(Get(st, "pgfault"));
    mem->set_pg_maj_fault(Get(st, "pgmajfault"));
    mem->set_inactive_anon(Get(st, "inactive_anon"));
    mem->set_active_anon(Get(st, "active_anon"));
    mem->set_inactive_file(Get(st, "inactive_file"));
    mem->set_active_file(Get(st, "active_file"));
    mem->set_unevictable(Get(st, "unevictable"));
    mem->set_hierarchical_memory_limit(Get(st, "hierarchical_memory_limit"));
    mem->set_hierarchical_swap_limit(Get(st, "hierarchical_memsw_limit"));
    mem->set_total_cache(Get(st, "total_cache"));
    mem->set_total_rss(Get(st, "total_rss"));
    mem->set_total_rss_huge(Get(st, "total_rss_huge"));
    mem->set_total_mapped_file(Get(st, "total_mapped_file"));
    mem->set_total_dirty(Get(st, "total_dirty"));
    mem->set_total_writeback(Get(st, "total_writeback"));
    mem->set_total_pg_pg_in(Get(st, "total_pgpgin"));
    mem->set_total_pg_pg_out(Get(st, "total_pgpgout"));
    mem->set_total_pg_fault(Get(st, "total_pgfault"));
    mem->set_total_pg_maj_fault(Get(st, "total_pgmajfault"));
    mem->set_total_inactive_anon(Get(st, "total_inactive_anon"));
    mem->set_total_active_anon(Get(st, "total_active_anon"));
    mem->set_total_inactive_file(Get(st, "total_inactive_file"));
    mem->set_total_active_file(Get(st, "total_active_file"));
    mem->set_total_unevictable(Get(st, "total_unevictable"));
    ReadMemoryEntry(r, d + "/memory", mem->mutable_usage());
    ReadMemoryEntry(r, d + "/memory.memsw", mem->mutable_swap());
    ReadMemoryEntry(r, d + "/memory.kmem", mem->mutable_kernel());
    ReadMemoryEntry(r, d + "/memory.kmem.tcp", mem->mutable_kernel_tcp());
    auto oom = r.Keyed(d + "/memory.oom_control");
    m.mutable_memory_oom_control()->set_oom_kill_disable(Get(oom, "oom_kill_disable"));
    m.mutable_memory_oom_control()->set_under_oom(Get(oom, "under_oom"));
    m.mutable_memory_oom_control()->set_oom_kill(Get(oom, "oom_kill"));
  }
  if (std::string d = dir("blkio"); !d.empty()) {
    auto* b = m.mutable_blkio();
    struct {
      const char* file;
      google::protobuf::RepeatedPtrField<v1::BlkIOEntry>* out;
    } files[] = {
        {"io_service_bytes_recursive", b->mutable_io_service_bytes_recursive()},
        {"io_serviced_recursive", b->mutable_io_serviced_recursive()},
        {"io_queued_recursive", b->mutable_io_queued_recursive()},
        {"io_service_time_recursive", b->mutable_io_service_time_recursive()},
        {"io_wait_time_recursive", b->mutable_io_wait_time_recursive()},
        {"io_merged_recursive", b->mutable_io_merged_recursive()},
        {"io_time_recursive", b->mutable_io_time_recursive()},
        {"sectors_recursive", b->mutable_sectors_recursive()},
    };
    for (auto& f : files) {
      std::string t;
      if (r.Text(d + "/blkio." + f.file, &t)) ParseBlkio(t, f.out);
    }
    // Without a proportional-weight scheduler those are empty; the
    // throttling layer still counts every I/O.
    if (b->io_service_bytes_recursive().empty()) {
      std::string t;
      if (r.Text(d + "/blkio.throttle.io_service_bytes_recursive", &t)) {
        ParseBlkio(t, b->mutable_io_service_bytes_recursive());
      }
      if (r.Text(d + "/blkio.throttle.io_serviced_recursive", &t)) {
        ParseBlkio(t, b->mutable_io_serviced_recursive());
      }
    }
  }
  if (std::string d = dir("hugetlb"); !d.empty()) {
    for (const std::string& size : HugePageSizes(d, ".usage_in_bytes")) {
      auto* h = m.add_hugetlb();
      h->set_pagesize(size);
      h->set_usage(r.U64(d + "/hugetlb." + size + ".usage_in_bytes"));
      h->set_max(r.U64(d + "/hugetlb." + size + ".max_usage_in_bytes"));
      h->set_failcnt(r.U64(d + "/hugetlb." + size + ".failcnt"));
    }
  }
  if (r.found == 0) return NotFoundError("no cgroup v1 files readable under {}", root);
  return m;
}

StatusOr<v2::Metrics> ReadV2(const std::string& dir) {
  Reader r;
  v2::Metrics m;
  m.mutable_pids()->set_current(r.U64(dir + "/pids.current"));
  m.mutable_pids()->set_limit(r.U64(dir + "/pids.max", 0));

  auto cpu = r.Keyed(dir + "/cpu.stat");
  auto* c = m.mutable_cpu();
  c->set_usage_usec(Get(cpu, "usage_usec"));
  c->set_user_usec(Get(cpu, "user_usec"));
  c->set_system_usec(Get(cpu, "system_usec"));
  c->set_nr_periods(Get(cpu, "nr_periods"));
  c->set_nr_throttled(Get(cpu, "nr_throttled"));
  c->set_throttled_usec(Get(cpu, "throttled_usec"));

  auto st = r.Keyed(dir + "/memory.stat");
  auto* mem = m.mutable_memory();
  mem->set_anon(Get(st, "anon"));
  mem->set_file(Get(st, "file"));
  mem->set_kernel_stack(Get(st, "kernel_stack"));
  mem->set_slab(Get(st, "slab"));
  mem->set_sock(Get(st, "sock"));
  mem->set_shmem(Get(st, "shmem"));
  mem->set_file_mapped(Get(st, "file_mapped"));
  mem->set_file_dirty(Get(st, "file_dirty"));
  mem->set_file_writeback(Get(st, "file_writeback"));
  mem->set_anon_thp(Get(st, "anon_thp"));
  mem->set_inactive_anon(Get(st, "inactive_anon"));
  mem->set_active_anon(Get(st, "active_anon"));
  mem->set_inactive_file(Get(st, "inactive_file"));
  mem->set_active_file(Get(st, "active_file"));
  mem->set_unevictable(Get(st, "unevictable"));
  mem->set_slab_reclaimable(Get(st, "slab_reclaimable"));
  mem->set_slab_unreclaimable(Get(st, "slab_unreclaimable"));
  mem->set_pgfault(Get(st, "pgfault"));
  mem->set_pgmajfault(Get(st, "pgmajfault"));
  // Newer kernels split these by anon/file; the message has the sum.
  mem->set_workingset_refault(Get(st, "workingset_refault") + Get(st, "workingset_refault_anon") +
                              Get(st, "workingset_refault_file"));
  mem->set_workingset_activate(Get(st, "workingset_activate") +
                               Get(st, "workingset_activate_anon") +
                               Get(st, "workingset_activate_file"));
  mem->set_workingset_nodereclaim(Get(st, "workingset_nodereclaim"));
  mem->set_pgrefill(Get(st, "pgrefill"));
  mem->set_pgscan(Get(st, "pgscan"));
  mem->set_pgsteal(Get(st, "pgsteal"));
  mem->set_pgactivate(Get(st, "pgactivate"));
  mem->set_pgdeactivate(Get(st, "pgdeactivate"));
  mem->set_pglazyfree(Get(st, "pglazyfree"));
  mem->set_pglazyfreed(Get(st, "pglazyfreed"));
  mem->set_thp_fault_alloc(Get(st, "thp_fault_alloc"));
  mem->set_thp_collapse_alloc(Get(st, "thp_collapse_alloc"));
  mem->set_usage(r.U64(dir + "/memory.current"));
  mem->set_usage_limit(r.U64(dir + "/memory.max"));
  mem->set_swap_usage(r.U64(dir + "/memory.swap.current"));
  mem->set_swap_limit(r.U64(dir + "/memory.swap.max"));

  auto ev = r.Keyed(dir + "/memory.events");
  auto* e = m.mutable_memory_events();
  e->set_low(Get(ev, "low"));
  e->set_high(Get(ev, "high"));
  e->set_max(Get(ev, "max"));
  e->set_oom(Get(ev, "oom"));
  e->set_oom_kill(Get(ev, "oom_kill"));

  std::string io;
  if (r.Text(dir + "/io.stat", &io)) {
    std::istringstream in(io);
    for (std::string line; std::getline(in, line);) {
      std::istringstream ls(line);
      std::string dev;
      if (!(ls >> dev)) continue;
      size_t colon = dev.find(':');
      if (colon == std::string::npos) continue;
      auto* entry = m.mutable_io()->add_usage();
      entry->set_major(std::strtoull(dev.c_str(), nullptr, 10));
      entry->set_minor(std::strtoull(dev.c_str() + colon + 1, nullptr, 10));
      for (std::string kv; ls >> kv;) {
        size_t eq = kv.find('=');
        if (eq == std::string::npos) continue;
        std::string k = kv.substr(0, eq);
        uint64_t v = std::strtoull(kv.c_str() + eq + 1, nullptr, 10);
        if (k == "rbytes") entry->set_rbytes(v);
        if (k == "wbytes") entry->set_wbytes(v);
        if (k == "rios") entry->set_rios(v);
        if (k == "wios") entry->set_wios(v);
      }
    }
  }
  for (const std::string& size : HugePageSizes(dir, ".current")) {
    auto* h = m.add_hugetlb();
    h->set_pagesize(size);
    h->set_current(r.U64(dir + "/hugetlb." + size + ".current"));
    h->set_max(r.U64(dir + "/hugetlb." + size + ".max"));
  }
  if (r.found == 0) return NotFoundError("no cgroup v2 files readable in {}", dir);
  return m;
}

StatusOr<runhcs::wkt::Any> ReadMetricsAny(const std::string& root, const ProcessCgroups& cg) {
  runhcs::wkt::Any any;
  if (IsUnified(root)) {
    if (!cg.has_v2) return NotFoundError("the process has no cgroup v2 path");
    ASSIGN_OR_RETURN(auto m, ReadV2(root + cg.v2));
    any.set_type_url(kV2MetricsType);
    any.set_value(m.SerializeAsString());
  } else {
    ASSIGN_OR_RETURN(auto m, ReadV1(root, cg));
    any.set_type_url(kV1MetricsType);
    any.set_value(m.SerializeAsString());
  }
  return any;
}

std::string MemoryDir(const std::string& root, const ProcessCgroups& cg) {
  if (IsUnified(root)) return cg.has_v2 ? root + cg.v2 : "";
  auto it = cg.v1.find("memory");
  return it == cg.v1.end() ? "" : root + "/memory" + it->second;
}

}  // namespace runhcs::stats
