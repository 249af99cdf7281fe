#!/usr/bin/env bash
# run.sh: the test command. Installs what is missing (Debian packages), builds rlx, runs every
# ctest test (the numeric ones also under each OpenBLAS core type this CPU can run, label
# "coretype"); then builds again with AddressSanitizer + UndefinedBehaviorSanitizer and runs
# the tests again (all but the long learning runs, labelled "slow", and the core-type re-runs:
# the same code on other BLAS kernels, which the sanitizers do not instrument).
# Usage: tests/run.sh [--no-sanitize]
set -euo pipefail
cd "$(dirname "$0")/.."
cluster/deps.sh
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs")
if [ "${1:-}" != "--no-sanitize" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRLX_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  (cd build-asan && ctest --output-on-failure -j"$jobs" -LE 'slow|coretype')
fi
