#include "stdio/process_io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <future>

#include "base/event_loop.h"
#include "base/io.h"
#include "base/latch.h"

namespace runhcs::stdio {
namespace {

using namespace std::chrono_literals;

class ProcessIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/runhcs-io-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)!::system(("rm -rf " + dir_).c_str()); }
  std::string Fifo(const std::string& name) {
    std::string p = dir_ + "/" + name;
    EXPECT_EQ(::mkfifo(p.c_str(), 0600), 0);
    return p;
  }
  // Plays the client: reads a fifo until EOF.
  std::future<std::string> ReadAllAsync(const std::string& path) {
    return std::async(std::launch::async, [path] {
      UniqueFd fd(::open(path.c_str(), O_RDONLY));
      auto s = ReadAll(fd.get());
      return s.ok() ? *s : std::string("<error>");
    });
  }
  std::string dir_;
};

TEST_F(ProcessIoTest, FifoOutputReachesClientAndEndsWithEof) {
  std::string out = Fifo("out"), err = Fifo("err");
  auto out_reader = ReadAllAsync(out);
  auto err_reader = ReadAllAsync(err);
  std::this_thread::sleep_for(20ms);
  auto io = ProcessIo::Open({"", out, err, false}, {"c", "ns", dir_});
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  // The "process" gets its own copies, as the runtime would.
  UniqueFd pout(::dup((*io)->child_stdout())), perr(::dup((*io)->child_stderr()));
  ASSERT_TRUE((*io)->Started().ok());
  ASSERT_TRUE(WriteAll(pout.get(), "hello out").ok());
  ASSERT_TRUE(WriteAll(perr.get(), "hello err").ok());
  pout.reset();
  perr.reset();
  (*io)->Close(2s);
  EXPECT_EQ(out_reader.get(), "hello out");
  EXPECT_EQ(err_reader.get(), "hello err");
}

// True when `fd` has nothing to read yet (no data, no EOF) for 100 ms.
bool Quiet(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 100) == 0;
}

TEST_F(ProcessIoTest, StdinFifoFeedsProcessUntilTheClientCloses) {
  // No writer yet is not EOF; the client's close is (ctr run sends no
  // CloseIO when its stdin ends before Create returns).
  std::string in = Fifo("in");
  auto io = ProcessIo::Open({in, "", "", false}, {"c", "ns", dir_});
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  UniqueFd pin(::dup((*io)->child_stdin()));
  ASSERT_TRUE((*io)->Started().ok());
  EXPECT_TRUE(Quiet(pin.get())) << "EOF before any client";
  {
    UniqueFd w(::open(in.c_str(), O_WRONLY));
    ASSERT_TRUE(WriteAll(w.get(), "data\n").ok());
    char buf[16];
    ASSERT_FALSE(Quiet(pin.get()));
    EXPECT_EQ(::read(pin.get(), buf, sizeof buf), 5);
    EXPECT_TRUE(Quiet(pin.get())) << "EOF while the client holds the fifo";
    (*io)->CloseStdin();
    EXPECT_TRUE(Quiet(pin.get())) << "CloseStdin cut a client that still writes";
  }
  auto got = ReadAll(pin.get());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "");
  (*io)->Close(1s);
}

TEST_F(ProcessIoTest, CloseStdinGivesTheProcessEofOnceTheClientIsGone) {
  std::string in = Fifo("in");
  auto io = ProcessIo::Open({in, "", "", false}, {"c", "ns", dir_});
  ASSERT_TRUE(io.ok());
  UniqueFd pin(::dup((*io)->child_stdin()));
  ASSERT_TRUE((*io)->Started().ok());
  (*io)->CloseStdin();  // no client ever opened the fifo
  auto got = ReadAll(pin.get());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "");
  (*io)->Close(1s);
}

