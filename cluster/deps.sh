#!/usr/bin/env bash
# deps.sh: installs the Debian packages rlx builds and runs with, if any is missing.
# Usage: cluster/deps.sh [extra-package ...]   (as root, or with sudo available)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libopenblas-dev libopenblas-openmp-dev zlib1g-dev libzmq3-dev
      libprotobuf-c-dev protobuf-c-compiler libopenmpi-dev openmpi-bin libjson-c-dev libinih-dev
      python3 python3-zmq python3-protobuf protobuf-compiler "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
