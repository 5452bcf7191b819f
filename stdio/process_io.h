// ProcessIo: the stdio of one container process, between the process and
// what containerd asked for (stdio/uri.h).
//
//  - fifo: the process writes into a pipe; a copier moves it into the fifo.
//    The shim holds an extra read handle on each output fifo, so a client
//    that goes away neither SIGPIPEs the shim nor loses the fifo. When the
//    process's output reaches EOF the fifo writers are closed, which is what
//    `ctr` waits for before it returns.
//  - stdin fifo: copied into a pipe, byte for byte, to EOF: the client's last
//    writer closing (a fifo read end polls as hung up only once a writer
//    has come and gone, so a client that has not opened it yet is not EOF).
//    CloseStdin() is not a cut: it opens and closes a writer of its own, so
//    a client that never opened the fifo, or already closed it, gives EOF
//    once what it wrote is copied; one that still holds it open gives EOF
//    when it closes (as runc-v2). Nothing written is lost, whether
//    CloseStdin comes before Started() (ctr sends CloseIO before an exec's
//    Start) or after, however slowly the process reads.
//  - file:///path: stdout and stderr appended to one file (parents created).
//  - binary:///path?k=v: a logger process gets the read ends of the stdout
//    and stderr pipes as fds 3 and 4 and a "ready" pipe as fd 5; Open()
//    returns once it writes a byte to fd 5 or closes it.
//  - terminal: the runtime is given console_socket(); Started() receives the
//    pty master over SCM_RIGHTS; stdin fifo -> master -> stdout fifo.
//
// Every copy runs on the process-wide EventLoop: no thread per stream. A
// copy whose destination is full stops reading its source until the
// destination drains, so a slow client slows the process, as a pipe would,
// and nothing is dropped (an output destination that fails, e.g. a full
// disk under file://, drops what it cannot take while it fails).
//
// Thread-safety: Open/Started/Close/CloseAsync from one thread at a time
// (the exec's lifecycle); Resize and CloseStdin from any thread,
// concurrently with those. Close blocks, and so must not be called with a
// timeout from the event loop (with a zero timeout it may be);
// CloseAsync never blocks.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "base/thread_annotations.h"
#include "stdio/console.h"
#include "stdio/paths.h"

namespace runhcs::stdio {

struct IoContext {
  std::string id;      // container id (CONTAINER_ID for binary loggers)
  std::string ns;      // namespace (CONTAINER_NAMESPACE)
  std::string bundle;  // cwd for binary loggers
};

class ProcessIo : public std::enable_shared_from_this<ProcessIo> {
 public:
  static StatusOr<std::unique_ptr<ProcessIo>> Open(const Paths& stdio, const IoContext& ctx);
  ~ProcessIo();

  // The process's ends, for the runtime call (-1: not attached).
  int child_stdin() const { return child_in_.get(); }
  int child_stdout() const { return child_out_.get(); }
  int child_stderr() const { return child_err_.get(); }
  // Terminal only: the socket to pass as --console-socket.
  const std::string& console_socket() const { return console_ ? console_->path() : kNoConsole; }

  // The runtime created the process: drop our copies of its ends, receive
  // the pty master (terminal), start copying.
  Status Started();
  // TIOCSWINSZ on the pty master. FailedPrecondition without a terminal.
  Status Resize(uint32_t width, uint32_t height);
  void CloseStdin();
  // Lets the output drain to EOF for up to `timeout`, then stops every
  // copy and closes every fd. Idempotent.
  void Close(std::chrono::milliseconds timeout);
  // Close without blocking: `done` runs once every fd is closed, on the
  // event loop (or at once, on this thread, when already closed). The
  // caller holds the ProcessIo in a shared_ptr. Within the same `timeout`,
  // `done` also waits until each output fifo's client has read what is in
  // it, or has left; a fifo's client sees its EOF then. A client that
  // closes its fifos once it sees the exit (containerd's CRI does, for a
  // container's log) would lose what is left in them, and one whose reader
  // was not open yet (ctr and CRI open theirs on a thread of their own)
  // would lose it all, or block in its open(2) for good.
  void CloseAsync(std::chrono::milliseconds timeout, std::function<void()> done);

