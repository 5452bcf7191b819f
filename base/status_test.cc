#include "base/status.h"

#include <gtest/gtest.h>

namespace runhcs {
namespace {

TEST(Status, WireMessageAppendsErrdefsClass) {
  EXPECT_EQ(NotFoundError("exec {} not found", "e1").WireMessage(), "exec e1 not found: not found");
  EXPECT_EQ(UnknownError("plain").WireMessage(), "plain");
  EXPECT_EQ(InternalError("boom").WireMessage(), "boom");
}

TEST(Status, FromWireStripsClassAndKeepsCode) {
  Status st = Status::FromWire(5, "container not created: not found");
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_EQ(st.message(), "container not created");
  EXPECT_TRUE(Status::FromWire(0, "").ok());
  EXPECT_EQ(Status::FromWire(99, "x").code(), Code::kUnknown);
  // A message that is only the class text is kept as is.
  EXPECT_EQ(Status::FromWire(5, "not found").message(), "not found");
}

TEST(Status, WrapKeepsCodeAndAddsContext) {
  Status st = FailedPreconditionError("not running").Wrap("kill e1");
  EXPECT_EQ(st.code(), Code::kFailedPrecondition);
  EXPECT_EQ(st.message(), "kill e1: not running");
  EXPECT_TRUE(OkStatus().Wrap("ctx").ok());
}

TEST(Status, ErrnoClassifies) {
  EXPECT_EQ(ErrnoError(ENOENT, "open x").code(), Code::kNotFound);
  EXPECT_EQ(ErrnoError(EEXIST, "mkdir").code(), Code::kAlreadyExists);
  EXPECT_EQ(ErrnoError(EIO, "read").code(), Code::kUnknown);
}

StatusOr<int> Half(int x) {
  if (x % 2) return InvalidArgumentError("{} is odd", x);
  return x / 2;
}

Status UseHalf(int x, int* out) {
  ASSIGN_OR_RETURN(*out, Half(x));
  return OkStatus();
}

TEST(StatusOr, ValueOrError) {
  int v = 0;
  EXPECT_TRUE(UseHalf(4, &v).ok());
  EXPECT_EQ(v, 2);
  Status st = UseHalf(3, &v);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_EQ(st.message(), "3 is odd");
  StatusOr<int> bad{OkStatus()};
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInternal);
}

}  // namespace
}  // namespace runhcs
