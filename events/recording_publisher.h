// A Publisher for unit tests: records every event in order.
#pragma once

#include <chrono>
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
    std::unique_ptr<google::protobuf::MessageLite> message;
  };

  void Publish(const google::protobuf::MessageLite& event) override {
    Event e{std::string(TopicFor(event)),
            std::unique_ptr<google::protobuf::MessageLite>(event.New())};
    e.message->ParseFromString(event.SerializeAsString());  // lite has no CopyFrom(base)
    MutexLock l(&mu_);
    events_.push_back(std::move(e));
    cv_.SignalAll();
  }

  // True once at least `n` events are in; false if `timeout` passed first
  // (events published from other threads: an exit path, a watcher).
  bool WaitForCount(size_t n, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    MutexLock l(&mu_);
    while (events_.size() < n) {
      if (!cv_.WaitUntil(&mu_, deadline)) return events_.size() >= n;
    }
    return true;
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
      out.ParseFromString(events_[i].message->SerializeAsString());
    }
    return out;
  }

  size_t size() {
    MutexLock l(&mu_);
    return events_.size();
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<Event> events_ GUARDED_BY(mu_);
};

}  // namespace runhcs::events
