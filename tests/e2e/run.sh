#!/usr/bin/env bash
# Spans exported by llmtrace-proxy land in a real OTLP backend: Arize Phoenix, over OTLP/gRPC and
# over OTLP/HTTP (protobuf).
#
#   bash tests/e2e/run.sh [pytest args...]
#
# Creates tests/e2e/.venv (python3 -m venv) and installs requirements.txt into it (Phoenix from
# PyPI, and chromadb), builds llmtrace-proxy and the mock_upstream, batch_worker and rag examples (honours
# CARGO_TARGET_DIR), starts
# Phoenix on free loopback ports with a temporary working directory, the mock provider, and two
# proxies in front of the mock: one exporting over gRPC, one over HTTP/protobuf, each to its own
# Phoenix project (OTEL_RESOURCE_ATTRIBUTES=openinference.project.name=...). Then runs pytest,
# which sends traffic through both proxies and reads the spans back from Phoenix's REST API
# (test_phoenix.py), and runs the batch_worker example over OTLP/HTTP through a capturing relay
# into Phoenix (test_batch_links.py: its span with 100 links), and runs the rag example against a
# real Chroma server (`chroma run` from the venv, started by test_rag.py) through the gRPC proxy
# (test_rag.py: one trace, SERVER → embeddings → vector query → chat), and the official chromadb
# client through a gateway whose upstream is that Chroma (test_rag.py: database spans).
# Everything it started is stopped on exit. Exits with pytest's code.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
started=$(date +%s)

# --- Python side: Phoenix, pytest, httpx -------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
installed=$(date +%s)
echo "e2e: python requirements ready in $((installed - started)) s" \
    "($("$venv/bin/python" -c 'import importlib.metadata as m; print(*(f"{p} {m.version(p)}" for p in ("arize-phoenix", "chromadb")), sep=", ")'))"
[ "${LLMTRACE_SETUP_ONLY:-0}" = 1 ] && exit 0  # installs only (scripts/test-all.sh)

# --- Rust side: the proxy, the mock provider, the batch worker ---------------------------
# The examples are the root package's (llmtrace-examples), the binary is llmtrace-proxy's.
(cd "$root" && cargo build --quiet -p llmtrace-proxy -p llmtrace-examples \
    --bin llmtrace-proxy --example mock_upstream --example batch_worker --example rag)
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
proxy_bin="$target/debug/llmtrace-proxy"
mock_bin="$target/debug/examples/mock_upstream"
batch_worker_bin="$target/debug/examples/batch_worker"
rag_bin="$target/debug/examples/rag"
built=$(date +%s)
echo "e2e: cargo build done in $((built - installed)) s"

# --- processes ---------------------------------------------------------------------------
tmp="$(mktemp -d)"
pids=()       # stopped with SIGTERM
proxy_pids=() # stopped with SIGINT: pingora's SIGTERM is a graceful shutdown that lingers
              # for its grace period (minutes), SIGINT is its fast shutdown
