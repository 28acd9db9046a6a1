#!/usr/bin/env bash
# The Python bindings' tests (a step of scripts/test.sh; also usable alone):
#
#   bash scripts/python.sh [pytest args...]
#
# 1. a virtual environment in the target dir (<target>/pyvenv), made once, with maturin,
#    pytest and numpy;
# 2. `pip install .` of this repository into it (maturin is the PEP 517 backend, see
#    pyproject.toml), in the dev profile by default: it reuses the dev build of the workspace
#    crates that the cargo tests already made, so only pyo3 and the extension compile here
#    (DIASPORA_PY_PROFILE=release for an optimised build, e.g. for benchmarks);
# 3. pytest on python/tests (which also runs the seed programs in python/examples unchanged,
#    and loads tests/dylib-driver's library through Driver(backend="dyfiles:<path>")).
#
# If python3-venv is missing it prints a loud SKIPPED banner and exits 0 (install it with
# scripts/install-deps.sh). PYTHON selects the interpreter (default: python3, >= 3.11).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
TARGET="${CARGO_TARGET_DIR:-target}"
mkdir -p "$TARGET"
VENV="$(cd "$TARGET" && pwd)/pyvenv"
PROFILE="${DIASPORA_PY_PROFILE:-dev}"

skip() {
    printf '\n%s\n' "######################################################################" >&2
    printf '### SKIPPED: Python binding tests: %s\n' "$*" >&2
    printf '### Install it with: bash scripts/install-deps.sh\n' >&2
    printf '%s\n\n' "######################################################################" >&2
    exit 0
}

command -v "$PY" >/dev/null 2>&1 || skip "no $PY interpreter"
"$PY" -c 'import venv, ensurepip' 2>/dev/null || skip "python3-venv is missing ($PY has no ensurepip)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "scripts/python.sh: $PY is older than 3.11 (the bindings need the 3.11 buffer API)" >&2; exit 1; }

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[python] creating $VENV with $("$PY" --version)"
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check 'maturin>=1.9,<2' pytest numpy

# The PEP 517 backend runs the venv's maturin binary: it must be on PATH.
export PATH="$VENV/bin:$PATH"

echo "[python] pip install . (maturin, profile $PROFILE)"
MATURIN_PEP517_ARGS="--profile $PROFILE" "$VENV/bin/python" -m pip install -q \
    --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall .

# A driver library for test_dylib.py (Driver(backend="dyfiles:<path>")); the cargo tests
# already built it in the dev profile, so this is a no-op in scripts/test.sh.
echo "[python] cargo build -p diaspora-dylib-driver"
cargo build -q -p diaspora-dylib-driver
export DIASPORA_TEST_DYLIB
DIASPORA_TEST_DYLIB="$(cd "$TARGET" && pwd)/debug/libdiaspora_dylib_driver.so"

echo "[python] pytest python/tests"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider python/tests "$@"
