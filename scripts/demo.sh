#!/usr/bin/env bash
# One-command demo on a fresh Debian 12 machine:
#
#   bash scripts/demo.sh
#
# Installs the dependencies, builds the release binaries, then runs the main job on the files
# driver: create a topic, list it, produce events, consume them with a named consumer (in two
# runs, showing that the second resumes after the first one's acknowledgements), describe the
# topic, mark it complete. Then the same through the network: start a diaspora-server on
# loopback (tcp;ofi_rxm), create a topic, produce and consume through it with the fabric driver
# (resuming after acknowledgements), stop the server with SIGTERM and verify its data directory
# with the files driver. Then the Python bindings: `pip install .` into a virtual environment
# and the upstream docs' seed programs (producer.py, consumer.py) run unchanged. Finally run
# short benchmarks.
#
# Environment:
#   DIASPORA_DEMO_ROOT   directory holding the topics (default: a temporary directory, removed
#                        at the end; a directory you provide is kept)
#   DIASPORA_DEMO_TOPIC  topic name (default: demo-<timestamp>, so reruns on a kept root work)
#   DIASPORA_DEMO_EVENTS events produced by the demo (default: 1000)
#   DIASPORA_DEMO_SKIP_BENCH=1  skip the benchmarks
#   DIASPORA_DEMO_SKIP_PYTHON=1 skip the Python part
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

