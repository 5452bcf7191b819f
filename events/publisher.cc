#include "events/publisher.h"

#include <map>

namespace runhcs::events {

std::string_view TopicFor(const google::protobuf::MessageLite& event) {
  static const std::map<std::string, std::string_view, std::less<>> kTopics = {
      {"containerd.events.TaskCreate", "/tasks/create"},
      {"containerd.events.TaskStart", "/tasks/start"},
      {"containerd.events.TaskExit", "/tasks/exit"},
      {"containerd.events.TaskDelete", "/tasks/delete"},
      {"containerd.events.TaskExecAdded", "/tasks/exec-added"},
      {"containerd.events.TaskExecStarted", "/tasks/exec-started"},
      {"containerd.events.TaskPaused", "/tasks/paused"},
      {"containerd.events.TaskResumed", "/tasks/resumed"},
      {"containerd.events.TaskOOM", "/tasks/oom"},
      {"containerd.events.TaskCheckpointed", "/tasks/checkpointed"},
  };
  auto it = kTopics.find(event.GetTypeName());
  return it == kTopics.end() ? std::string_view() : it->second;
}

runhcs::wkt::Any PackBare(const google::protobuf::MessageLite& msg) {
  runhcs::wkt::Any any;
  any.set_type_url(msg.GetTypeName());
  msg.SerializeToString(any.mutable_value());
  return any;
}

}  // namespace runhcs::events
