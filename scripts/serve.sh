#!/usr/bin/env bash
# Builds and runs the gateway on the shipped example config (no keys needed: the demo provider
# is the built-in mock). Extra arguments go to modelgate, e.g. --listen 127.0.0.1:9000.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELGATE_BROWSER_TESTS=0 scripts/setup.sh
exec cargo run --release --quiet -- --config "${MODELGATE_CONFIG:-config.example.yaml}" "$@"
