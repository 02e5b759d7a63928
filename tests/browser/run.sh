#!/usr/bin/env bash
# The trace viewer in a real browser: headless Chromium (the Debian package) driven by
# Playwright (PyPI) loads the viewer of `llmtrace-proxy demo` after its traffic, finds the four
# exchanges, opens the streamed one and checks that the first-token marker sits at TTFT /
# duration of the GenAI span's bar (±2 %), follows the header's links to the dependency map
# (the gateway, an upstream, calls counted) and the overview (a chart with a model's line),
# and saves screenshots in tests/browser/screenshots/.
#
#   bash tests/browser/run.sh [pytest args...]
#
# Installs chromium (apt) when missing, creates tests/browser/.venv with requirements.txt
# (Playwright drives the system Chromium: no browser download), builds llmtrace-proxy with the
# `demo` feature (honours CARGO_TARGET_DIR). The demo is stopped with SIGINT (and killed if it
# lingers) whatever happens. Exits with pytest's code.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"

chromium="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$chromium" ]; then
    echo "browser: installing chromium (Debian package)" >&2
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null
    fi
    chromium="$(command -v chromium)"
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
[ "${LLMTRACE_SETUP_ONLY:-0}" = 1 ] && exit 0  # installs only (scripts/test-all.sh)

(cd "$root" && cargo build --quiet -p llmtrace-proxy --features demo --bin llmtrace-proxy)
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac

cd "$here"
LLMTRACE_BROWSER_CHROMIUM="$chromium" LLMTRACE_BROWSER_PROXY="$target/debug/llmtrace-proxy" \
    exec "$venv/bin/python" -m pytest -q "$@" test_viewer.py
