#!/usr/bin/env bash
# The official OpenAI and Anthropic Python SDKs against llmtrace-mock.
#
#   bash tests/sdk/run.sh [pytest args...]
#
# Creates tests/sdk/.venv (python3 -m venv) and installs requirements.txt into it, builds the
# `mock_upstream` example, starts it on a free port (port 0: the OS picks; the mock prints it),
# runs pytest with LLMTRACE_MOCK_URL pointing at it, and stops the mock. Exits with pytest's code.
# Honours CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

(cd "$root" && cargo build --quiet --example mock_upstream)
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
binary="$target/debug/examples/mock_upstream"

log="$(mktemp)"
"$binary" 127.0.0.1:0 >"$log" 2>&1 &
mock_pid=$!
cleanup() {
    kill "$mock_pid" 2>/dev/null || true
    wait "$mock_pid" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT

url=""
for _ in $(seq 1 100); do
    url="$(sed -n 's/^listening on //p' "$log" | head -n 1)"
    [ -n "$url" ] && break
    if ! kill -0 "$mock_pid" 2>/dev/null; then
        echo "mock_upstream exited:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "mock_upstream did not start within 10 s:" >&2
    cat "$log" >&2
    exit 1
fi
echo "mock upstream at $url"

cd "$here"
status=0
LLMTRACE_MOCK_URL="$url" "$venv/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
exit "$status"
