// Conversions between std::chrono and google.protobuf.Timestamp (the lite
// copy in runhcs.wkt). Part of runhcs_proto.
#pragma once

#include "runhcs/wkt/timestamp.pb.h"

#include <chrono>

namespace runhcs {

inline runhcs::wkt::Timestamp ToTimestamp(std::chrono::system_clock::time_point t) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  runhcs::wkt::Timestamp ts;
  ts.set_seconds(ns / 1000000000);
  ts.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return ts;
}

}  // namespace runhcs
