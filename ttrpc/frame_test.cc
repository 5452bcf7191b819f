#include "ttrpc/frame.h"

#include <sys/socket.h>

#include <gtest/gtest.h>

#include <thread>

#include "base/io.h"

namespace runhcs::ttrpc {
namespace {

struct Pair {
  Pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a.reset(sv[0]);
    b.reset(sv[1]);
  }
  UniqueFd a, b;
};

TEST(Frame, HeaderIsBigEndian) {
  char buf[kHeaderSize];
  EncodeHeader({0x01020304, 0x0a0b0c0d, 1, 2}, buf);
  const unsigned char want[] = {1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, 1, 2};
  EXPECT_EQ(std::memcmp(buf, want, kHeaderSize), 0);
  FrameHeader h = DecodeHeader(buf);
  EXPECT_EQ(h.length, 0x01020304u);
  EXPECT_EQ(h.stream_id, 0x0a0b0c0du);
  EXPECT_EQ(h.type, 1);
  EXPECT_EQ(h.flags, 2);
}

TEST(Frame, RoundTrip) {
  Pair p;
  ASSERT_TRUE(WriteFrame(p.a.get(), 7, FrameType::kRequest, 0, "hello").ok());
  ASSERT_TRUE(WriteFrame(p.a.get(), 9, FrameType::kResponse, 0, "").ok());
  Frame f;
  ASSERT_TRUE(ReadFrame(p.b.get(), &f).ok());
  EXPECT_EQ(f.header.stream_id, 7u);
  EXPECT_EQ(f.payload, "hello");
  ASSERT_TRUE(ReadFrame(p.b.get(), &f).ok());
  EXPECT_EQ(f.header.stream_id, 9u);
  EXPECT_EQ(f.header.type, 2);
  EXPECT_TRUE(f.payload.empty());
}

TEST(Frame, CleanEofVersusTruncatedHeaderAndBody) {
  {
    Pair p;
    p.a.reset();
    Frame f;
    EXPECT_EQ(ReadFrame(p.b.get(), &f).code(), Code::kOutOfRange);
  }
  {
    Pair p;
    ASSERT_TRUE(WriteAll(p.a.get(), std::string("\0\0\0", 3)).ok());
    p.a.reset();
    Frame f;
    EXPECT_EQ(ReadFrame(p.b.get(), &f).code(), Code::kDataLoss);
  }
  {
    Pair p;
    char hdr[kHeaderSize];
    EncodeHeader({100, 1, 1, 0}, hdr);
    ASSERT_TRUE(WriteAll(p.a.get(), std::string(hdr, kHeaderSize) + "short").ok());
    p.a.reset();
    Frame f;
    EXPECT_EQ(ReadFrame(p.b.get(), &f).code(), Code::kDataLoss);
  }
}

TEST(Frame, OversizedPayloadIsDrainedAndStreamStaysAligned) {
  Pair p;
  std::string big(kMaxMessageSize + 1, 'x');
  std::thread writer([&] {
    char hdr[kHeaderSize];
    EncodeHeader({static_cast<uint32_t>(big.size()), 3, 1, 0}, hdr);
    ASSERT_TRUE(WriteAll(p.a.get(), std::string(hdr, kHeaderSize)).ok());
    ASSERT_TRUE(WriteAll(p.a.get(), big).ok());
    ASSERT_TRUE(WriteFrame(p.a.get(), 5, FrameType::kRequest, 0, "next").ok());
  });
  Frame f;
  Status st = ReadFrame(p.b.get(), &f);
  EXPECT_EQ(st.code(), Code::kResourceExhausted);
  EXPECT_EQ(f.header.stream_id, 3u);
  ASSERT_TRUE(ReadFrame(p.b.get(), &f).ok());
  EXPECT_EQ(f.header.stream_id, 5u);
  EXPECT_EQ(f.payload, "next");
  writer.join();
  EXPECT_EQ(WriteFrame(p.a.get(), 1, FrameType::kRequest, 0, big).code(), Code::kResourceExhausted);
}

}  // namespace
}  // namespace runhcs::ttrpc
