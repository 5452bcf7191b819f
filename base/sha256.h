// SHA-256 (FIPS 180-4), for naming shim sockets. Small on purpose: linking a
// crypto library for one short hash per `start` cost the daemon ~1.4 MiB of
// resident memory (see bench/results).
#pragma once

#include <string>
#include <string_view>

namespace runhcs {

// Lower-case hex digest of `data`.
std::string Sha256Hex(std::string_view data);

}  // namespace runhcs
