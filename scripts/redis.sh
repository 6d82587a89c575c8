#!/usr/bin/env bash
# Make a Redis server available to the test suite and print the env lines to use it.
#
#   eval "$(bash scripts/redis.sh start)"   # exports QG_TEST_REDIS_URL (and QG_TEST_REDIS_PIDFILE when we started one)
#   bash scripts/redis.sh stop              # stops a throwaway server started by `start`
#
# Uses the server at QG_TEST_REDIS_URL (default redis://127.0.0.1:6379/9) when it answers PING; otherwise installs
# Debian's redis-server if needed and starts a throwaway one on its own port and directory. The tests keep apart
# from each other (and from other runs on the same server) with a random key prefix per test.
set -euo pipefail

URL=${QG_TEST_REDIS_URL:-redis://127.0.0.1:6379/9}
TMP_PORT=${QG_TEST_REDIS_TMP_PORT:-63791}
STATE_DIR=${QG_TEST_REDIS_STATE_DIR:-/tmp/qwen-gateway-redis}

answers() {  # host port: a Redis server answers PING with +PONG
  python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1.0)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

host_port() {  # url -> "host port"
  python3 - "$1" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or 6379)
PY
}

emit() {  # url [pidfile]
  echo "export QG_TEST_REDIS_URL=$1"
  if [ -n "${2:-}" ]; then echo "export QG_TEST_REDIS_PIDFILE=$2"; fi
}

start() {
  read -r host port < <(host_port "$URL")
  if answers "$host" "$port"; then emit "$URL"; return 0; fi
  local tmp_url="redis://127.0.0.1:$TMP_PORT/0"
  if answers 127.0.0.1 "$TMP_PORT"; then emit "$tmp_url" "$STATE_DIR/redis.pid"; return 0; fi
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis.sh: installing redis-server" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) >&2
  fi
  rm -rf "$STATE_DIR"; mkdir -p "$STATE_DIR"
  redis-server --port "$TMP_PORT" --bind 127.0.0.1 --dir "$STATE_DIR" --save "" --appendonly no \
    --daemonize yes --pidfile "$STATE_DIR/redis.pid" --logfile "$STATE_DIR/server.log" >&2
  for _ in $(seq 1 50); do
    if answers 127.0.0.1 "$TMP_PORT"; then emit "$tmp_url" "$STATE_DIR/redis.pid"; return 0; fi
    sleep 0.1
  done
  echo "redis.sh: throwaway redis-server did not come up; see $STATE_DIR/server.log" >&2
  tail -20 "$STATE_DIR/server.log" >&2 || true
  return 1
}

stop() {
  local pidfile=${QG_TEST_REDIS_PIDFILE:-$STATE_DIR/redis.pid}
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
