#include "base/stacks.h"

#include <cxxabi.h>
#include <dirent.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <sstream>

#include <fmt/format.h>

#include "base/fd.h"
#include "base/io.h"
#include "base/reaper.h"

// libbacktrace (shipped with GCC) reads symbols and DWARF line tables. Its
// header sits in GCC's private include directory, which must not be on the
// include path of another compiler, so the four entry points are declared here.
extern "C" {
struct backtrace_state;
typedef void (*backtrace_error_callback)(void* data, const char* msg, int errnum);
typedef int (*backtrace_full_callback)(void* data, uintptr_t pc, const char* filename, int lineno,
                                       const char* function);
typedef void (*backtrace_syminfo_callback)(void* data, uintptr_t pc, const char* symname,
                                           uintptr_t symval, uintptr_t symsize);
struct backtrace_state* backtrace_create_state(const char* filename, int threaded,
                                               backtrace_error_callback error_callback, void* data);
int backtrace_pcinfo(struct backtrace_state* state, uintptr_t pc, backtrace_full_callback callback,
                     backtrace_error_callback error_callback, void* data);
int backtrace_syminfo(struct backtrace_state* state, uintptr_t addr,
                      backtrace_syminfo_callback callback, backtrace_error_callback error_callback,
                      void* data);
}

namespace runhcs {
namespace {

constexpr int kMaxFrames = 64;
// Frames of the handler itself (the handler and the signal trampoline).
constexpr int kHandlerFrames = 2;

int StackSignal() { return SIGRTMIN + 3; }

pid_t Gettid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// The one slot a signalled thread fills. `want` holds the tid asked for;
// the thread that swaps it to -1 owns the slot until it acknowledges.
struct Slot {
  std::atomic<int64_t> want{0};
  int n = 0;
  void* pcs[kMaxFrames];
};
Slot g_slot;
int g_ack_write = -1;
int g_ack_read = -1;
std::mutex g_capture_mu;

void OnStackSignal(int, siginfo_t*, void*) {
  int saved = errno;
  void* local[kMaxFrames];
  int n = ::backtrace(local, kMaxFrames);
  int64_t me = Gettid();
  if (g_slot.want.compare_exchange_strong(me, -1)) {
    g_slot.n = n;
    std::memcpy(g_slot.pcs, local, sizeof(void*) * static_cast<size_t>(n));
    char b = 1;
    (void)!::write(g_ack_write, &b, 1);
  }
  errno = saved;
}

std::vector<uintptr_t> ToPcs(void* const* frames, int n, int skip) {
  std::vector<uintptr_t> out;
  for (int i = skip; i < n; ++i) out.push_back(reinterpret_cast<uintptr_t>(frames[i]));
  return out;
}

std::string ThreadFile(pid_t tid, const char* name) {
  auto s = ReadFile(fmt::format("/proc/self/task/{}/{}", tid, name));
  if (!s.ok()) return "";
  std::string v = *s;
  while (!v.empty() && v.back() == '\n') v.pop_back();
  return v;
}

bool WaitAck(std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    pollfd p{g_ack_read, POLLIN, 0};
    int n = ::poll(&p, 1, left.count() > 0 ? static_cast<int>(left.count()) : 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    char b;
    if (::read(g_ack_read, &b, 1) == 1) return true;
  }
}

std::string Demangle(const char* name) {
  if (name == nullptr) return "";
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> d(
      abi::__cxa_demangle(name, nullptr, nullptr, &status), &std::free);
  return status == 0 && d ? std::string(d.get()) : std::string(name);
}

struct MainRange {
  uintptr_t base = 0;
  uintptr_t lo = UINTPTR_MAX;
  uintptr_t hi = 0;
};

// The main executable is the first object dl_iterate_phdr reports.
MainRange MainExecutableRange() {
  MainRange r;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* m = static_cast<MainRange*>(data);
        m->base = info->dlpi_addr;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const auto& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_LOAD) continue;
          m->lo = std::min<uintptr_t>(m->lo, info->dlpi_addr + ph.p_vaddr);
          m->hi = std::max<uintptr_t>(m->hi, info->dlpi_addr + ph.p_vaddr + ph.p_memsz);
        }
        return 1;  // stop after the first
      },
      &r);
  return r;
}

}  // namespace

