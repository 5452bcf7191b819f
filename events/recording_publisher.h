// A Publisher for unit tests: records every event in order.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/thread_annotations.h"
#include "events/publisher.h"

namespace runhcs::events {

class RecordingPublisher : public Publisher {
 public:
  struct Event {
    std::string topic;
    std::unique_ptr<google::protobuf::Message> message;
  };

  void Publish(const google::protobuf::Message& event) override {
    Event e{std::string(TopicFor(event)), std::unique_ptr<google::protobuf::Message>(event.New())};
    e.message->CopyFrom(event);
    MutexLock l(&mu_);
    events_.push_back(std::move(e));
  }

  std::vector<std::string> Topics() {
    MutexLock l(&mu_);
    std::vector<std::string> out;
    for (const auto& e : events_) out.push_back(e.topic);
    return out;
  }

  // The i-th event as `T` (a copy); default T if the index or type is wrong.
  template <typename T>
  T At(size_t i) {
    MutexLock l(&mu_);
    T out;
    if (i < events_.size() && events_[i].message->GetTypeName() == out.GetTypeName()) {
      out.CopyFrom(*events_[i].message);
    }
    return out;
  }

  size_t size() {
    MutexLock l(&mu_);
    return events_.size();
  }

 private:
  Mutex mu_;
  std::vector<Event> events_ GUARDED_BY(mu_);
};

}  // namespace runhcs::events
