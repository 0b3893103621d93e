#!/bin/sh
# Run a libFuzzer target for a bounded time.
#
#   run_fuzzer.sh FUZZER SECONDS CORPUS_DIR [SEED_DIR...] [-- LIBFUZZER_ARGS...]
#
# Before running, the small files (at most 16 KiB) of each SEED_DIR are
# copied into CORPUS_DIR (existing entries are kept), so that real inputs
# reach the decoders at once instead of after minutes of mutation.  Missing
# seed folders are skipped.  The fuzzer then runs on CORPUS_DIR for SECONDS
# with a 2 GiB RSS limit and a 20 s limit per input (a hang fails the run at
# once, with the input saved, instead of running into ctest's timeout);
# crash and timeout artifacts go to CORPUS_DIR/../FUZZER-NAME-.
# UBSan reports stop the run (the fuzz build compiles UBSan recoverable).
set -eu
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
if [ $# -lt 3 ]; then
    echo "usage: run_fuzzer.sh FUZZER SECONDS CORPUS_DIR [SEED_DIR...] [-- ARGS...]" >&2
    exit 2
fi
fuzzer=$1
seconds=$2
corpus=$3
shift 3
mkdir -p "$corpus"
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    if [ -d "$1" ]; then
        for f in "$1"/*; do
            [ -f "$f" ] || continue
            size=$(wc -c < "$f")
            [ "$size" -le 16384 ] || continue
            cp -f "$f" "$corpus/seed-$(basename "$f")"
        done
    else
        echo "run_fuzzer.sh: seed folder $1 not present, skipped"
    fi
    shift
done
[ $# -gt 0 ] && shift # the "--"
name=$(basename "$fuzzer")
exec "$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 \
    -artifact_prefix="$(dirname "$corpus")/$name-" "$@" "$corpus"
