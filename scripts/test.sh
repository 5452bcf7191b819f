#!/usr/bin/env bash
# Runs every test: unit and integration tests (gcc build, real containerd),
# then the concurrency-heavy unit tests again under ThreadSanitizer, built
# with clang so its -Wthread-safety lock analysis gates the build too.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
echo "== tests (gcc build) =="
ctest --test-dir build --output-on-failure -j2 --timeout 300

echo "== ThreadSanitizer + clang -Wthread-safety =="
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DRUNHCS_SANITIZE=thread >/dev/null
ninja -C build-tsan reaper_test agent_service_test ttrpc_test events_test exec_test pod_test service_test stdio_test shimdiag_test stats_test oom_relay_test containerd-shim-runhcs-v1
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build-tsan -L tsan --output-on-failure -j2 --timeout 300
