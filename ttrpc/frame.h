// TTRPC framing (containerd/ttrpc channel.go): a 10-byte big-endian header
// {uint32 length, uint32 stream_id, uint8 type, uint8 flags} then `length`
// bytes of payload. Payloads above kMaxMessageSize are discarded by the reader
// and reported as ResourceExhausted so the caller can answer on that stream and
// keep the connection.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace runhcs::ttrpc {

inline constexpr size_t kHeaderSize = 10;
inline constexpr uint32_t kMaxMessageSize = 4u << 20;

enum class FrameType : uint8_t { kRequest = 1, kResponse = 2, kData = 3 };

struct FrameHeader {
  uint32_t length = 0;
  uint32_t stream_id = 0;
  uint8_t type = 0;
  uint8_t flags = 0;
};

void EncodeHeader(const FrameHeader& h, char out[kHeaderSize]);
FrameHeader DecodeHeader(const char in[kHeaderSize]);

struct Frame {
  FrameHeader header;
  std::string payload;
};

// Reads one frame from a blocking fd.
//   OK                 -> *out holds the frame.
//   OutOfRange         -> clean EOF between frames.
//   DataLoss           -> EOF inside a frame (truncated); the stream is unusable.
//   ResourceExhausted  -> the payload was over kMaxMessageSize; it has been read
//                         and dropped, out->header is valid, the stream is usable.
//   other              -> I/O error.
Status ReadFrame(int fd, Frame* out);

// Writes header + payload with one writev (retried until complete). The
// caller serializes writers on the same fd.
Status WriteFrame(int fd, uint32_t stream_id, FrameType type, uint8_t flags,
                  std::string_view payload);

}  // namespace runhcs::ttrpc
