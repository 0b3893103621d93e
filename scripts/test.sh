#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (ctest).
#
#   scripts/test.sh                 release build in build/, every test
#   scripts/test.sh --sanitize      AddressSanitizer + UBSan build in build-asan/
#   scripts/test.sh --fuzz [SECS]   clang libFuzzer targets in build-fuzz/, SECS each (30)
#
# Extra arguments after -- go to ctest (e.g. -- -R parity).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=release
fuzz_seconds=30
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) mode=sanitize; shift ;;
    --fuzz) mode=fuzz; shift; if [[ "${1:-}" =~ ^[0-9]+$ ]]; then fuzz_seconds=$1; shift; fi ;;
    --) shift; break ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
jobs=$(nproc)
case "$mode" in
  release)
    build=build
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    ;;
  sanitize)
    build=build-asan
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUNIMED_SANITIZE=ON >/dev/null
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    ;;
  fuzz)
    build=build-fuzz
    CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DUNIMED_FUZZ=ON -DUNIMED_FUZZ_SECONDS="$fuzz_seconds" >/dev/null
    ;;
esac
cmake --build "$build" -j"$jobs"
if [ "$mode" = fuzz ]; then
  ctest --test-dir "$build" --output-on-failure -L fuzz "$@"
else
  ctest --test-dir "$build" --output-on-failure -j"$jobs" -LE fuzz "$@"
fi
