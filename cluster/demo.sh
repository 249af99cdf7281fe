#!/usr/bin/env bash
# demo.sh: the main demo. Installs what is missing (Debian packages), builds rlx, then runs the
# two-digit addition demo (cluster/add_demo.ini): task files, MLE pretraining on a noisy corpus
# (cached in the run directory), and RL with the MPI learner, 2 actors and 2 reward workers.
# Prints the held-out sampled accuracy before and after RL, the trajectories used, wall time.
# Usage: cluster/demo.sh [section.key=value ...] [--out DIR]   (overrides of add_demo.ini)
#   e.g. cluster/demo.sh learner.max-samples=20000 --out runs/short
set -euo pipefail
cd "$(dirname "$0")/.."
cluster/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
exec build/rlx-launch cluster/add_demo.ini "$@"
