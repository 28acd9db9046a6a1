#!/usr/bin/env bash
# Runs the three reference workloads (produce then consume, $RUNS runs each) and prints the
# medians:
#   (a) 1,000,000 events, ~30 B JSON metadata, no data
#   (b)   100,000 events, 64 KiB data
#   (c)   100,000 events,  1 KiB data
#
# Environment:
#   DIASPORA_BENCH_DIR  where topics are written (default /tmp); each run uses a fresh
#                       temporary directory under it, deleted after the run
#   RUNS                runs per case (default 3)
#   DRIVER              driver name (default files; "memory" is the no-storage baseline)
# Extra arguments are passed to every invocation, e.g. ./run-all.sh --partitions 4
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DATA_DIR=${DIASPORA_BENCH_DIR:-/tmp}
RUNS=${RUNS:-3}
DRIVER=${DRIVER:-files}

cargo build --release -p diaspora-bench --manifest-path "$ROOT/Cargo.toml"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/diaspora-bench

mkdir -p "$DATA_DIR"
# The benchmark creates its temporary storage under $TMPDIR.
export TMPDIR=$DATA_DIR
SUMMARY=$(mktemp)
CASE_LOG=$(mktemp)
trap 'rm -f "$SUMMARY" "$CASE_LOG"' EXIT

run_case() {
    local name=$1
    shift
    echo
    echo "=== $name"
    "$BIN" both --driver "$DRIVER" --runs "$RUNS" "$@" | tee "$CASE_LOG"
    grep ' median ' "$CASE_LOG" | sed "s/^/$name /" >>"$SUMMARY"
}

run_case "(a) 1M x 30B-meta      " --events 1000000 --metadata-size 30 --data-size 0 "$@"
run_case "(b) 100k x 64KiB-data  " --events 100000 --data-size 65536 "$@"
run_case "(c) 100k x 1KiB-data   " --events 100000 --data-size 1024 "$@"

echo
echo "=== medians of $RUNS runs (driver $DRIVER, storage under $DATA_DIR)"
cat "$SUMMARY"
