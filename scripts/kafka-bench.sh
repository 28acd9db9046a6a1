#!/usr/bin/env bash
# The kafka driver next to a plain rdkafka client on the same tansu broker, for the three
# standard cases of `diaspora-bench compare` ((a) 1M x 30 B metadata, (b) 20k x 64 KiB,
# (c) 200k x 1 KiB), ROUNDS rounds in alternating order, a fresh broker (memory://) on
# 127.0.0.1 per run. Prints every run and the medians.
#
#   cargo build --release -p diaspora-bench -p diaspora-driver-kafka --examples
#   scripts/kafka-bench.sh [ROUNDS] [SCALE]
#
# SCALE multiplies the event counts (e.g. 0.01 for a quick look). TANSU selects the broker
# binary (default /opt/tansu/bin/tansu, installed by scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SCALE=${2:-1}
TANSU=${TANSU:-/opt/tansu/bin/tansu}
PORT=${PORT:-19092}
ADDR=127.0.0.1:$PORT
BENCH=target/release/diaspora-bench
PLAIN=target/release/examples/plain_client
for b in "$TANSU" "$BENCH" "$PLAIN"; do
    [ -x "$b" ] || { echo "missing $b (see the header of $0)" >&2; exit 1; }
done
OUT=$(mktemp -d)
BROKER=
stop_broker() {
    if [ -n "$BROKER" ]; then
        kill "$BROKER" 2>/dev/null || true
        wait "$BROKER" 2>/dev/null || true
        BROKER=
    fi
}
trap 'stop_broker; rm -rf "$OUT"' EXIT
start_broker() {
    RUST_LOG=warn "$TANSU" broker --listener-url "tcp://$ADDR" \
        --advertised-listener-url "tcp://$ADDR" --storage-engine memory://tansu/ \
        >"$OUT/broker.log" 2>&1 &
    BROKER=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "tansu did not listen on $ADDR within 10 s:" >&2
    cat "$OUT/broker.log" >&2
    exit 1
}
# One run: prints "produce EV_S MIB_S" and "consume EV_S MIB_S".
run_plain() { # events size
    timeout 900 "$PLAIN" --bootstrap "$ADDR" --topic plain --events "$1" --metadata-size 30 \
        --data-size "$2" --timeout-secs 600 | awk '{print $1, $(NF-3), $(NF-1)}'
}
run_driver() { # events size
    timeout 900 "$BENCH" both --driver kafka --driver.bootstrap_servers "$ADDR" \
        --driver.resume scan --events "$1" --data-size "$2" --no-ceiling --topic drv \
        | awk '$1 == "run" && ($3 == "produce" || $3 == "consume") {
                 for (i = 1; i <= NF; i++) { if ($i == "events/s") e = $(i-1); if ($i == "MiB/s") m = $(i-1) }
                 print $3, e, m }'
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

for case in "a 1000000 0" "b 20000 65536" "c 200000 1024"; do
    set -- $case
    name=$1
    events=$(awk -v n="$2" -v s="$SCALE" 'BEGIN {printf "%d", n * s}')
    size=$3
    for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) -eq 1 ]; then order="plain driver"; else order="driver plain"; fi
        for who in $order; do
            start_broker
            "run_$who" "$events" "$size" | while read -r phase ev mib; do
                echo "$name $who $phase $ev $mib" | tee -a "$OUT/runs"
            done
            stop_broker
        done
    done
    echo "case $name: $events events x (30 B metadata + $size B data), medians of $ROUNDS"
    for who in plain driver; do
        for phase in produce consume; do
            ev=$(awk -v n="$name" -v w="$who" -v p="$phase" '$1==n && $2==w && $3==p {print $4}' "$OUT/runs" | median)
            mib=$(awk -v n="$name" -v w="$who" -v p="$phase" '$1==n && $2==w && $3==p {print $5}' "$OUT/runs" | median)
            printf '  %-6s %-7s %12s events/s %10s MiB/s\n' "$who" "$phase" "$ev" "$mib"
        done
    done
done
