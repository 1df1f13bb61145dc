#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, unit and integration tests (the real binary
# against mock upstreams on 127.0.0.1, and fleets of it on a PostgreSQL server that setup.sh
# starts when none listens on 127.0.0.1:5432), the official OpenAI and Anthropic SDK checks and
# the headless-browser dashboard test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The official SDKs, in a virtual environment under target/ (rebuilt when requirements change).
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/sdk/requirements.txt "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
  cp tests/sdk/requirements.txt "$venv/requirements.txt"
fi
export MODELGATE_SDK_PYTHON="$PWD/$venv/bin/python" MODELGATE_REQUIRE_SDK=1
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
