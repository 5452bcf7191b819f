#include "base/io.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace runhcs {
namespace {

TEST(Io, ReadFullDistinguishesEofAndTruncation) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  UniqueFd r(p[0]), w(p[1]);
  ASSERT_TRUE(WriteAll(w.get(), "abc").ok());
  w.reset();
  char buf[8];
  Status st = ReadFull(r.get(), buf, 5);
  EXPECT_EQ(st.code(), Code::kDataLoss);
  st = ReadFull(r.get(), buf, 1);
  EXPECT_EQ(st.code(), Code::kOutOfRange);
}

TEST(Io, SendAllToAClosedPeerIsUnavailableNotSigpipe) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  ASSERT_TRUE(SendAll(a.get(), "hello", "qmp quit").ok());
  char buf[8];
  ASSERT_EQ(::read(b.get(), buf, sizeof buf), 5);
  b.reset();
  // SIGPIPE's default action would end this test binary here.
  Status st = SendAll(a.get(), "quit", "qmp quit");
  EXPECT_EQ(st.code(), Code::kUnavailable) << st.ToString();
  EXPECT_EQ(st.message(), "qmp quit: the peer closed its socket");
}

TEST(Io, WriteFileAtomicHasNoNewlineAndMode) {
  std::string dir = ::testing::TempDir() + "/ioatomic";
  ::mkdir(dir.c_str(), 0700);
  std::string path = dir + "/address";
  ASSERT_TRUE(WriteFileAtomic(path, "unix:///x", 0644).ok());
  auto got = ReadFile(path);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "unix:///x");
  struct stat sb;
  ASSERT_EQ(::stat(path.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0644u);
  EXPECT_NE(::access((dir + "/.address").c_str(), F_OK), 0);
}

TEST(Io, ReadPidFileTakesWhatARuntimeWritesAndRefusesTheRest) {
  std::string dir = ::testing::TempDir() + "/iopid";
  ::mkdir(dir.c_str(), 0700);
  std::string path = dir + "/init.pid";
  ASSERT_TRUE(WriteFileAtomic(path, "4242", 0600).ok());  // runc: no newline
  EXPECT_EQ(*ReadPidFile(path, "container \"c\""), 4242);
  ASSERT_TRUE(WriteFileAtomic(path, "17\n", 0600).ok());
  EXPECT_EQ(*ReadPidFile(path, "container \"c\""), 17);
  for (const char* bad : {"", "0", "-5", "pid"}) {
    ASSERT_TRUE(WriteFileAtomic(path, bad, 0600).ok());
    auto got = ReadPidFile(path, "container \"c\"");
    ASSERT_FALSE(got.ok()) << bad;
    EXPECT_EQ(got.status().code(), Code::kInternal);
    EXPECT_NE(got.status().message().find("container \"c\": the runtime wrote no pid"),
              std::string::npos)
        << got.status().ToString();
  }
  EXPECT_EQ(ReadPidFile(dir + "/missing.pid", "exec").status().code(), Code::kNotFound);
}

TEST(Io, RemoveTreeRemovesEverythingBelowAndToleratesAMissingDir) {
  std::string dir = ::testing::TempDir() + "/iotree";
  ASSERT_TRUE(MkdirAll(dir + "/a/b", 0700).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/a/b/f", "x", 0600).ok());
  ASSERT_EQ(::symlink("/etc", (dir + "/a/link").c_str()), 0);  // not followed
  ASSERT_TRUE(::mkfifo((dir + "/fifo").c_str(), 0600) == 0);
  ASSERT_TRUE(RemoveTree(dir).ok());
  EXPECT_NE(::access(dir.c_str(), F_OK), 0);
  EXPECT_EQ(::access("/etc/passwd", F_OK), 0);
  EXPECT_TRUE(RemoveTree(dir).ok());
}

TEST(Io, WriteExistingFileWritesInPlaceAndNeverCreates) {
  std::string dir = ::testing::TempDir() + "/ioexisting";
  ::mkdir(dir.c_str(), 0700);
  std::string path = dir + "/knob";
  ASSERT_TRUE(WriteFileAtomic(path, "9\n", 0644).ok());
  ASSERT_TRUE(WriteExistingFile(path, "0").ok());
  EXPECT_EQ(*ReadFile(path), "0");
  Status st = WriteExistingFile(dir + "/missing", "1");
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_NE(st.message().find(dir + "/missing"), std::string::npos) << st.ToString();
  EXPECT_NE(::access((dir + "/missing").c_str(), F_OK), 0);
}

TEST(Io, UnixAddressParse) {
  EXPECT_FALSE(UnixAddress::Parse("unix:///run/x").abstract);
  EXPECT_EQ(UnixAddress::Parse("unix:///run/x").path, "/run/x");
  EXPECT_FALSE(UnixAddress::Parse("/run/x").abstract);
  EXPECT_TRUE(UnixAddress::Parse("containerd-shim/abc").abstract);
}

TEST(Io, ListenSocketIsPrivateAndLongPathRejected) {
  std::string path = ::testing::TempDir() + "/io.sock";
  ::unlink(path.c_str());
  auto fd = ListenUnix({path, false});
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  struct stat sb;
  ASSERT_EQ(::stat(path.c_str(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  ::unlink(path.c_str());
  auto bad = ListenUnix({"/" + std::string(200, 'a'), false});
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  auto refused = ConnectUnix({path, false});
  EXPECT_EQ(refused.status().code(), Code::kUnavailable);
}

}  // namespace
}  // namespace runhcs
