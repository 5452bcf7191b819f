#!/usr/bin/env bash
# Regenerates the architecture diagram in docs/ from the build's own target
# graph (CMake --graphviz), so the picture cannot drift from the code.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
command -v dot >/dev/null || { apt-get update -qq && apt-get install -y -qq graphviz >/dev/null; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/b"
# CMake reads these options from the build directory.
cat >"$tmp/b/CMakeGraphVizOptions.cmake" <<'OPT'
set(GRAPHVIZ_GRAPH_NAME "runhcs")
set(GRAPHVIZ_EXTERNAL_LIBS FALSE)
set(GRAPHVIZ_GENERATE_PER_TARGET FALSE)
set(GRAPHVIZ_GENERATE_DEPENDERS FALSE)
set(GRAPHVIZ_IGNORE_TARGETS ".*_test$" "runhcs_testing")
OPT
cmake -S . -B "$tmp/b" -G Ninja --graphviz="$tmp/targets.dot" >/dev/null
cp "$tmp/targets.dot" docs/architecture.dot
dot -Tsvg docs/architecture.dot -o docs/architecture.svg
echo "docs/architecture.dot and docs/architecture.svg regenerated"
