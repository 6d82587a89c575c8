#!/usr/bin/env bash
# Make a MariaDB/MySQL server available to the test suite and print the env lines to use it.
#
#   eval "$(bash scripts/mariadb.sh start)"   # exports QG_TEST_DB_* (and QG_TEST_DB_PIDFILE when we started one)
#   bash scripts/mariadb.sh stop              # stops a throwaway server started by `start`
#
# Uses the server at 127.0.0.1:3306 (root, empty password) when it answers; otherwise installs Debian's
# mariadb-server if needed and starts a throwaway mariadbd on its own port and data dir.
set -euo pipefail

HOST=127.0.0.1
PORT=${QG_TEST_DB_PORT:-3306}
TMP_PORT=${QG_TEST_DB_TMP_PORT:-33071}
STATE_DIR=${QG_TEST_DB_STATE_DIR:-/tmp/qwen-gateway-mariadb}

answers() {  # host port
  python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1.0)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); data = s.recv(64)
    sys.exit(0 if data else 1)          # a MySQL server greets first
except OSError:
    sys.exit(1)
PY
}

login_ok() {  # port
  if command -v mariadb >/dev/null 2>&1; then
    mariadb -h "$HOST" -P "$1" -uroot --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1
  else
    return 0  # no client to check with: let the tests tell
  fi
}

emit() {  # port [pidfile]
  echo "export QG_TEST_DB_HOST=$HOST QG_TEST_DB_PORT=$1 QG_TEST_DB_USER=root QG_TEST_DB_PASSWORD="
  if [ -n "${2:-}" ]; then echo "export QG_TEST_DB_PIDFILE=$2"; fi
}

start() {
  if answers "$HOST" "$PORT" && login_ok "$PORT"; then emit "$PORT"; return 0; fi
  if answers "$HOST" "$TMP_PORT" && login_ok "$TMP_PORT"; then emit "$TMP_PORT" "$STATE_DIR/mariadb.pid"; return 0; fi
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    echo "mariadb.sh: installing mariadb-server" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null) >&2
  fi
  local mariadbd=/usr/sbin/mariadbd
  command -v mariadbd >/dev/null 2>&1 && mariadbd=$(command -v mariadbd)
  rm -rf "$STATE_DIR"; mkdir -p "$STATE_DIR/data"
  chown -R mysql:mysql "$STATE_DIR" 2>/dev/null || true
  local user=(); [ "$(id -u)" = 0 ] && user=(--user=mysql)
  mariadb-install-db --no-defaults "${user[@]}" --datadir="$STATE_DIR/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$STATE_DIR/install.log" 2>&1
  "$mariadbd" --no-defaults "${user[@]}" --datadir="$STATE_DIR/data" --port="$TMP_PORT" --bind-address=$HOST \
    --socket="$STATE_DIR/mysqld.sock" --pid-file="$STATE_DIR/mariadb.pid" --skip-log-bin \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    >"$STATE_DIR/server.log" 2>&1 &
  for _ in $(seq 1 100); do
    if answers "$HOST" "$TMP_PORT"; then emit "$TMP_PORT" "$STATE_DIR/mariadb.pid"; return 0; fi
    sleep 0.2
  done
  echo "mariadb.sh: throwaway mariadbd did not come up; see $STATE_DIR/server.log" >&2
  tail -20 "$STATE_DIR/server.log" >&2 || true
  return 1
}

stop() {
  local pidfile=${QG_TEST_DB_PIDFILE:-$STATE_DIR/mariadb.pid}
  [ -f "$pidfile" ] || return 0
  kill "$(cat "$pidfile")" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
  rm -rf "$STATE_DIR"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
