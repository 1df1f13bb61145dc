#!/usr/bin/env bash
# Installs what building and testing modelgate needs on a fresh Debian machine (idempotent).
# Pingora's compression dependency builds zlib-ng, which needs cmake.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${MODELGATE_BROWSER_TESTS:-1}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL for the fleet-store tests (tests/pg.rs): they need a server on 127.0.0.1:5432 that
# trusts the postgres user there. When nothing listens on that port, install Debian's server,
# let the cluster trust loopback connections and start it (no systemd needed). The tests fail,
# never skip, when no server answers.
listening() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ! listening; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "installing: postgresql"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  fi
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  [ -d "/etc/postgresql/$version/main" ] || $SUDO pg_createcluster "$version" main >/dev/null
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! $SUDO grep -q "modelgate tests" "$hba"; then
    # First match wins: trust loopback TCP ahead of the packaged rules.
    $SUDO sed -i '1i # modelgate tests: trust loopback connections\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 50); do
    listening && break
    sleep 0.2
  done
  listening || { echo "PostgreSQL did not start on 127.0.0.1:5432 (see /var/log/postgresql/)" >&2; exit 1; }
  # Where the package's own install already started the cluster, it runs with the old rules.
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
fi

# Redis for the shared rate-limit counter tests (tests/limits.rs): they need a server on
# 127.0.0.1:6379. When nothing listens there, install Debian's server and start it as a daemon
# bound to loopback (no systemd needed). The tests fail, never skip, when no server answers.
redis_listening() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if ! redis_listening; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing: redis-server"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  fi
  # The package's own install may have started it already.
  redis_listening || redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save "" --appendonly no >/dev/null
  for _ in $(seq 1 50); do
    redis_listening && break
    sleep 0.2
  done
  redis_listening || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
fi
