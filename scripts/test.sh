#!/usr/bin/env bash
# Builds and runs the whole test suite twice: a Release build (library, tests, examples, benchmarks,
# packaging tests), then again under AddressSanitizer + UndefinedBehaviorSanitizer; runs the file
# readers' fuzz targets (clang, libFuzzer) for PERSONA_FUZZ_SECONDS each (default 30) from their seeds;
# and runs the registry's concurrency tests under ThreadSanitizer.
# PERSONA_WERROR=ON turns warnings into errors (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh

jobs=$(nproc)
werror=${PERSONA_WERROR:-OFF}

# The Release build compiles every SIMD level; the instrumented builds and the package-test consumers
# (which build the library again) compile the AVX-512 kernels only where this CPU can run them.
avx512=OFF
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then avx512=ON; fi
# Instrumented builds: -O1 with line tables only compiles in about half the time of -O2 -g and still
# gives file:line in every report.
instrumented=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG"
  -DPERSONA_AVX512_KERNELS="$avx512")

cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DPERSONA_WERROR="$werror" \
  -DPERSONA_CONSUMER_AVX512_KERNELS="$avx512"
cmake --build build/release -j "$jobs"
ctest --test-dir build/release --output-on-failure -j "$jobs"

# Fuzz the file readers (clang + libFuzzer + ASan/UBSan) from their seed corpora; a finding fails the run.

fuzz_seconds=${PERSONA_FUZZ_SECONDS:-30}
cmake -S tests/fuzz -B build/fuzz -G Ninja "${instrumented[@]}" -DCMAKE_CXX_COMPILER=clang++-14
cmake --build build/fuzz -j "$jobs"
build/fuzz/make_fuzz_seeds build/fuzz/seeds
for target in safetensors peft persona_adapter hnsw_index model_config text; do
  mkdir -p "build/fuzz/corpus-$target"
  seeds=()
  for folder in "tests/fuzz/corpus/$target" "build/fuzz/seeds/$target"; do [ -d "$folder" ] && seeds+=("$folder"); done
  status=0
  "build/fuzz/fuzz_$target" -max_total_time="$fuzz_seconds" -print_final_stats=1 "build/fuzz/corpus-$target" \
    "${seeds[@]}" > "build/fuzz/fuzz_$target.log" 2>&1 || status=$?
  grep -E "^Done|ERROR|SUMMARY" "build/fuzz/fuzz_$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "build/fuzz/fuzz_$target.log"
    exit "$status"
  fi
done

cmake -S . -B build/sanitize -G Ninja "${instrumented[@]}" -DPERSONA_WERROR="$werror" \
  -DPERSONA_SANITIZE="address;undefined" -DPERSONA_BUILD_BENCHMARKS=OFF -DPERSONA_INSTALL=OFF
cmake --build build/sanitize -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/sanitize --output-on-failure -j "$jobs"

# ThreadSanitizer: the tests that race threads on one object: the registry (acquires, releases, puts and
# removes from 2 threads; by-id lookups; single-flight loads; the history of puts, removes and acquires
# from 4 threads; gets racing puts that prune; acquire_async, prefetch and prefetch_ahead on the load
# threads; destroying a registry with loads in flight; the cache alone) and the HNSW index (adds,
# searches, updates, removes and compaction at once). The ones that run work on oneTBB (quantizing on
# the way in, batch adds, the kernels) are left out: libtbb is not instrumented, so TSan cannot see its
# synchronization; AddressSanitizer runs them.
cmake -S . -B build/tsan -G Ninja "${instrumented[@]}" -DPERSONA_WERROR="$werror" -DPERSONA_SANITIZE=thread \
  -DPERSONA_BUILD_BENCHMARKS=OFF -DPERSONA_BUILD_EXAMPLES=OFF -DPERSONA_INSTALL=OFF
cmake --build build/tsan -j "$jobs" --target registry_test ann_test
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
build/tsan/tests/registry_test "AdapterRegistry under 2 threads*,acquire by id*,AdapterRegistry pins*,\
After a put or remove returns*,With one version kept*,Destroying a registry*,acquire_async and prefetch complete*,\
AdapterRegistry loads a cold adapter once*,AdapterRegistry::prefetch_ahead*,AdapterCache*"
build/tsan/tests/ann_test "[threads]"
