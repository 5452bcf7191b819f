#include "tests/failure_report.h"

#include <cstdio>
#include <map>
#include <mutex>
#include <utility>

namespace runhcs::testing {
namespace {

struct Registry {
  std::mutex mu;
  int next = 0;
  bool printed = false;  // in this test
  std::map<int, std::pair<std::string, FailureReport::Reporter>> reporters;
};

Registry& Get() {
  static Registry* r = new Registry;  // outlives static fixtures' teardown
  return *r;
}

}  // namespace

FailureReport::Registration& FailureReport::Registration::operator=(Registration&& o) noexcept {
  if (this != &o) {
    this->~Registration();
    id_ = std::exchange(o.id_, -1);
  }
  return *this;
}

FailureReport::Registration::~Registration() {
  if (id_ < 0) return;
  Registry& r = Get();
  std::lock_guard l(r.mu);
  r.reporters.erase(id_);
  id_ = -1;
}

FailureReport::Registration FailureReport::Add(std::string title, Reporter rep) {
  Registry& r = Get();
  std::lock_guard l(r.mu);
  int id = r.next++;
  r.reporters.emplace(id, std::make_pair(std::move(title), std::move(rep)));
  return Registration(id);
}

std::string FailureReport::Collect() {
  std::map<int, std::pair<std::string, Reporter>> copy;
  {
    Registry& r = Get();
    std::lock_guard l(r.mu);
    copy = r.reporters;
  }
  // Reporters run commands: not under the lock.
  std::string out;
  for (auto& [id, tr] : copy) {
    out += "===== " + tr.first + " =====\n";
    out += tr.second();
    if (!out.empty() && out.back() != '\n') out += '\n';
  }
  return out;
}

void FailureReport::PrintOnce(const std::string& why) {
  {
    Registry& r = Get();
    std::lock_guard l(r.mu);
    if (std::exchange(r.printed, true)) return;
  }
  std::string report = Collect();
  if (report.empty()) return;
  std::fprintf(stderr, "===== failure report: %s =====\n%s===== end of the failure report =====\n",
               why.c_str(), report.c_str());
}

void FailureReport::NewTest() {
  Registry& r = Get();
  std::lock_guard l(r.mu);
  r.printed = false;
}

}  // namespace runhcs::testing