TEST_F(ProcessIoTest, CloseStdinStillDeliversWhatTheClientWrote) {
  // ctr writes its stdin into the fifo, closes it, then calls CloseIO at
  // once; the process must get the data, then EOF.
  std::string in = Fifo("in");
  auto io = ProcessIo::Open({in, "", "", false}, {"c", "ns", dir_});
  ASSERT_TRUE(io.ok());
  UniqueFd pin(::dup((*io)->child_stdin()));
  ASSERT_TRUE((*io)->Started().ok());
  UniqueFd w(::open(in.c_str(), O_WRONLY));
  ASSERT_TRUE(WriteAll(w.get(), "data\nmore\n").ok());
  w.reset();
  (*io)->CloseStdin();
  auto got = ReadAll(pin.get());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "data\nmore\n");
  (*io)->Close(1s);
}

TEST_F(ProcessIoTest, CloseStdinBeforeStartLosesNothing) {
  // ctr exec: the client fills the fifo and sends CloseIO before Start; a
  // slow reader still gets every byte, then EOF. 1 MiB: far past the pipe
  // and fifo buffers.
  std::string in = Fifo("in");
  auto io = ProcessIo::Open({in, "", "", false}, {"c", "ns", dir_});
  ASSERT_TRUE(io.ok());
  std::string data(1 << 20, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 % 251);
  std::thread client([&] {
    UniqueFd w(::open(in.c_str(), O_WRONLY));
    ASSERT_TRUE(WriteAll(w.get(), data.substr(0, 40000)).ok());  // fits the fifo
  });
  client.join();
  (*io)->CloseStdin();
  UniqueFd pin(::dup((*io)->child_stdin()));
  ASSERT_TRUE((*io)->Started().ok());
  std::string got;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pin.get(), buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
    if (got.size() % 16384 == 0) std::this_thread::sleep_for(1ms);  // a slow reader
  }
  EXPECT_EQ(got.size(), 40000u);
  EXPECT_EQ(got, data.substr(0, 40000));
  (*io)->Close(1s);
}

TEST_F(ProcessIoTest, MissingFifoIsNotFound) {
  auto io = ProcessIo::Open({"", dir_ + "/nope", "", false}, {"c", "ns", dir_});
  EXPECT_EQ(io.status().code(), Code::kNotFound);
  auto in = ProcessIo::Open({dir_ + "/nope-in", "", "", false}, {"c", "ns", dir_});
  EXPECT_EQ(in.status().code(), Code::kNotFound);
}

TEST_F(ProcessIoTest, VanishedReaderDoesNotKillTheShim) {
  std::string out = Fifo("out");
  UniqueFd reader(::open(out.c_str(), O_RDONLY | O_NONBLOCK));
  auto io = ProcessIo::Open({"", out, "", false}, {"c", "ns", dir_});
  ASSERT_TRUE(io.ok());
  UniqueFd pout(::dup((*io)->child_stdout()));
  ASSERT_TRUE((*io)->Started().ok());
  reader.reset();  // the client goes away
  ASSERT_TRUE(WriteAll(pout.get(), "still fine").ok());
  pout.reset();
  (*io)->Close(1s);  // no SIGPIPE, no hang
}

TEST_F(ProcessIoTest, FileUriCollectsBothStreams) {
  std::string log = dir_ + "/sub/dir/c.log";
  auto io = ProcessIo::Open({"", "file://" + log, "file://" + log, false}, {"c", "ns", dir_});
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  UniqueFd pout(::dup((*io)->child_stdout())), perr(::dup((*io)->child_stderr()));
  ASSERT_TRUE((*io)->Started().ok());
  ASSERT_TRUE(WriteAll(pout.get(), "out\n").ok());
  pout.reset();
  std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(WriteAll(perr.get(), "err\n").ok());
  perr.reset();
  (*io)->Close(2s);
  auto got = ReadFile(log);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "out\nerr\n");
}