  ProcessIo();

 private:
  struct Copy;
  struct Copies;
  void StartCopy(int src, int dst, bool is_output, bool close_dst_at_end);
  void CloseFds();
  StatusOr<UniqueFd> OpenOutputFifo(const std::string& path) EXCLUDES(fifos_mu_);
  // On the loop: `then` once every output fifo is taken (see CloseAsync),
  // the ProcessIo is closed, or `deadline` passed; polls meanwhile.
  void AwaitFifoReaders(std::chrono::steady_clock::time_point deadline, std::function<void()> then)
      EXCLUDES(fifos_mu_);

  bool terminal_ = false;
  UniqueFd child_in_, child_out_, child_err_;  // the process's ends
  UniqueFd stdin_src_;                         // stdin fifo (read)
  std::string stdin_path_;                     // the stdin fifo, for CloseStdin
  UniqueFd stdin_pipe_w_;                      // our end of the process's stdin
  UniqueFd out_r_, err_r_;                     // our ends of stdout/stderr pipes
  UniqueFd out_dst_, err_dst_;                 // fifo/file writers
  std::vector<UniqueFd> keep_;                 // fds the copies read from
  Mutex fifos_mu_;                             // CloseAsync's wait runs on the loop, Close anywhere
  struct OutputFifo {
    UniqueFd ours;     // our reader: writes never EPIPE
    UniqueFd hold;     // our second writer: the fifo stays open for its client
    bool client_seen;  // a reader of the client's has been seen
  };
  std::vector<OutputFifo> output_fifos_ GUARDED_BY(fifos_mu_);
  static inline const std::string kNoConsole;
  std::unique_ptr<ConsoleSocket> console_;
  Mutex master_mu_;  // Resize runs beside Close
  UniqueFd master_ GUARDED_BY(master_mu_);
  pid_t logger_pid_ = -1;

  std::shared_ptr<Copies> copies_;  // shared with the loop's handlers
  std::atomic<bool> closed_{false};
};

// Where a Process keeps its ProcessIo: set once (an init's at construction,
// an exec's in Start), while CloseStdin/ResizePty/ReleaseIo may come from
// other threads, before or during Start. A CloseStdin that comes before the
// ProcessIo exists is applied when it is set.
class IoSlot {
 public:
  IoSlot() = default;
  explicit IoSlot(std::shared_ptr<ProcessIo> io) : io_(std::move(io)) {}
  std::shared_ptr<ProcessIo> Get() EXCLUDES(mu_) {
    MutexLock l(&mu_);
    return io_;
  }
  void Set(std::shared_ptr<ProcessIo> io) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    if (stdin_closed_) io->CloseStdin();
    io_ = std::move(io);
  }
  void CloseStdin() EXCLUDES(mu_) {
    MutexLock l(&mu_);
    stdin_closed_ = true;
    if (io_) io_->CloseStdin();
  }
  // The process exited: its output drains and its clients read what is
  // left (CloseAsync) for up to kExitDrain, then every fd closes and `done`
  // runs (at once if no ProcessIo was ever set). The bound is for output a
  // process's children keep open, or a client that never reads.
  static constexpr std::chrono::seconds kExitDrain{2};
  void ReleaseAtExit(std::function<void()> done) {
    auto io = Get();
    if (!io) return done();
    io->CloseAsync(kExitDrain, std::move(done));
  }

 private:
  Mutex mu_;
  std::shared_ptr<ProcessIo> io_ GUARDED_BY(mu_);
  bool stdin_closed_ GUARDED_BY(mu_) = false;
};

}  // namespace runhcs::stdio
