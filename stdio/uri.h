// The stdio targets containerd hands a shim: a path (a fifo), `fifo://`,
// `file:///path` or `binary:///path?key=value`. "" means not attached.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace runhcs::stdio {

struct Target {
  enum Kind { kNone, kFifo, kFile, kBinary } kind = kNone;
  std::string path;
  // binary://: each query key followed by its first value, as runc-v2 does.
  std::vector<std::string> args;
};

// InvalidArgument for an unknown scheme or a relative path.
StatusOr<Target> ParseTarget(const std::string& uri);

}  // namespace runhcs::stdio
