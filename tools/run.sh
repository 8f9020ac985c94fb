#!/usr/bin/env bash
# The README's run command: install, build, start atpd with its embedded
# defaults (embedded Kafka broker, demo catalogue) on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/deps.sh
[ -d build ] || meson setup build
ninja -C build
exec build/src/atpd --demo "$@"
