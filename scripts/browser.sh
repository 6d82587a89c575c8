#!/usr/bin/env bash
# Make sure the browser tests can run: headless Chromium (Debian's `chromium`, installed with apt-get when it is
# missing and we may) and Playwright for Python in the venv (it drives that Chromium; no browser download).
# Prints `export QG_CHROMIUM=...` for `eval "$(bash scripts/browser.sh)"`; everything else goes to stderr.
# Under CI a Chromium that cannot be had is a failure (the printed line then exits the caller), never a skip.
set -uo pipefail
cd "$(dirname "$0")/.."

say() { echo "browser.sh: $*" >&2; }

find_chromium() {
    local c
    for c in "${QG_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser /usr/lib/chromium/chromium; do
        if [ -n "$c" ] && [ -x "$c" ]; then
            echo "$c"
            return 0
        fi
    done
    command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

fail() {
    say "$*"
    if [ -n "${CI:-}" ]; then
        say "CI is set: the browser tests cannot run, and that is a failure"
        echo "exit 1"
        exit 1
    fi
    say "the browser tests will be skipped"
    exit 0
}

chromium="$(find_chromium || true)"
if [ -z "$chromium" ] && command -v apt-get >/dev/null; then
    say "Chromium is missing: apt-get install chromium"
    if as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium fonts-liberation >&2; then
        chromium="$(find_chromium || true)"
    fi
fi
[ -n "$chromium" ] || fail "no Chromium found (install Debian's chromium, or set QG_CHROMIUM)"

if [ -x .venv/bin/python ] && ! .venv/bin/python -c "import playwright.sync_api" 2>/dev/null; then
    say "Playwright for Python is missing: pip install playwright"
    .venv/bin/python -m pip install -q "playwright>=1.49" >&2 || fail "could not install playwright"
fi

echo "export QG_CHROMIUM=$(printf '%q' "$chromium")"