TEST_F(ProcessIoTest, AFullDiskUnderAFileLogNeverBlocksTheProcess) {
  // /dev/full fails every write with ENOSPC, like a full filesystem.
  auto io = ProcessIo::Open({"", "file:///dev/full", "", false}, {"c", "ns", dir_});
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  UniqueFd pout(::dup((*io)->child_stdout()));
  ASSERT_TRUE((*io)->Started().ok());
  // Far more than a pipe holds: it all goes in only if the shim keeps
  // draining while the destination fails.
  ::fcntl(pout.get(), F_SETFL, O_NONBLOCK);
  std::string chunk(64 * 1024, 'x');
  size_t written = 0;
  while (written < 64 * chunk.size()) {
    ssize_t n = ::write(pout.get(), chunk.data(), chunk.size());
    if (n > 0) {
      written += static_cast<size_t>(n);
      continue;
    }
    pollfd p{pout.get(), POLLOUT, 0};
    if (::poll(&p, 1, 2000) <= 0) break;  // blocked for 2 s: the pump stopped
  }
  EXPECT_GE(written, 64 * chunk.size()) << "the process blocked on its stdout";
  pout.reset();
  (*io)->Close(2s);
}

TEST_F(ProcessIoTest, BinaryLoggerGetsFds345AndEnvironment) {
  std::string script = dir_ + "/logger.sh";
  ASSERT_TRUE(WriteFileAtomic(script,
                              "#!/bin/sh\n"
                              "echo \"$CONTAINER_ID $CONTAINER_NAMESPACE $1 $2\" > \"$2.env\"\n"
                              "exec 5>&-\n"
                              "cat <&3 > \"$2\"\n",
                              0755)
                  .ok());
  std::string out = dir_ + "/captured";
  std::string uri = "binary://" + script + "?out=" + out;
  auto io = ProcessIo::Open({"", uri, uri, false}, {"c9", "ns9", dir_});
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  UniqueFd pout(::dup((*io)->child_stdout()));
  ASSERT_TRUE((*io)->Started().ok());
  ASSERT_TRUE(WriteAll(pout.get(), "logged").ok());
  pout.reset();
  (*io)->Close(2s);
  std::string got;
  for (int i = 0; i < 100 && got != "logged"; ++i) {
    got = ReadFile(out).ok() ? *ReadFile(out) : "";
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(got, "logged");
  EXPECT_EQ(*ReadFile(out + ".env"), "c9 ns9 out " + out + "\n");
}

TEST_F(ProcessIoTest, MissingLoggerBinaryIsNotFound) {
  std::string uri = "binary://" + dir_ + "/no-such-logger";
  auto io = ProcessIo::Open({"", uri, uri, false}, {"c", "ns", dir_});
  EXPECT_EQ(io.status().code(), Code::kNotFound);
}

size_t ThreadCount() {
  return static_cast<size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/task"),
                                           std::filesystem::directory_iterator()));
}

std::string ReadToEof(int fd) {
  ::fcntl(fd, F_SETFL, 0);
  auto s = ReadAll(fd);
  return s.ok() ? *s : "<error>";
}