Status InstallStackHandler() {
  static std::once_flag once;
  static Status result;
  std::call_once(once, [] {
    int p[2];
    if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
      result = ErrnoError(errno, "stack signal pipe");
      return;
    }
    g_ack_read = p[0];
    g_ack_write = p[1];
    // The first backtrace() may load the unwinder: do it here, not in a
    // signal handler.
    void* prime[2];
    (void)::backtrace(prime, 2);
    struct sigaction sa = {};
    sa.sa_sigaction = OnStackSignal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(StackSignal(), &sa, nullptr) != 0) result = ErrnoError(errno, "sigaction");
  });
  return result;
}

std::vector<ThreadStack> CaptureThreadStacks() {
  std::lock_guard<std::mutex> l(g_capture_mu);
  std::vector<ThreadStack> out;
  pid_t self = Gettid();
  {
    ThreadStack me;
    me.tid = self;
    me.name = ThreadFile(self, "comm");
    void* frames[kMaxFrames];
    int n = ::backtrace(frames, kMaxFrames);
    me.pcs = ToPcs(frames, n, 0);
    me.answered = true;
    out.push_back(std::move(me));
  }
  std::vector<pid_t> tids;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) {
      char* end = nullptr;
      long v = std::strtol(e->d_name, &end, 10);
      if (end && *end == '\0' && v > 0 && v != self) tids.push_back(static_cast<pid_t>(v));
    }
    ::closedir(d);
  }
  for (pid_t tid : tids) {
    ThreadStack t;
    t.tid = tid;
    t.name = ThreadFile(tid, "comm");
    g_slot.want.store(tid);
    bool ok =
        ::syscall(SYS_tgkill, ::getpid(), tid, StackSignal()) == 0 && WaitAck(kStackAnswerTimeout);
    if (!ok) {
      int64_t expected = tid;
      if (!g_slot.want.compare_exchange_strong(expected, 0)) {
        // The thread took the slot just now: its answer is imminent.
        ok = WaitAck(std::chrono::seconds(5));
      }
    }
    if (ok) {
      t.pcs = ToPcs(g_slot.pcs, g_slot.n, kHandlerFrames);
      t.answered = true;
    } else {
      t.kernel_stack = ThreadFile(tid, "stack");
    }
    g_slot.want.store(0);
    if (!t.name.empty() || ok) out.push_back(std::move(t));  // a thread that ended has no comm
  }
  return out;
}

uintptr_t MainExecutableBase() { return MainExecutableRange().base; }

std::vector<std::vector<Frame>> SymbolizeHere(const std::vector<uintptr_t>& rel_pcs) {
  std::vector<std::vector<Frame>> out(rel_pcs.size());
  backtrace_state* state = backtrace_create_state(nullptr, /*threaded=*/0, nullptr, nullptr);
  if (state == nullptr) return out;
  uintptr_t base = MainExecutableBase();
  for (size_t i = 0; i < rel_pcs.size(); ++i) {
    uintptr_t pc = rel_pcs[i] + base;
    auto* frames = &out[i];
    backtrace_pcinfo(
        state, pc,
        [](void* data, uintptr_t, const char* file, int line, const char* fn) -> int {
          if (fn == nullptr && file == nullptr) return 0;
          static_cast<std::vector<Frame>*>(data)->push_back(
              Frame{Demangle(fn), file ? file : "", line});
          return 0;
        },
        [](void*, const char*, int) {}, frames);
    if (frames->empty()) {
      backtrace_syminfo(
          state, pc,
          [](void* data, uintptr_t, const char* sym, uintptr_t, uintptr_t) {
            if (sym) static_cast<std::vector<Frame>*>(data)->push_back(Frame{Demangle(sym), "", 0});
          },
          [](void*, const char*, int) {}, frames);
    }
  }
  return out;
}

int SymbolizeMain(int in_fd, int out_fd) {
  auto input = ReadAll(in_fd);
  if (!input.ok()) return 1;
  std::vector<uintptr_t> pcs;
  std::istringstream in(*input);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) pcs.push_back(std::strtoull(line.c_str(), nullptr, 16));
  }
  std::string text;
  for (const auto& frames : SymbolizeHere(pcs)) {
    text += fmt::format("{}\n", frames.size());
    for (const auto& f : frames) text += fmt::format("{}\t{}\t{}\n", f.function, f.file, f.line);
  }
  return WriteAll(out_fd, text).ok() ? 0 : 1;
}

