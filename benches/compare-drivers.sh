#!/usr/bin/env bash
# Builds the release binaries the driver comparison needs and runs it:
#   bash benches/compare-drivers.sh [--out DIR] [diaspora-bench compare options...]
# (files, memory, fabric over tcp;ofi_rxm and shm with their own diaspora-servers on
# 127.0.0.1, raw fi_read; see `diaspora-bench compare --help`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cargo build --release --manifest-path "$ROOT/Cargo.toml" -p diaspora-bench -p diaspora-server \
    -p diaspora-rpc --bin diaspora-bench --bin diaspora-server --bin diaspora-fabric-bench
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
exec "$TARGET_DIR/release/diaspora-bench" compare "$@"
