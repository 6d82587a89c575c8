#!/usr/bin/env bash
# Benchmarks: print figures, never assert times. Each bench/*.py is a standalone script.
set -euo pipefail
cd "$(dirname "$0")/.."
for b in bench/bench_*.py; do
  [ -e "$b" ] || continue
  if [ -n "${1:-}" ] && [[ "$b" != *"$1"* ]]; then continue; fi
  echo "== $b"
  .venv/bin/python "$b"
done
