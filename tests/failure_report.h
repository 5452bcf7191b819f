// What a failing integration test prints besides its assertion: the state of
// the daemons it drove (a log's tail, the shims' stacks), taken at the first
// failure, while a hang is still hanging.
//
// A fixture that owns a daemon registers a reporter for as long as it owns
// it; the test binary's main (tests/test_main.cc) calls Collect() once per
// failing test. Thread-safe.
#pragma once

#include <functional>
#include <string>

namespace runhcs::testing {

class FailureReport {
 public:
  using Reporter = std::function<std::string()>;

  // Registers `r` until the returned handle is destroyed.
  class Registration {
   public:
    Registration() = default;
    explicit Registration(int id) : id_(id) {}
    Registration(Registration&& o) noexcept : id_(o.id_) { o.id_ = -1; }
    Registration& operator=(Registration&& o) noexcept;
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;
    ~Registration();

   private:
    int id_ = -1;
  };

  [[nodiscard]] static Registration Add(std::string title, Reporter r);
  // Every registered reporter's output, under its title, in registration
  // order.
  static std::string Collect();

  // Prints Collect() to stderr under `why`, once per test: the first of a
  // test's failure and a command that ran out of time (reported before it
  // is killed, while what it waits for still hangs) prints; later ones do
  // not. NewTest() starts the next test.
  static void PrintOnce(const std::string& why);
  static void NewTest();
};

}  // namespace runhcs::testing
