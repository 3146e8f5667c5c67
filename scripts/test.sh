#!/usr/bin/env bash
# Builds and runs the whole test suite twice: a Release build (library, tests, examples, benchmarks,
# packaging tests), then again under AddressSanitizer + UndefinedBehaviorSanitizer.
# PERSONA_WERROR=ON turns warnings into errors (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh

jobs=$(nproc)
werror=${PERSONA_WERROR:-OFF}

cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DPERSONA_WERROR="$werror"
cmake --build build/release -j "$jobs"
ctest --test-dir build/release --output-on-failure -j "$jobs"

cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPERSONA_WERROR="$werror" \
  -DPERSONA_SANITIZE="address;undefined" -DPERSONA_BUILD_BENCHMARKS=OFF -DPERSONA_INSTALL=OFF
cmake --build build/sanitize -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/sanitize --output-on-failure -j "$jobs"
