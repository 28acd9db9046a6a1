#!/usr/bin/env bash
# The project's single test command (also what CI runs through .ci/run):
#
#   bash scripts/test.sh
#
# 1. scripts/install-deps.sh (a no-op when everything is installed)
# 2. cargo fmt --check
# 3. cargo clippy on every target, warnings are errors
# 4. the tests: cargo nextest (or cargo test when nextest is not installed)
# 5. the doctests (nextest does not run them)
# 5b. diaspora-launcher with its optional features mpi and hwloc (clippy and tests)
# 6. the Python bindings: scripts/python.sh (pip install . into a venv in the target dir, pytest)
#
# Every step runs even if an earlier one failed, so one CI run reports everything; the script
# exits non-zero if any step failed. Only three compilations happen: clippy's check build, the
# dev-profile test build (shared by the tests and the doctests), and the Python extension
# (pyo3 and diaspora-python only, in the dev profile, reusing the test build's other crates;
# the cargo test steps exclude diaspora-python so it is built once). No release build.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

bash scripts/install-deps.sh

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-$([[ -t 1 ]] && echo always || echo never)}"
if [[ -n "${CI:-}" ]]; then
    # Clean one-shot builds: incremental artifacts only cost time and disk.
    export CARGO_INCREMENTAL=0
fi

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/diaspora-test.XXXXXX")"
trap 'rm -rf "$LOG_DIR"' EXIT

declare -a RESULTS=()
FAILED=0

# run NAME CMD...: runs a step, records its status, tees its output to $LOG_DIR/NAME.log.
run() {
    local name="$1"
    shift
    printf '\n==> [%s] %s\n' "$name" "$*"
    local start=$SECONDS status=0
    "$@" 2>&1 | tee "$LOG_DIR/$name.log" || status=$?
    local took=$((SECONDS - start))
    if ((status == 0)); then
        RESULTS+=("PASS  $name (${took}s)")
    else
        RESULTS+=("FAIL  $name (${took}s, exit $status)")
        FAILED=1
    fi
    return 0
}

run fmt cargo fmt --all -- --check
run clippy cargo clippy --workspace --all-targets -- -D warnings

# The driver library the dylib tests load (they run this same command, a no-op once it ran
# here; built alone, it can take minutes on a loaded 2-core machine: other feature sets).
run cdylib cargo build -p diaspora-dylib-driver

if cargo nextest --version >/dev/null 2>&1; then
    RUNNER=nextest
    run tests cargo nextest run --workspace --exclude diaspora-python --no-fail-fast
else
    RUNNER=cargo-test
    run tests cargo test --workspace --exclude diaspora-python --no-fail-fast --lib --bins --tests
fi
run doctests cargo test --workspace --exclude diaspora-python --doc
# The launcher's optional features (hwloc pinning, MPI rank detection and rendezvous): built and
# tested on their own, so the workspace build above stays lean (only this crate is rebuilt).
run launcher-features-clippy cargo clippy -p diaspora-launcher --features mpi,hwloc --all-targets -- -D warnings
if [[ $RUNNER == nextest ]]; then
    run launcher-features cargo nextest run -p diaspora-launcher --features mpi,hwloc --no-fail-fast
else
    run launcher-features cargo test -p diaspora-launcher --features mpi,hwloc --no-fail-fast
fi
run python bash scripts/python.sh

# Summary lines of the test runners (the log of a long run scrolls them away).
printf '\n==> summary\n'
if [[ $RUNNER == nextest ]]; then
    # The Summary line, followed by the list of failed tests if any.
    if grep -qE '^[[:space:]]*Summary \[' "$LOG_DIR/tests.log"; then
        sed -n '/^[[:space:]]*Summary \[/,$p' "$LOG_DIR/tests.log"
    else
        echo "tests: no nextest summary (the build failed?)"
    fi
else
    awk '/^test result:/ { p += $4; f += $6; i += $8 } END {
        printf "tests: %d passed; %d failed; %d ignored (cargo test)\n", p, f, i }' \
        "$LOG_DIR/tests.log"
fi
awk '/^test result:/ { p += $4; f += $6; i += $8 } END {
    printf "doctests: %d passed; %d failed; %d ignored\n", p, f, i }' "$LOG_DIR/doctests.log"
if grep -q 'SKIPPED: Python' "$LOG_DIR/python.log"; then
    echo "python: SKIPPED (python3-venv missing; see the banner above)"
else
    # pytest's closing line, e.g. "36 passed in 8.16s".
    echo "python: $(grep -E '^[0-9]+ (passed|failed)|^[0-9]+ .*(passed|failed|error)' "$LOG_DIR/python.log" | tail -n1)"
fi
printf '%s\n' "${RESULTS[@]}"

if ((FAILED)); then
    echo "scripts/test.sh: FAILED" >&2
    exit 1
fi
echo "scripts/test.sh: all checks passed"
