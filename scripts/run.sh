#!/usr/bin/env bash
# Runs llmtrace-proxy on a machine that has only the Rust toolchain: installs cmake (pingora's
# build needs it) when it is missing, then `cargo run -p llmtrace-proxy --features demo -- ARGS`.
#
#   bash scripts/run.sh                 # the demo: mock provider + proxy, traces printed, then
#                                       # the trace viewer (http://127.0.0.1:9464/ui) until Ctrl-C
#   bash scripts/run.sh demo --exit     # the demo, stopping after the traces (scripts, CI)
#   bash scripts/run.sh --listen 127.0.0.1:8080 --upstream https://api.openai.com
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cmake >/dev/null; then
  echo "==> installing cmake (needed to build pingora)" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq cmake >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo apt-get install -y -qq cmake >/dev/null
  else
    echo "cmake is missing and cannot be installed without root: install cmake, then run again" >&2
    exit 1
  fi
fi

if [ "$#" -eq 0 ]; then
  set -- demo
fi
exec cargo run --quiet -p llmtrace-proxy --features demo -- "$@"
