#!/usr/bin/env bash
# Builds persona in Release and runs the main example. Until the multi-tenant serving demo lands, the
# main example is the quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh

cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build/release -j "$(nproc)" --target quickstart
build/release/examples/quickstart
