// Event publishing.
//
// Contract for every Publisher:
//  - Publish() only queues: it never blocks on I/O and MUST NOT be called with
//    a lock held (a publisher may call back into code that takes locks). Events leave in the order
//    Publish() was called; callers establish the task-level order (start before exit, every exec's
//    exit before init's).
//  - The topic comes from the message type (TaskExit -> "/tasks/exit"), and
//    the Any's type_url is the bare proto name ("containerd.events.TaskExit"):
//    containerd's typeurl looks it up verbatim, and `ctr events` cannot decode
//    "type.googleapis.com/..." URLs.
#pragma once

#include <google/protobuf/message_lite.h>
#include "runhcs/wkt/any.pb.h"

#include <string>
#include <string_view>

namespace runhcs::events {

// "/tasks/exit" for containerd.events.TaskExit, etc.; "" for other types.
std::string_view TopicFor(const google::protobuf::MessageLite& event);

// An Any with a bare type URL (the full proto name, no googleapis prefix).
runhcs::wkt::Any PackBare(const google::protobuf::MessageLite& msg);

class Publisher {
 public:
  virtual ~Publisher() = default;
  virtual void Publish(const google::protobuf::MessageLite& event) = 0;
};

}  // namespace runhcs::events
