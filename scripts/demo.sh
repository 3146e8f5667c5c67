#!/usr/bin/env bash
# Builds persona in Release and runs the main example: the multi-tenant serving demo (docs/serve_demo.md).
# Extra arguments go to serve_demo (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh

cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build/release -j "$(nproc)" --target serve_demo
build/release/examples/serve_demo --out build/serve_demo "$@"
