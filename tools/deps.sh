#!/usr/bin/env bash
# Installs what atpd needs to build, run and test on Debian 12 (as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(
  build-essential meson ninja-build pkg-config clang libclang-rt-14-dev
  liburing-dev libxxhash-dev librdkafka-dev libjson-c-dev libsimdjson-dev libjemalloc-dev
  libcmocka-dev libbenchmark-dev libhttp-parser-dev libsystemd-dev
  kcat redis-server nginx-light prometheus curl python3 python3-yaml clang-format
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
