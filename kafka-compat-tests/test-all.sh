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

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        $sudo_cmd apt-get update -qq
        apt_updated=1
    fi
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# C dependencies (zstd, lz4, librdkafka) need a C toolchain; librdkafka's build wants make,
# perl and python too.
for tool in cc make perl python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "installing build tools"
        apt_install build-essential perl python3
        break
    fi
done

# kcat: librdkafka's command-line client, driven by the broker tests.
if ! command -v kcat >/dev/null 2>&1; then
    log "installing kcat"
    apt_install kcat
fi
export CHORUS_REQUIRE_KCAT=1

# Third-party clients for kafka-compat-tests, installed under target/compat/.
compat=target/compat
mkdir -p "$compat"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "installing node and npm"
    apt_install nodejs npm
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "installing python3-venv"
    apt_install python3-venv
fi
if [ ! -x "$compat/venv/bin/python" ] || ! "$compat/venv/bin/python" -c 'import kafka, confluent_kafka, aiokafka, snappy, lz4.frame, zstandard, cramjam, websockets, aiosmtpd' >/dev/null 2>&1; then
    log "installing kafka-python, confluent-kafka, aiokafka and their codecs"
    python3 -m venv "$compat/venv"
    "$compat/venv/bin/pip" install -q kafka-python confluent-kafka aiokafka cramjam python-snappy lz4 zstandard websockets aiosmtpd
fi
if [ ! -d "$compat/node/node_modules/kafkajs" ]; then
    log "installing kafkajs"
    npm install --silent --prefix "$compat/node" kafkajs
fi
export CHORUS_REQUIRE_COMPAT=1

log "cargo test --workspace --all-targets --no-fail-fast"
# Every test has its own timeouts; this outer one only stops a runaway build or test binary.
output=$(mktemp)
status=0
timeout 80m cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$output" || status=$?
total() { grep '^test result:' "$output" | grep -o "[0-9]* $1" | awk '{s += $1} END {print s + 0}'; }
printf '\n%s passed, %s failed\n' "$(total passed)" "$(total failed)"
rm -f "$output"
exit "$status"
