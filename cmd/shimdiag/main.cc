// shimdiag: see shimdiag.h.
#include <csignal>
#include <string>
#include <vector>

#include "cmd/shimdiag/shimdiag.h"
#include "service/shim_registry.h"

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  runhcs::shimdiag::Env env;
  env.registry_dir = runhcs::service::kShimRegistryDir;
  return runhcs::shimdiag::Run(std::vector<std::string>(argv + 1, argv + argc), env);
}
