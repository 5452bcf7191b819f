#include "base/latch.h"

#include <gtest/gtest.h>

#include <thread>

namespace runhcs {
namespace {

TEST(Latch, WaitersRunOnceInOrderWhenItOpensAndAtOnceAfter) {
  Latch l;
  std::vector<int> ran;
  l.Notify({[&] { ran.push_back(1); }, nullptr});
  l.Notify({[&] { ran.push_back(2); }, nullptr});
  EXPECT_TRUE(ran.empty());
  EXPECT_FALSE(l.Wait(std::chrono::steady_clock::now()));
  std::thread t([&] { l.Open(); });
  t.join();
  EXPECT_EQ(ran, (std::vector<int>{1, 2}));
  l.Open();  // idempotent: nothing runs twice
  EXPECT_EQ(ran.size(), 2u);
  l.Notify({[&] { ran.push_back(3); }, nullptr});
  EXPECT_EQ(ran, (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(l.Wait());
}

TEST(Latch, UnwantedWaitersAreDroppedSoAbandonedOnesStayBounded) {
  Latch l;
  int ran = 0;
  for (int i = 0; i < 10000; ++i) l.Notify({[&] { ++ran; }, [] { return false; }});
  EXPECT_LT(l.waiters_for_test(), 64u);
  l.Notify({[&] { ran += 100; }, [] { return true; }});
  l.Open();
  EXPECT_GE(ran, 100);
  EXPECT_LT(ran, 100 + 64);
}

}  // namespace
}  // namespace runhcs
