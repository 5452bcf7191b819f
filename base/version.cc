#include "base/version.h"

#include "runhcs/version_gen.h"

namespace runhcs {

std::string_view Version() { return RUNHCS_GEN_VERSION; }
std::string_view GitCommit() { return RUNHCS_GEN_COMMIT; }

}  // namespace runhcs
