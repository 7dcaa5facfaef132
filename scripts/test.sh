#!/usr/bin/env bash
# Installs what is needed (Debian 12, apt), builds hsmprov and runs the whole
# CTest suite; then builds again with ASan+UBSan (HSMPROV_SANITIZE=address)
# and runs the suite there too; then a ThreadSanitizer build
# (HSMPROV_SANITIZE=thread) runs the tests labelled `tsan` (the concurrency
# stress and fork tests); then a clang build of the libFuzzer targets
# (HSMPROV_FUZZ=ON, build-fuzz) runs each for a few seconds (label `fuzz`,
# tests/fuzz/README.md). Prints CTest's summary line for each.
# This is the README's test command, and exactly what CI runs (.ci/run).
#
# Environment:
#   HSMPROV_SKIP_INSTALL=1   do not run scripts/install-deps.sh
#   HSMPROV_SKIP_ASAN=1      only the plain build
#   HSMPROV_ASAN_LABELS=RE   run only the tests whose labels match RE in the
#                            ASan build (default: all)
#   HSMPROV_SKIP_TSAN=1      no ThreadSanitizer build
#   HSMPROV_SKIP_FUZZ=1      no fuzz build
#   JOBS=N                   parallel build and test jobs (default: nproc)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=${JOBS:-$(nproc)}
start=$(date +%s)

if [ -z "${HSMPROV_SKIP_INSTALL:-}" ]; then
    bash scripts/install-deps.sh
fi

summaries=()
status=0

# suite NAME BUILD_DIR [cmake options...]: configure, build, test.
suite() {
    local name=$1 dir=$2 rc=0 ctest_args=()
    shift 2
    echo "==== $name: configure and build in $dir"
    cmake -S . -B "$dir" "$@"
    cmake --build "$dir" -j "$jobs"
    if [ "$name" = asan ] && [ -n "${HSMPROV_ASAN_LABELS:-}" ]; then
        ctest_args+=(-L "$HSMPROV_ASAN_LABELS")
    fi
    if [ "$name" = tsan ] || [ "$name" = fuzz ]; then
        ctest_args+=(-L "$name")
    fi
    echo "==== $name: ctest"
    (cd "$dir" && ctest --output-on-failure -j "$jobs" "${ctest_args[@]}") 2>&1 |
        tee "$dir/ctest.log" || rc=$?
    summaries+=("$name: $(grep -E 'tests passed' "$dir/ctest.log" | tail -n 1)")
    [ "$rc" -eq 0 ] || status=1
}

suite plain build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ -z "${HSMPROV_SKIP_ASAN:-}" ]; then
    suite asan build-asan -DCMAKE_BUILD_TYPE=Debug -DHSMPROV_SANITIZE=address
fi
if [ -z "${HSMPROV_SKIP_TSAN:-}" ]; then
    suite tsan build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHSMPROV_SANITIZE=thread \
        -DHSMPROV_BUILD_BENCH=OFF
fi
if [ -z "${HSMPROV_SKIP_FUZZ:-}" ]; then
    # libFuzzer comes with clang: a build directory of its own.
    suite fuzz build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
        -DHSMPROV_FUZZ=ON
fi

echo "==== summary ($(($(date +%s) - start)) s)"
printf '%s\n' "${summaries[@]}"
exit "$status"
