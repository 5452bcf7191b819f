// main() of the integration tests: gtest's, plus a listener that prints the
// FailureReport at a test's first failure, while whatever failed is still
// in the state that failed it.
#include <gtest/gtest.h>

#include "tests/failure_report.h"

namespace {

class ReportOnFailure : public ::testing::EmptyTestEventListener {
  void OnTestSuiteStart(const ::testing::TestSuite&) override {
    runhcs::testing::FailureReport::NewTest();
  }
  void OnTestStart(const ::testing::TestInfo&) override {
    runhcs::testing::FailureReport::NewTest();
  }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed()) runhcs::testing::FailureReport::PrintOnce("the test's first failure");
  }
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new ReportOnFailure);
  return RUN_ALL_TESTS();
}
