// main() of the integration tests: gtest's, plus a listener that prints the
// FailureReport at a test's first failure, while whatever failed is still
// in the state that failed it.
#include <gtest/gtest.h>

#include <cstdio>

#include "tests/failure_report.h"

namespace {

class ReportOnFailure : public ::testing::EmptyTestEventListener {
  void OnTestSuiteStart(const ::testing::TestSuite&) override { reported_ = false; }
  void OnTestStart(const ::testing::TestInfo&) override { reported_ = false; }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed() || reported_) return;
    reported_ = true;
    std::string report = runhcs::testing::FailureReport::Collect();
    if (report.empty()) return;
    std::fprintf(stderr, "%s===== end of the failure report =====\n", report.c_str());
  }
  bool reported_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new ReportOnFailure);
  return RUN_ALL_TESTS();
}
