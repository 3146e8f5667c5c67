#!/usr/bin/env bash
# Fails if any tracked C++ or CUDA file differs from what clang-format-14 makes of it (.clang-format).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
git ls-files -z -- '*.cpp' '*.hpp' '*.h' '*.cu' '*.cuh' | xargs -0 -r clang-format-14 --dry-run --Werror
echo "check_format: all files formatted"