TEST_F(ProcessIoTest, CopiesRunOnTheEventLoopWithoutAThreadEach) {
  // 20 processes' stdin, stdout and stderr copied at once, byte-exact, and
  // the thread count does not grow with them.
  constexpr int kProcs = 20;
  EventLoop::Get().Post([] {});  // the loop's own thread, started up front
  std::this_thread::sleep_for(20ms);
  size_t before = ThreadCount();
  struct P {
    std::shared_ptr<ProcessIo> io;
    UniqueFd in_w, out_r, err_r;  // the client's ends
    UniqueFd child_in, child_out, child_err;
  };
  std::vector<P> ps(kProcs);
  for (int i = 0; i < kProcs; ++i) {
    std::string in = Fifo("in" + std::to_string(i)), out = Fifo("out" + std::to_string(i)),
                err = Fifo("err" + std::to_string(i));
    ps[i].out_r.reset(::open(out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    ps[i].err_r.reset(::open(err.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    auto io = ProcessIo::Open({in, out, err, false}, {"c", "ns", dir_});
    ASSERT_TRUE(io.ok()) << io.status().ToString();
    ps[i].io = std::move(*io);
    ps[i].in_w.reset(::open(in.c_str(), O_WRONLY | O_CLOEXEC));
    ps[i].child_in.reset(::dup(ps[i].io->child_stdin()));
    ps[i].child_out.reset(::dup(ps[i].io->child_stdout()));
    ps[i].child_err.reset(::dup(ps[i].io->child_stderr()));
    ASSERT_TRUE(ps[i].io->Started().ok());
  }
  const std::string payload(100000, 'p');
  for (auto& p : ps) {
    ASSERT_TRUE(WriteAll(p.in_w.get(), payload).ok());
    p.in_w.reset();
    ASSERT_TRUE(WriteAll(p.child_out.get(), "out").ok());
    ASSERT_TRUE(WriteAll(p.child_err.get(), "err").ok());
  }
  EXPECT_LE(ThreadCount(), before) << "a copy took a thread";
  for (auto& p : ps) {
    // The "process" reads its stdin to EOF: every byte, then the end.
    auto got = ReadAll(p.child_in.get());
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->size(), payload.size());
    p.child_out.reset();
    p.child_err.reset();
  }
  for (auto& p : ps) {
    Latch closed;
    p.io->CloseAsync(2s, [&] { closed.Open(); });
    // The client reads on: the close waits for it (see below).
    EXPECT_EQ(ReadToEof(p.out_r.get()), "out");
    EXPECT_EQ(ReadToEof(p.err_r.get()), "err");
    ASSERT_TRUE(closed.Wait(std::chrono::steady_clock::now() + 1s));
  }
}

TEST_F(ProcessIoTest, CloseAsyncWaitsForTheOutputThenGivesUpAtItsTimeout) {
  std::string out = Fifo("out");
  UniqueFd out_r(::open(out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  auto opened = ProcessIo::Open({"", out, "", false}, {"c", "ns", dir_});
  ASSERT_TRUE(opened.ok());
  std::shared_ptr<ProcessIo> io = std::move(*opened);
  // A grandchild that keeps stdout open: the drain never ends by itself.
  UniqueFd held(::dup(io->child_stdout()));
  ASSERT_TRUE(io->Started().ok());
  ASSERT_TRUE(WriteAll(held.get(), "before").ok());
  auto t0 = std::chrono::steady_clock::now();
  Latch closed;
  io->CloseAsync(300ms, [&] { closed.Open(); });
  EXPECT_FALSE(closed.Wait(t0 + 150ms)) << "closed before its timeout with output still open";
  ASSERT_TRUE(closed.Wait(t0 + 5s));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  // What was written before reached the client, and the fifo is at EOF.
  EXPECT_EQ(ReadToEof(out_r.get()), "before");
  Latch again;
  io->CloseAsync(1s, [&] { again.Open(); });  // already closed: at once
  EXPECT_TRUE(again.Wait(std::chrono::steady_clock::now() + 100ms));
}

// A process whose stdout is the fifo `out`, already gone: it wrote `data`
// and closed its end. The ProcessIo copies it.
std::shared_ptr<ProcessIo> GoneWriter(const std::string& out, const std::string& data,
                                      const std::string& dir) {
  auto opened = ProcessIo::Open({"", out, "", false}, {"c", "ns", dir});
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
  if (!opened.ok()) return nullptr;
  std::shared_ptr<ProcessIo> io = std::move(*opened);
  UniqueFd pout(::dup(io->child_stdout()));
  EXPECT_TRUE(io->Started().ok());
  EXPECT_TRUE(WriteAll(pout.get(), data).ok());
  return io;
}

// The exit waits until the client has taken what the fifo still holds: a
// client that closes its fifos once it sees the exit (CRI, for a container's
// log) would lose it otherwise.
TEST_F(ProcessIoTest, CloseAsyncWaitsUntilTheClientHasReadTheFifo) {
  std::string out = Fifo("out");
  UniqueFd client(::open(out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  const std::string data(30000, 'q');
  auto io = GoneWriter(out, data, dir_);
  ASSERT_NE(io, nullptr);
  Latch closed;
  io->CloseAsync(5s, [&] { closed.Open(); });
  EXPECT_FALSE(closed.Wait(std::chrono::steady_clock::now() + 300ms))
      << "closed while the client had not read the fifo";
  EXPECT_EQ(ReadToEof(client.get()), data);
  EXPECT_TRUE(closed.Wait(std::chrono::steady_clock::now() + 1s));
}

TEST_F(ProcessIoTest, CloseAsyncDoesNotWaitForAClientThatLeft) {
  std::string out = Fifo("out");
  UniqueFd client(::open(out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  auto io = GoneWriter(out, "for nobody", dir_);
  ASSERT_NE(io, nullptr);
  client.reset();  // ctr run -d: the client goes once the task started
  Latch closed;
  io->CloseAsync(5s, [&] { closed.Open(); });
  EXPECT_TRUE(closed.Wait(std::chrono::steady_clock::now() + 1s));
}

// A client whose reader opens only after the process has written and gone
// (ctr and CRI open theirs on a thread of their own) still gets all of it,
// then EOF, also when there was nothing to get. Its open blocks, as Go's
// fifo package makes it: it completes only while a writer has the fifo.
TEST_F(ProcessIoTest, AClientThatOpensLateGetsEverythingThenEof) {
  for (const std::string data : {"late but whole", ""}) {
    std::string out = Fifo(data.empty() ? "empty" : "out");
    auto io = GoneWriter(out, data, dir_);
    ASSERT_NE(io, nullptr);
    Latch closed;
    io->CloseAsync(5s, [&] { closed.Open(); });
    std::this_thread::sleep_for(200ms);
    auto got = ReadAllAsync(out);
    if (got.wait_for(2s) != std::future_status::ready) {
      ADD_FAILURE() << "the client's open or read blocks (" << data.size() << " bytes)";
      UniqueFd partner(::open(out.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    }
    EXPECT_EQ(got.get(), data);
    EXPECT_TRUE(closed.Wait(std::chrono::steady_clock::now() + 1s));
  }
}

TEST_F(ProcessIoTest, CloseAsyncGivesUpOnAClientThatNeverReadsAtItsTimeout) {
  std::string out = Fifo("out");
  UniqueFd client(::open(out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  auto io = GoneWriter(out, "unread", dir_);
  ASSERT_NE(io, nullptr);
  auto t0 = std::chrono::steady_clock::now();
  Latch closed;
  io->CloseAsync(300ms, [&] { closed.Open(); });
  ASSERT_TRUE(closed.Wait(t0 + 5s));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  EXPECT_EQ(ReadToEof(client.get()), "unread");  // still there for a late reader
}

// An exit's release: an exec whose Start never set its io releases at once;
// otherwise its client reads everything first, then the fds close.
TEST_F(ProcessIoTest, ReleaseAtExitDrainsToTheClientThenRunsDone) {
  IoSlot empty;
  bool released = false;
  empty.ReleaseAtExit([&] { released = true; });
  EXPECT_TRUE(released);

  std::string out = Fifo("out");
  UniqueFd client(::open(out.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  const std::string data(20000, 'r');
  IoSlot slot(GoneWriter(out, data, dir_));
  ASSERT_NE(slot.Get(), nullptr);
  Latch closed;
  slot.ReleaseAtExit([&] { closed.Open(); });
  EXPECT_FALSE(closed.Wait(std::chrono::steady_clock::now() + 200ms));
  EXPECT_EQ(ReadToEof(client.get()), data);
  EXPECT_TRUE(closed.Wait(std::chrono::steady_clock::now() + 1s));
}

}  // namespace
}  // namespace runhcs::stdio
