#!/usr/bin/env bash
# Cross-build the LLS engine for aarch64 and run its C++ tests under qemu-aarch64.
#   csrc/lls/cross_test.sh [BUILD_DIR]     (default: build/aarch64-lls)
# Exit 0: built and all tests passed; 77: the toolchain or qemu is missing (skipped); else: failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../../build/aarch64-lls}"
for tool in aarch64-linux-gnu-g++ qemu-aarch64 cmake; do
  if ! command -v "$tool" >/dev/null; then
    echo "skip: $tool not found (Debian: g++-aarch64-linux-gnu qemu-user cmake)"; exit 77
  fi
done
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$here" -B "$build" "${generator[@]}" -DCMAKE_TOOLCHAIN_FILE="$here/aarch64-toolchain.cmake" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target edgeml-lls-tests edgeml-finetune >/dev/null
file "$build/edgeml-lls-tests" 2>/dev/null | grep -q aarch64 || { echo "error: not an aarch64 binary"; exit 1; }
qemu-aarch64 -L /usr/aarch64-linux-gnu "$build/edgeml-lls-tests"
