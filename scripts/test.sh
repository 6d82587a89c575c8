#!/usr/bin/env bash
# The whole test suite, with everything it needs started. Called by `make test` (after lint).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

eval "$(bash scripts/mariadb.sh start)"
eval "$(bash scripts/redis.sh start)"
cleanup() {
  if [ -n "${QG_TEST_DB_PIDFILE:-}" ]; then bash scripts/mariadb.sh stop; fi
  if [ -n "${QG_TEST_REDIS_PIDFILE:-}" ]; then bash scripts/redis.sh stop; fi
}
trap cleanup EXIT
[ -x scripts/browser.sh ] && eval "$(bash scripts/browser.sh)"

set +e
"$BIN/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "test.sh: no tests ran: that is a failure" >&2; exit 1; fi
exit "$rc"