StatusOr<std::vector<std::vector<Frame>>> SymbolizeInChild(const std::vector<std::string>& argv,
                                                           const std::vector<uintptr_t>& rel_pcs) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  UniqueFd in_r(in[0]), in_w(in[1]);
  if (::pipe2(out, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  UniqueFd out_r(out[0]), out_w(out[1]);
  SpawnOptions so;
  so.argv = argv;
  so.fds = {{0, in_r.get()}, {1, out_w.get()}};
  ASSIGN_OR_RETURN(pid_t pid, Reaper::Get().Spawn(so));
  in_r.reset();
  out_w.reset();
  std::string input;
  for (uintptr_t pc : rel_pcs) input += fmt::format("{:x}\n", pc);
  Status wst = WriteAll(in_w.get(), input);
  in_w.reset();
  auto read = ReadAll(out_r.get());
  std::string text = read.ok() ? *read : "";
  auto code = Reaper::Get().Wait(pid, std::chrono::steady_clock::now() + std::chrono::seconds(30));
  if (!code.ok()) {
    ::kill(pid, SIGKILL);
    (void)Reaper::Get().Wait(pid);
    return code.status().Wrap("symbolizer");
  }
  if (!wst.ok()) return wst.Wrap("symbolizer input");
  if (*code != 0) return InternalError("symbolizer exited {}", *code);
  std::vector<std::vector<Frame>> result;
  std::istringstream is(text);
  for (std::string line; std::getline(is, line);) {
    size_t n = std::strtoul(line.c_str(), nullptr, 10);
    std::vector<Frame> frames;
    for (size_t i = 0; i < n && std::getline(is, line); ++i) {
      Frame f;
      size_t a = line.find('\t'), b = line.rfind('\t');
      if (a == std::string::npos || b == a) continue;
      f.function = line.substr(0, a);
      f.file = line.substr(a + 1, b - a - 1);
      f.line = std::atoi(line.c_str() + b + 1);
      frames.push_back(std::move(f));
    }
    result.push_back(std::move(frames));
  }
  if (result.size() != rel_pcs.size())
    return InternalError("symbolizer answered {} of {} pcs", result.size(), rel_pcs.size());
  return result;
}

std::string FormatStacks(const std::vector<ThreadStack>& stacks, const Symbolizer& symbolize) {
  MainRange main = MainExecutableRange();
  // Return addresses point after the call; pc - 1 lies in the calling line.
  std::vector<uintptr_t> rel;
  for (const auto& t : stacks) {
    for (uintptr_t pc : t.pcs) {
      if (pc > main.lo && pc <= main.hi) rel.push_back(pc - 1 - main.base);
    }
  }
  std::vector<std::vector<Frame>> names;
  if (symbolize && !rel.empty()) names = symbolize(rel);
  size_t k = 0;
  std::string out;
  for (const auto& t : stacks) {
    out += fmt::format("thread {} {}:\n", t.tid, t.name);
    if (!t.answered) {
      out += "  (did not answer the stack signal; kernel stack:)\n";
      std::istringstream ks(t.kernel_stack);
      for (std::string line; std::getline(ks, line);) out += "  " + line + "\n";
    }
    for (size_t i = 0; i < t.pcs.size(); ++i) {
      uintptr_t pc = t.pcs[i];
      std::string head = fmt::format("  #{:<2} 0x{:016x} ", i, pc);
      if (pc > main.lo && pc <= main.hi) {
        const std::vector<Frame>* fr = k < names.size() ? &names[k] : nullptr;
        ++k;
        if (fr == nullptr || fr->empty()) {
          out += head + "??\n";
          continue;
        }
        for (size_t j = 0; j < fr->size(); ++j) {
          const Frame& f = (*fr)[j];
          std::string where = f.file.empty() ? "" : fmt::format(" ({}:{})", f.file, f.line);
          out += (j == 0 ? head : std::string(head.size(), ' ')) +
                 (f.function.empty() ? "??" : f.function) + where +
                 (j + 1 < fr->size() ? " [inlined]" : "") + "\n";
        }
        continue;
      }
      Dl_info info;
      if (::dladdr(reinterpret_cast<void*>(pc), &info) != 0 && info.dli_sname != nullptr) {
        out += head + fmt::format("{}+0x{:x} ({})\n", Demangle(info.dli_sname),
                                  pc - reinterpret_cast<uintptr_t>(info.dli_saddr),
                                  info.dli_fname ? info.dli_fname : "?");
      } else if (::dladdr(reinterpret_cast<void*>(pc), &info) != 0 && info.dli_fname != nullptr) {
        out += head + fmt::format("?? ({})\n", info.dli_fname);
      } else {
        out += head + "??\n";
      }
    }
  }
  return out;
}

}  // namespace runhcs
