#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, unit and integration tests (the real binary
# against mock upstreams on 127.0.0.1), and the official SDK checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
