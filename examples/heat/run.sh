#!/usr/bin/env bash
# examples/heat/run.sh -- the worked example on the files driver, one command:
#
#   bash examples/heat/run.sh [OUT_DIR]
#
# Builds heat-sim and heat-analysis, starts the simulation on RANKS MPI ranks (mpirun; one
# rank without it) and, at the same time, the analysis. The analysis prints one line per
# analysed step (global min/max/mean), writes OUT_DIR/heat-step<S>.png at a few steps and its
# log OUT_DIR/steps.log. Run the analysis again with the same --consumer and --log: it
# resumes after its acknowledgements and repeats no step.
#
# Options (environment): RANKS=2 NX=128 NY=96 STEPS=400 EVERY=10 K=40 PNG_STEPS=0,200,400
# DELAY_MS=5 PYTHON_ANALYSIS=1 (also run examples/heat/analysis.py, needs diaspora_stream)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${1:-$(mktemp -d /tmp/heat-XXXXXX)}
RANKS=${RANKS:-2} NX=${NX:-128} NY=${NY:-96} STEPS=${STEPS:-400} EVERY=${EVERY:-10}
K=${K:-40} PNG_STEPS=${PNG_STEPS:-0,200,400} DELAY_MS=${DELAY_MS:-5}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cargo build -q -p diaspora-example-heat
BIN=${CARGO_TARGET_DIR:-target}/debug
mkdir -p "$OUT"
SIM=("$BIN/heat-sim" --root "$OUT/topics" --nx "$NX" --ny "$NY" --steps "$STEPS" --every "$EVERY" --delay-ms "$DELAY_MS")
if command -v mpirun >/dev/null; then
    mpirun -n "$RANKS" --oversubscribe --bind-to none "${SIM[@]}" --expect-ranks "$RANKS" &
else
    echo "[heat] no mpirun: one rank" >&2
    "${SIM[@]}" &
fi
SIM_PID=$!
while [[ ! -e $OUT/topics/heat ]]; do kill -0 "$SIM_PID" 2>/dev/null || break; sleep 0.05; done
"$BIN/heat-analysis" --root "$OUT/topics" --k "$K" --log "$OUT/steps.log" \
    --png-steps "$PNG_STEPS" --png-dir "$OUT"
wait "$SIM_PID"
if [[ ${PYTHON_ANALYSIS:-0} = 1 ]]; then
    python3 examples/heat/analysis.py --root "$OUT/topics" --k "$K" --log "$OUT/steps-py.log" \
        --png-steps "$PNG_STEPS" --png-dir "$OUT"
fi
echo "[heat] done: $OUT (steps.log, heat-step*.png)"
