#!/usr/bin/env bash
# Security check: the shim, the agent and shimdiag never build a shell
# command line: no system(), popen(), exec of a shell, or `sh -c` in the
# production sources (tests, benchmarks and fuzz targets are not shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
dirs=(base ttrpc service task exec pod uvm guest oci stdio events stats cmd)
pattern='(^|[^A-Za-z_.])(system|popen)\(|"/bin/(ba)?sh"|"sh", *"-c"|\bexecl\('
if hits=$(grep -rnE "$pattern" --include='*.cc' --include='*.h' "${dirs[@]}" | grep -v '_test\.cc:'); then
  echo "shell command lines in production code:"
  echo "$hits"
  exit 1
fi
echo "no shell command lines in: ${dirs[*]}"
