#!/usr/bin/env bash
# Runs every test:
#  0. the format (clang-format, .clang-format) of every .cc/.h;
#  1. unit and integration tests (gcc build with -Werror, real containerd,
#     real QEMU VMs);
#  2. the soak (one shim through 1000 lifecycles and 1000 execs), then the
#     Debian package: built from a clean clone of HEAD, installed, used by a
#     containerd without the build tree, purged (tests/package_test.sh);
#  3. the concurrency-heavy unit tests under ThreadSanitizer, built with clang
#     so its -Wthread-safety lock analysis gates the build too;
#  4. the unit tests under AddressSanitizer + UndefinedBehaviorSanitizer, and
#     the libFuzzer targets: their corpus as regression tests, then a bounded
#     exploration each (FUZZ_SECONDS, default 30).
#
# The three builds are unity builds (16 sources per translation unit): on two
# cores that cuts the builds, most of this script's time, by about a third.
# A plain build (scripts/build.sh without it) still compiles each file alone.
set -euo pipefail
cd "$(dirname "$0")/.."
UNITY=(-DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=16)
./scripts/deps.sh
./scripts/check-format.sh
./scripts/build.sh -DRUNHCS_WERROR=ON "${UNITY[@]}"
echo "== tests (gcc build) =="
ctest --test-dir build --output-on-failure -j2 --timeout 300 -LE soak

echo "== soak =="
if ! ctest --test-dir build --output-on-failure --timeout 1800 -L soak -V >build/soak.log 2>&1; then
  cat build/soak.log
  exit 1
fi
grep "soak:" build/soak.log

# Nothing of any test's shims or VMs may be left behind.
left=$(find /run/runhcs/shims /run/runhcs/vm -mindepth 1 -maxdepth 1 2>/dev/null || true)
if [ -n "$left" ]; then
  echo "tests left these behind in /run/runhcs:"
  echo "$left"
  exit 1
fi
echo "nothing left in /run/runhcs"

echo "== Debian package =="
tests/package_test.sh

UNIT_TESTS=(base_test stacks_test event_loop_test reaper_test shim_registry_test ttrpc_test ttrpc_stubs_test events_test exec_test
            pod_test service_test stdio_test shimdiag_test stats_test oom_relay_test agent_service_test
            oci_test qemu_vm_test task_test process_race_test net_test guest_pod_test pod_vm_test)

echo "== ThreadSanitizer + clang -Wthread-safety =="
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DRUNHCS_SANITIZE=thread -DRUNHCS_WERROR=ON "${UNITY[@]}" >/dev/null
ninja -C build-tsan event_loop_test reaper_test agent_service_test ttrpc_test ttrpc_stubs_test events_test exec_test pod_test service_test process_race_test task_test \
  stdio_test shimdiag_test stats_test oom_relay_test containerd-shim-runhcs-v1
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build-tsan -L tsan --output-on-failure -j2 --timeout 300

echo "== AddressSanitizer + UndefinedBehaviorSanitizer, libFuzzer =="
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DRUNHCS_SANITIZE=address -DRUNHCS_FUZZ=ON -DRUNHCS_WERROR=ON \
  "${UNITY[@]}" >/dev/null
ninja -C build-asan "${UNIT_TESTS[@]}" fuzz_ttrpc fuzz_spec fuzz_options fuzz_agent
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
ctest --test-dir build-asan -L "unit|tsan|fuzz" --output-on-failure -j2 --timeout 300
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in ttrpc spec options agent; do
  mkdir -p "$work/$t"
  # New inputs go to the scratch dir; the checked-in corpus is only read.
  TMPDIR="$work" build-asan/fuzz/fuzz_$t -max_total_time="${FUZZ_SECONDS:-30}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$work/$t" "fuzz/corpus/$t" 2>"$work/$t.log" || { tail -60 "$work/$t.log"; exit 1; }
  echo "fuzz_$t: $(grep -E '^stat::number_of_executed_units' "$work/$t.log" | awk '{print $2}') runs, no crash"
done
