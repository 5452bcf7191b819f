// Stacks of every thread of this process, for `shimdiag stacks`.
//
// Capture (CaptureThreadStacks):
//  - The calling thread unwinds itself; every other thread is sent
//    kStackSignal and unwinds itself in the handler (glibc backtrace over
//    .eh_frame, async-signal-safe once primed by InstallStackHandler), one
//    thread at a time, into one preallocated slot.
//  - A thread that does not answer within kStackAnswerTimeout (the signal is
//    blocked, or it sleeps uninterruptibly in the kernel) is reported with
//    its kernel stack from /proc instead; a late answer is discarded.
//  - The handler is installed with SA_RESTART; poll/epoll waits still return
//    EINTR when it runs, so every wait loop in this project retries on EINTR.
//  - Callers are serialised; a dump never blocks the threads for longer
//    than their own unwinding.
//
// Symbolization is a separate step because reading the DWARF of a large
// static binary costs tens of MiB that a long-lived daemon would keep:
// SymbolizeHere() does it in the calling process (tests, the helper), and
// the shim runs it in a short-lived child of its own executable.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"

namespace runhcs {

inline constexpr std::chrono::milliseconds kStackAnswerTimeout{250};

struct ThreadStack {
  pid_t tid = 0;
  std::string name;            // /proc/.../comm
  std::vector<uintptr_t> pcs;  // innermost first
  bool answered = false;       // false: pcs empty, kernel_stack set
  std::string kernel_stack;
};

// Installs the handler for the stack signal (idempotent; process-wide).
Status InstallStackHandler();
// Every thread of this process, the caller first. Needs InstallStackHandler.
std::vector<ThreadStack> CaptureThreadStacks();

// One frame of a symbolized pc; an inlined call gives several per pc,
// innermost first.
struct Frame {
  std::string function;  // demangled; "" when unknown
  std::string file;      // "" when there is no line information
  int line = 0;
};
// Symbolizes pcs of the main executable given relative to its load address
// (see MainExecutableBase). One entry per pc.
using Symbolizer =
    std::function<std::vector<std::vector<Frame>>(const std::vector<uintptr_t>& rel_pcs)>;

uintptr_t MainExecutableBase();
// Reads the executable's symbol table and debug information in this process.
std::vector<std::vector<Frame>> SymbolizeHere(const std::vector<uintptr_t>& rel_pcs);
// The helper's side of a pipe protocol: hex relative pcs on `in`, one per
// line; for each, "<n>\n" then n lines "function\tfile\tline" on `out`.
int SymbolizeMain(int in_fd, int out_fd);
// The caller's side: runs `argv` (an executable whose SymbolizeMain serves
// stdin/stdout) and parses its answer.
StatusOr<std::vector<std::vector<Frame>>> SymbolizeInChild(const std::vector<std::string>& argv,
                                                           const std::vector<uintptr_t>& rel_pcs);

// "thread <tid> <name>:" then one "  #i 0x<pc> function (file:line)" line per
// frame; pcs outside the main executable are named through the dynamic
// symbol table (shared libraries), unknown ones as "??".
std::string FormatStacks(const std::vector<ThreadStack>& stacks, const Symbolizer& symbolize);

}  // namespace runhcs