if [[ -t 1 ]]; then BOLD=$'\033[1m' RESET=$'\033[0m'; else BOLD='' RESET=''; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
exec 3>&1 # show() prints commands here, even when the command's own output is redirected
# show CMD...: prints a command (as the user would type it) and runs it with a time limit.
show() {
    local arg line
    line="\$ $(basename "$1")"
    for arg in "${@:2}"; do
        if [[ $arg =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
            line+=" $arg"
        else
            line+=" '${arg//\'/\'\\\'\'}'"
        fi
    done
    printf '%s\n' "$line" >&3
    timeout "${DEMO_TIMEOUT:-600}" "$@"
}

step "Installing dependencies"
bash scripts/install-deps.sh

step "Building release binaries"
cargo build --release -p diaspora-ctl -p diaspora-bench -p diaspora-server
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
[[ $TARGET_DIR == /* ]] || TARGET_DIR="$PWD/$TARGET_DIR"
CTL="$TARGET_DIR/release/diaspora-ctl"
BENCH="$TARGET_DIR/release/diaspora-bench"
SERVER="$TARGET_DIR/release/diaspora-server"
for b in "$CTL" "$BENCH" "$SERVER"; do
    [[ -x $b ]] || { echo "demo: missing binary $b" >&2; exit 1; }
done

if [[ -n "${DIASPORA_DEMO_ROOT:-}" ]]; then
    ROOT="$DIASPORA_DEMO_ROOT"
    mkdir -p "$ROOT"
else
    ROOT="$(mktemp -d "${TMPDIR:-/tmp}/diaspora-demo.XXXXXX")"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/diaspora-demo-out.XXXXXX")"
SERVER_PID=
cleanup() {
    [[ -z $SERVER_PID ]] || kill -TERM "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
    [[ -n "${DIASPORA_DEMO_ROOT:-}" ]] || rm -rf "$ROOT"
}
trap cleanup EXIT
TOPIC="${DIASPORA_DEMO_TOPIC:-demo-$(date +%Y%m%d-%H%M%S)}"
EVENTS="${DIASPORA_DEMO_EVENTS:-1000}"
FIRST=$((EVENTS * 2 / 5))
REST=$((EVENTS - FIRST))
DRIVER=(--driver files --driver.root_path "$ROOT")

step "Creating topic '$TOPIC' with 4 partitions under $ROOT"
show "$CTL" topic create --name "$TOPIC" "${DRIVER[@]}" --topic.num_partitions 4

step "Listing topics"
show "$CTL" topic list "${DRIVER[@]}"

step "Producing $EVENTS events (JSON metadata + 256 bytes of data each)"
show "$CTL" produce --name "$TOPIC" "${DRIVER[@]}" --count "$EVENTS" \
    --metadata '{"x":42,"name":"bob"}' --data-size 256

# consume_into FILE ARGS...: runs `diaspora-ctl consume`, saving its output (one line per event:
# `<partition> <id> <metadata> [<data-length>]`) in FILE and showing its first and last lines.
consume_into() {
    local out="$1"
    shift
    show "$CTL" consume --name "$TOPIC" "${DRIVER[@]}" "$@" >"$out"
    local n
    n=$(wc -l <"$out")
    if ((n <= 6)); then
        cat "$out"
    else
        head -n 3 "$out"
        echo "  ... ($((n - 6)) more lines) ..."
        tail -n 3 "$out"
    fi
    echo "  -> $n events"
}

step "Consuming $FIRST events as consumer 'my_consumer' (they are acknowledged)"
consume_into "$WORK/run1" --consumer my_consumer --count "$FIRST"

step "Consuming again as 'my_consumer', with data: resumes after the acknowledged events"
consume_into "$WORK/run2" --consumer my_consumer --count "$REST" --data

# check_resume RUN1 RUN2: together, the two runs saw every event exactly once.
check_resume() {
    awk '{ print $1, $2 }' "$1" "$2" | sort >"$WORK/seen"
    local total dups
    total=$(wc -l <"$WORK/seen")
    dups=$(uniq -d "$WORK/seen" | wc -l)
    if ((total != EVENTS || dups != 0)); then
        echo "demo: expected $EVENTS distinct events over the two runs, got $total ($dups repeated)" >&2
        exit 1
    fi
    echo "resume check: the two runs consumed all $EVENTS events, none twice"
}
check_resume "$WORK/run1" "$WORK/run2"

step "Describing the topic"
show "$CTL" topic describe --name "$TOPIC" "${DRIVER[@]}"

step "Marking the topic complete"
show "$CTL" topic complete --name "$TOPIC" "${DRIVER[@]}"
show "$CTL" topic describe --name "$TOPIC" "${DRIVER[@]}"

# ---------------------------------------------------------------------------------------------
# The same through the network: a diaspora-server on loopback and the fabric driver.
# ---------------------------------------------------------------------------------------------
NET="$ROOT/server"
mkdir -p "$NET/data"
step "Starting diaspora-server on 127.0.0.1 (tcp;ofi_rxm), data in $NET/data"
printf '$ %s\n' "diaspora-server --data-dir $NET/data --group-file $NET/group.json --provider 'tcp;ofi_rxm' &" >&3
"$SERVER" --data-dir "$NET/data" --group-file "$NET/group.json" --provider "tcp;ofi_rxm" \
    2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 1 300); do
    [[ -s "$NET/group.json" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "demo: server exited" >&2; exit 1; }
    sleep 0.1
done
[[ -s "$NET/group.json" ]] || { cat "$WORK/server.log" >&2; echo "demo: no group file after 30 s" >&2; exit 1; }
head -n 3 "$WORK/server.log"
DRIVER=(--driver fabric --driver.group_file "$NET/group.json")

step "Creating topic '$TOPIC' with 4 partitions on the server"
show "$CTL" topic create --name "$TOPIC" "${DRIVER[@]}" --topic.num_partitions 4
show "$CTL" topic list "${DRIVER[@]}"

step "Producing $EVENTS events through the server (the server pulls the data by RDMA)"
show "$CTL" produce --name "$TOPIC" "${DRIVER[@]}" --count "$EVENTS" \
    --metadata '{"x":42,"name":"bob"}' --data-size 256

step "Consuming $FIRST events as 'my_consumer' through the server"
consume_into "$WORK/net1" --consumer my_consumer --count "$FIRST"
step "Consuming again as 'my_consumer', with data: resumes after the acknowledged events"
consume_into "$WORK/net2" --consumer my_consumer --count "$REST" --data
check_resume "$WORK/net1" "$WORK/net2"

step "Stopping the server (SIGTERM) and verifying its data directory with the files driver"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" || { cat "$WORK/server.log" >&2; echo "demo: server did not stop cleanly" >&2; exit 1; }
SERVER_PID=
tail -n 2 "$WORK/server.log"
show "$CTL" topic verify --name "$TOPIC" --driver files --driver.root_path "$NET/data" >/dev/null
echo "verify: the server's data directory is a clean files-driver root"

# ---------------------------------------------------------------------------------------------
# Python: pip install . into a venv, then the seed programs unchanged.
# ---------------------------------------------------------------------------------------------
if [[ "${DIASPORA_DEMO_SKIP_PYTHON:-0}" != 1 ]]; then
    VENV="$TARGET_DIR/demo-venv"
    step "Python: pip install . into $VENV (maturin builds the extension)"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check 'maturin>=1.9,<2'
    PATH="$VENV/bin:$PATH" show "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        --no-build-isolation --force-reinstall .
    PYROOT="$ROOT/python"
    mkdir -p "$PYROOT"
    step "Python: the seed producer stores 100 events, the seed consumer prints them"
    show "$CTL" topic create --name my_topic --driver files --driver.root_path "$PYROOT"
    show "$VENV/bin/python" python/examples/producer.py "$PYROOT" my_topic
    show "$VENV/bin/python" python/examples/consumer.py "$PYROOT" my_topic >"$WORK/py.out"
    # (The seed consumer, kept unchanged, also prints its usage line: it checks for 4 arguments
    # but uses 2.) Count the metadata lines.
    grep -m 3 '^{' "$WORK/py.out"
    n=$(grep -c '^{' "$WORK/py.out")
    ((n == 100)) || { echo "demo: the Python consumer printed $n events, expected 100" >&2; exit 1; }
    echo "  -> 100 events"
fi

if [[ "${DIASPORA_DEMO_SKIP_BENCH:-0}" != 1 ]]; then
    step "Benchmark: 200000 events, metadata only"
    DEMO_TIMEOUT=1800 show "$BENCH" --events 200000 --data-size 0 --runs 3
    step "Benchmark: 20000 events of 64 KiB"
    DEMO_TIMEOUT=1800 show "$BENCH" --events 20000 --data-size 65536 --runs 3
fi

step "Demo finished successfully"
