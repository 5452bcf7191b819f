#!/usr/bin/env bash
# Fails when any tracked .cc/.h differs from what clang-format (.clang-format)
# makes of it; prints the offending places. `clang-format -i` on the files
# named fixes them.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cc' '*.h')
if ! out=$(clang-format --dry-run --Werror "${files[@]}" 2>&1); then
  echo "$out" | head -40
  echo "format: $(echo "$out" | grep -c ': error:') places differ from .clang-format (run clang-format -i on them)"
  exit 1
fi
echo "format: ${#files[@]} files clean"
