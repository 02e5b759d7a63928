#!/usr/bin/env bash
# The official OpenAI and Anthropic Python SDKs against llmtrace-mock.
#
#   bash tests/sdk/run.sh [pytest args...]
#
# Creates tests/sdk/.venv (python3 -m venv) and installs requirements.txt into it, builds the
# `mock_upstream` example and `llmtrace-proxy`, starts the mock on a free port (port 0: the OS
# picks; the mock prints it) and the proxy in front of it on another (JSON-lines spans into a
# temp file), runs pytest with LLMTRACE_MOCK_URL, LLMTRACE_PROXY_URL, LLMTRACE_SPANS_FILE and
# LLMTRACE_PROXY_BIN (test_collector_down.py starts more proxies), and stops both. Exits with
# pytest's code. Honours CARGO_TARGET_DIR, and LLMTRACE_PROXY_BIN (a proxy binary to test instead
# of the one it builds).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
[ "${LLMTRACE_SETUP_ONLY:-0}" = 1 ] && exit 0  # installs only (scripts/test-all.sh)

(cd "$root" && cargo build --quiet --example mock_upstream && cargo build --quiet -p llmtrace-proxy --bin llmtrace-proxy)
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
binary="$target/debug/examples/mock_upstream"
# LLMTRACE_PROXY_BIN: another build of the proxy to test (an older commit's, say).
proxy_binary="${LLMTRACE_PROXY_BIN:-$target/debug/llmtrace-proxy}"

log="$(mktemp)"
proxy_log="$(mktemp)"
spans="$(mktemp)"
mock_pid=""
proxy_pid=""
cleanup() {
    if [ -n "$proxy_pid" ]; then
        # SIGINT: pingora's fast shutdown (SIGTERM waits for a graceful drain).
        kill -INT "$proxy_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
    fi
    if [ -n "$mock_pid" ]; then
        kill "$mock_pid" 2>/dev/null || true
        wait "$mock_pid" 2>/dev/null || true
    fi
    rm -f "$log" "$proxy_log" "$spans"
}
trap cleanup EXIT

# The mock keeps the last 32 requests whole for GET /__mock/requests (at most ~160 MB with the
# 5 MB bodies of test_fidelity.py); each test reads its own right after sending it.
"$binary" 127.0.0.1:0 --keep-requests 32 >"$log" 2>&1 &
mock_pid=$!

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

# The proxy: a free port (bound by Python and released), spans as JSON lines into $spans.
# OTEL_* variables of the caller's environment would send its spans elsewhere: cleared.
proxy_url=""
for _ in 1 2 3; do
    port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT \
        "$proxy_binary" --listen "127.0.0.1:$port" --upstream "$url" --spans-file "$spans" \
        >"$proxy_log" 2>&1 </dev/null &
    proxy_pid=$!
    for _ in $(seq 1 200); do
        if ! kill -0 "$proxy_pid" 2>/dev/null; then
            break
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            proxy_url="http://127.0.0.1:$port"
            break
        fi
        sleep 0.1
    done
    [ -n "$proxy_url" ] && break
    kill -KILL "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
    proxy_pid=""
done
if [ -z "$proxy_url" ]; then
    echo "llmtrace-proxy did not start:" >&2
    cat "$proxy_log" >&2
    exit 1
fi
echo "llmtrace-proxy at $proxy_url, spans in $spans"

cd "$here"
status=0
LLMTRACE_MOCK_URL="$url" LLMTRACE_PROXY_URL="$proxy_url" LLMTRACE_SPANS_FILE="$spans" \
    LLMTRACE_PROXY_BIN="$proxy_binary" \
    "$venv/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
if [ "$status" -ne 0 ] && [ -s "$proxy_log" ]; then
    echo "--- llmtrace-proxy output ---" >&2
    tail -n 50 "$proxy_log" >&2
fi
exit "$status"
