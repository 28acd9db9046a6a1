#!/usr/bin/env bash
# Installs everything diaspora-rs needs on a Debian 12 machine. Idempotent: when everything is
# already present it touches neither apt nor the network, so CI pays nothing for it.
#
#   bash scripts/install-deps.sh
#
# Runs as root, or through sudo when not root.
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*"; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "not root and sudo is not available" >&2
        exit 1
    fi
fi

# ---------------------------------------------------------------------------------------------
# System packages (Debian names). Later issues add their packages HERE, e.g.:
#   driver-fabric:    libfabric-dev
#   launcher / MPI:   openmpi-bin libopenmpi-dev
#   Python bindings:  python3-dev python3-venv
#   slurm tests:      (see slurm/README)
# Keep this list minimal: every entry costs CI time on a fresh machine.
# ---------------------------------------------------------------------------------------------
PACKAGES=(
    build-essential
    pkg-config
    # fabric-sys / diaspora-fabric: libfabric headers + library, fi_info, and libclang for bindgen
    libfabric-dev
    libfabric-bin
    libclang-dev
    clang
)

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    log "apt-get update"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    log "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
for p in "${PACKAGES[@]}"; do
    is_installed "$p" || missing+=("$p")
done

# ---------------------------------------------------------------------------------------------
# Rust toolchain: needed with rustfmt and clippy. Installed with rustup only if cargo is absent.
# ---------------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
need_rust=0
if ! command -v cargo >/dev/null 2>&1; then
    need_rust=1
    for p in curl ca-certificates; do
        is_installed "$p" || missing+=("$p")
    done
fi

if ((${#missing[@]})); then
    apt_install "${missing[@]}"
else
    log "system packages present: ${PACKAGES[*]}"
fi

if ((need_rust)); then
    log "cargo not found: installing the stable Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --component rustfmt,clippy
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    log "Rust installed; in new shells run: source \"${CARGO_HOME:-$HOME/.cargo}/env\""
fi

# rustfmt and clippy are required by scripts/test.sh.
if command -v rustup >/dev/null 2>&1; then
    for c in rustfmt clippy; do
        if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
            log "adding rustup component $c"
            rustup component add "$c"
        fi
    done
fi

log "toolchain: $(cargo --version)"
if cargo nextest --version >/dev/null 2>&1; then
    log "test runner: $(cargo nextest --version | head -n1)"
else
    log "cargo-nextest not found: scripts/test.sh will use 'cargo test' (optional: cargo install --locked cargo-nextest)"
fi
log "done"
