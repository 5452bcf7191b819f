// What this build is: the project's version and the git commit it was built
// from ("unknown" outside a git checkout, "-dirty" with uncommitted changes;
// RUNHCS_GIT_COMMIT at configure time overrides, as a package build from a
// source tarball does).
#pragma once

#include <string_view>

namespace runhcs {

std::string_view Version();
std::string_view GitCommit();

}  // namespace runhcs
