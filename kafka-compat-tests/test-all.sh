#!/usr/bin/env bash
# Runs every Chorus test. Installs what the tests need when it is missing, so a fresh
# Debian/Ubuntu machine with Rust passes. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust first (https://rustup.rs)" >&2
    exit 1
fi

# Build C dependencies (zstd, lz4) need a C compiler.
if ! command -v cc >/dev/null 2>&1; then
    log "installing a C compiler"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    $sudo_cmd apt-get install -y -qq build-essential
fi

log "cargo test --workspace --all-targets"
# Every test has its own timeouts; this outer one only stops a runaway build or test binary.
timeout 80m cargo test --workspace --all-targets
