#!/usr/bin/env bash
# modelgate's load benchmark (run by hand, never by CI). Installs what it needs on a Debian
# machine (wrk and nginx from apt, the LiteLLM proxy from PyPI into target/bench/venv), builds the
# gateway and the bench tools in release mode, then runs bench/run.py with the given arguments,
# e.g. `bench/run.sh --duration 5 --phases matrix --targets direct,pingora,modelgate`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

venv=target/bench/venv
if [ ! -x "$venv/bin/litellm" ]; then
  echo "installing the LiteLLM proxy into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q 'litellm[proxy]'
fi

cargo build --release --quiet -p modelgate -p mock-upstream -p pingora-passthrough -p reload-cost
exec python3 bench/run.py --venv "$venv" "$@"
