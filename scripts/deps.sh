#!/usr/bin/env bash
# Installs what Herald's tests and demo need and the machine lacks:
# a ClickHouse server (Debian's clickhouse-server package).
# Idempotent: does nothing when everything is there.
set -euo pipefail

have_clickhouse() {
  command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || command -v clickhouse >/dev/null 2>&1
}

if ! command -v go >/dev/null 2>&1; then
  echo "deps: Go is required (https://go.dev/doc/install)" >&2
  exit 1
fi

if have_clickhouse; then
  exit 0
fi

echo "deps: installing clickhouse-server (apt)..."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "deps: need root (or sudo) to apt-get install clickhouse-server" >&2; exit 1
  fi
fi
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || true
  if $SUDO apt-get install -y -qq clickhouse-server >/dev/null; then
    # The package's own service is not used: tests and the demo start a
    # private server with their own config, port and data dir.
    if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now clickhouse-server >/dev/null 2>&1 || true; fi
  fi
fi

if ! have_clickhouse; then
  cat >&2 <<'MSG'
deps: no ClickHouse server could be installed with apt on this OS.
Get the official single binary and put it on PATH:
    curl https://clickhouse.com/ | sh && sudo mv clickhouse /usr/local/bin/
(Herald runs it as `clickhouse server`.) Or point Herald at an existing server
with -clickhouse.dsn clickhouse://host:9000/db.
MSG
  exit 1
fi
echo "deps: clickhouse-server installed"