stop() { # signal pid...: signal each, give them 15 s, then SIGKILL what is left
    local signal=$1 pid
    shift
    [ "$#" -gt 0 ] || return 0
    for pid in "$@"; do kill "-$signal" "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 150); do
        local alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "$@"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "e2e: pid $pid still running 15 s after SIG$signal, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    local status=$?
    stop INT "${proxy_pids[@]}"
    stop TERM "${pids[@]}"
    if [ "$status" -ne 0 ] && [ -z "${LLMTRACE_E2E_QUIET:-}" ]; then
        for log in "$tmp"/*.log; do
            [ -f "$log" ] || continue
            echo "----- last lines of $(basename "$log") -----" >&2
            grep -Ev 'sqlalchemy.engine|^ +[0-9]+: |^ +at ' "$log" | tail -n 25 >&2 || true
        done
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports, chosen by the OS (a tiny race with other programs remains).
read -r phoenix_port grpc_port proxy_grpc_port proxy_http_port < <("$venv/bin/python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
EOF
)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Phoenix: HTTP (UI, REST API, OTLP/HTTP at /v1/traces) and OTLP/gRPC, data in a temp dir.
mkdir -p "$tmp/phoenix"
PHOENIX_WORKING_DIR="$tmp/phoenix" \
PHOENIX_HOST=127.0.0.1 \
PHOENIX_PORT="$phoenix_port" \
PHOENIX_GRPC_PORT="$grpc_port" \
PHOENIX_TELEMETRY_ENABLED=false \
PHOENIX_ALLOW_EXTERNAL_RESOURCES=false \
PHOENIX_AGENTS_DISABLE_WEB_ACCESS=true \
PHOENIX_AGENTS_DISABLE_BASH=true \
PHOENIX_AGENTS_DISABLE_GITHUB=true \
    "$venv/bin/phoenix" serve >"$tmp/phoenix.log" 2>&1 &
phoenix_pid=$!
pids+=("$phoenix_pid")
phoenix_url="http://127.0.0.1:$phoenix_port"
for i in $(seq 1 240); do
    if "$venv/bin/python" -c "import urllib.request as u; u.urlopen('$phoenix_url/healthz', timeout=1)" 2>/dev/null \
        && port_open "$grpc_port"; then
        break
    fi
    if ! kill -0 "$phoenix_pid" 2>/dev/null; then
        echo "e2e: phoenix serve exited before answering" >&2
        exit 1
    fi
    if [ "$i" -eq 240 ]; then
        echo "e2e: Phoenix did not answer on $phoenix_url/healthz within 120 s" >&2
        exit 1
    fi
    sleep 0.5
done
ready=$(date +%s)
echo "e2e: Phoenix up in $((ready - built)) s: $phoenix_url (OTLP/HTTP $phoenix_url/v1/traces, OTLP/gRPC 127.0.0.1:$grpc_port)"

# The mock provider, on a port of its own choosing; its first line names it. It keeps the last
# 64 requests for GET /__mock/requests (pytest sends 10, small): test_phoenix.py checks that each
# reached it as the client sent it.
"$mock_bin" 127.0.0.1:0 --keep-requests 64 >"$tmp/mock.log" 2>&1 &
pids+=("$!")
mock_url=""
for _ in $(seq 1 100); do
    mock_url="$(sed -n 's/^listening on //p' "$tmp/mock.log" | head -n 1)"
    [ -n "$mock_url" ] && break
    sleep 0.1
done
if [ -z "$mock_url" ]; then
    echo "e2e: mock_upstream did not start" >&2
    exit 1
fi

# Two proxies, one per OTLP protocol, each to its own Phoenix project.
run_id="$$"
start_proxy() { # protocol endpoint port project
    OTEL_EXPORTER_OTLP_ENDPOINT="$2" \
    OTEL_EXPORTER_OTLP_PROTOCOL="$1" \
    OTEL_SERVICE_NAME="llmtrace-proxy-e2e-${1%%/*}" \
    OTEL_RESOURCE_ATTRIBUTES="openinference.project.name=$4" \
        "$proxy_bin" --listen "127.0.0.1:$3" --upstream "$mock_url" \
        >"$tmp/proxy-${1%%/*}.log" 2>&1 &
    last_pid=$!
    proxy_pids+=("$last_pid")
}
grpc_project="llmtrace-e2e-grpc-$run_id"
http_project="llmtrace-e2e-http-$run_id"
start_proxy grpc "http://127.0.0.1:$grpc_port" "$proxy_grpc_port" "$grpc_project"
grpc_proxy_pid=$last_pid
# The HTTP exporter appends /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT itself: the base URL.
start_proxy http/protobuf "$phoenix_url" "$proxy_http_port" "$http_project"
http_proxy_pid=$last_pid

# Wait for both to listen. A proxy that dies is not fatal here: pytest reports that protocol's
# tests with the proxy's own output, and still checks the other protocol.
for port_pid in "$proxy_grpc_port:$grpc_proxy_pid" "$proxy_http_port:$http_proxy_pid"; do
    port="${port_pid%%:*}" pid="${port_pid##*:}"
    for _ in $(seq 1 100); do
        port_open "$port" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
done

cd "$here"
status=0
LLMTRACE_E2E_PHOENIX_URL="$phoenix_url" \
LLMTRACE_E2E_PHOENIX_GRPC="http://127.0.0.1:$grpc_port" \
LLMTRACE_E2E_MOCK_URL="$mock_url" \
LLMTRACE_E2E_GRPC_PROXY="http://127.0.0.1:$proxy_grpc_port" \
LLMTRACE_E2E_GRPC_PROJECT="$grpc_project" \
LLMTRACE_E2E_GRPC_LOG="$tmp/proxy-grpc.log" \
LLMTRACE_E2E_HTTP_PROXY="http://127.0.0.1:$proxy_http_port" \
LLMTRACE_E2E_HTTP_PROJECT="$http_project" \
LLMTRACE_E2E_HTTP_LOG="$tmp/proxy-http.log" \
LLMTRACE_E2E_BATCH_WORKER="$batch_worker_bin" \
LLMTRACE_E2E_BATCH_PROJECT="llmtrace-e2e-batch-$run_id" \
LLMTRACE_E2E_RAG="$rag_bin" \
LLMTRACE_E2E_PROXY_BIN="$proxy_bin" \
    PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$venv/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?
echo "e2e: install $((installed - started)) s, build $((built - installed)) s," \
    "Phoenix start $((ready - built)) s, tests $(($(date +%s) - ready)) s"
exit "$status"
