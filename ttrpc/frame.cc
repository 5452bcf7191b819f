#include "ttrpc/frame.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include "base/io.h"

namespace runhcs::ttrpc {

namespace {
void PutU32(char* p, uint32_t v) {
  p[0] = static_cast<char>(v >> 24);
  p[1] = static_cast<char>(v >> 16);
  p[2] = static_cast<char>(v >> 8);
  p[3] = static_cast<char>(v);
}
uint32_t GetU32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}
}  // namespace

void EncodeHeader(const FrameHeader& h, char out[kHeaderSize]) {
  PutU32(out, h.length);
  PutU32(out + 4, h.stream_id);
  out[8] = static_cast<char>(h.type);
  out[9] = static_cast<char>(h.flags);
}

FrameHeader DecodeHeader(const char in[kHeaderSize]) {
  FrameHeader h;
  h.length = GetU32(in);
  h.stream_id = GetU32(in + 4);
  h.type = static_cast<uint8_t>(in[8]);
  h.flags = static_cast<uint8_t>(in[9]);
  return h;
}

Status ReadFrame(int fd, Frame* out) {
  char hdr[kHeaderSize];
  Status st = ReadFull(fd, hdr, kHeaderSize);
  if (!st.ok()) return st;
  out->header = DecodeHeader(hdr);
  uint32_t len = out->header.length;
  if (len > kMaxMessageSize) {
    // Drain the oversized payload so the next header lines up.
    char sink[16384];
    uint32_t left = len;
    while (left > 0) {
      size_t n = left < sizeof sink ? left : sizeof sink;
      Status rs = ReadFull(fd, sink, n);
      if (!rs.ok())
        return rs.code() == Code::kOutOfRange ? Status(Code::kDataLoss, "truncated") : rs;
      left -= static_cast<uint32_t>(n);
    }
    out->payload.clear();
    return ResourceExhaustedError("message length {} exceed maximum message size of {}", len,
                                  kMaxMessageSize);
  }
  out->payload.resize(len);
  if (len == 0) return OkStatus();
  st = ReadFull(fd, out->payload.data(), len);
  if (st.code() == Code::kOutOfRange) return Status(Code::kDataLoss, "truncated frame");
  return st;
}

Status WriteFrame(int fd, uint32_t stream_id, FrameType type, uint8_t flags,
                  std::string_view payload) {
  if (payload.size() > kMaxMessageSize) {
    return ResourceExhaustedError("message length {} exceed maximum message size of {}",
                                  payload.size(), kMaxMessageSize);
  }
  char hdr[kHeaderSize];
  EncodeHeader(
      {static_cast<uint32_t>(payload.size()), stream_id, static_cast<uint8_t>(type), flags}, hdr);
  iovec iov[2] = {{hdr, kHeaderSize}, {const_cast<char*>(payload.data()), payload.size()}};
  size_t total = kHeaderSize + payload.size();
  size_t done = 0;
  bool use_writev = false;
  while (done < total) {
    // sendmsg(MSG_NOSIGNAL) so a vanished peer is an error, not SIGPIPE;
    // writev for streams that are not sockets (a virtio-serial port).
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = payload.empty() ? 1 : 2;
    ssize_t n = use_writev ? ::writev(fd, iov, static_cast<int>(msg.msg_iovlen))
                           : ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOTSOCK && !use_writev) {
        use_writev = true;
        continue;
      }
      return ErrnoError(errno, "ttrpc write");
    }
    done += static_cast<size_t>(n);
    // Advance the iovecs past what was written.
    size_t adv = static_cast<size_t>(n);
    for (auto& v : iov) {
      size_t take = adv < v.iov_len ? adv : v.iov_len;
      v.iov_base = static_cast<char*>(v.iov_base) + take;
      v.iov_len -= take;
      adv -= take;
    }
  }
  return OkStatus();
}

}  // namespace runhcs::ttrpc
