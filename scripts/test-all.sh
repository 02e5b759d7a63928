#!/usr/bin/env bash
# Every check and test of the project, on a fresh machine: formatting, lints, unit and
# integration tests (real sockets, in-memory span export), doctests, docs, and the benches
# run once in test mode. Installs what it needs; needs only the Rust toolchain to start.
set -euo pipefail
cd "$(dirname "$0")/.."

# A full run builds every target once: incremental caches would only double the disk it takes
# (a clean run once filled a CI disk). Set CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Each step's wall time, printed at the end (and when a step fails).
started=$SECONDS
current="" current_started=$SECONDS
timings=()
declare -A background=()
finish_step() {
  [ -n "$current" ] && timings+=("$(printf '%6d s  %s' $((SECONDS - current_started)) "$current")")
  current=""
}
report_times() {
  local status=$? pid
  finish_step
  # A failed step leaves background parts running: stop them (and their children).
  for pid in "${background[@]}"; do
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
  done
  printf '\n==> wall time per step (%d s in all)\n' $((SECONDS - started))
  printf '%s\n' "${timings[@]}"
  return "$status"
}
trap report_times EXIT
step() {
  finish_step
  current="$*" current_started=$SECONDS
  printf '\n==> %s\n' "$*"
}

# pingora's build needs cmake (Debian package); install it when missing.
if ! command -v cmake >/dev/null; then
  step "installing cmake (needed to build pingora)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq cmake; else sudo apt-get update -qq && sudo apt-get install -y -qq cmake; fi
fi

# What the later steps need and the first ones do not runs in the background, at a low CPU
# priority (the builds at the lowest), while the foreground compiles and runs the Rust tests:
# the installs (Debian packages, the suites' Python environments) wait on the network, and the
# fuzz build takes the CPU the foreground leaves idle. Each later step waits for its part; a part that failed is redone by the step
# itself (its script installs or builds what is missing), after its log is shown. Logs:
# target/ci/*.log.
LLMTRACE_FUZZ_SECONDS="${LLMTRACE_FUZZ_SECONDS:-20}"
mkdir -p target/ci
in_background() { # name niceness command...
  local name=$1 niceness=$2
  shift 2
  (nice -n "$niceness" "$@") >"target/ci/$name.log" 2>&1 &
  background[$name]=$!
}
wait_for() { # name: wait for a background part; show its log when it failed
  local name=$1 pid=${background[$1]:-}
  [ -n "$pid" ] || return 0
  unset "background[$name]"
  if ! wait "$pid"; then
    echo "background part '$name' failed (the step redoes it); its log, target/ci/$name.log:" >&2
    tail -n 40 "target/ci/$name.log" >&2 || true
  fi
}
in_background installs 10 bash -c '
  export LLMTRACE_SETUP_ONLY=1
  bash tests/sdk/run.sh && bash tests/e2e/run.sh && bash tests/browser/run.sh && bash benches/load/run.sh'
if [ "$LLMTRACE_FUZZ_SECONDS" != "0" ]; then
  in_background fuzz-build 19 bash -c '
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
    cd middleware/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build'
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "no function over 80 lines in the crates' sources (scripts/fn-lengths.py)"
python3 scripts/fn-lengths.py middleware/src proxy/src

step "cargo test (unit, integration, examples, benches in test mode)"
cargo test --workspace --all-features --all-targets

wait_for installs
step "official openai and anthropic Python SDKs against the mock and through the proxy; collector down/hanging (installs them in tests/sdk/.venv)"
bash tests/sdk/run.sh

step "spans through the proxy into a real OTLP backend (Arize Phoenix from PyPI), gRPC and HTTP"
bash tests/e2e/run.sh

step "the trace viewer in headless Chromium (Debian package) driven by Playwright (installs them; tests/browser/.venv)"
bash tests/browser/run.sh

step "doctests"
cargo test --workspace --all-features --doc

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

# The fuzz targets must keep building; a short run of each catches regressions in the
# parsers. LLMTRACE_FUZZ_SECONDS=0 skips it, a larger value fuzzes longer (per target).
if [ "$LLMTRACE_FUZZ_SECONDS" != "0" ]; then
  wait_for fuzz-build
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
  for target in header_parsers sse_decoder genai_observer usage_splice; do
    step "fuzz $target for ${LLMTRACE_FUZZ_SECONDS}s"
    (cd middleware/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
        -max_total_time="${LLMTRACE_FUZZ_SECONDS}")
  done
fi

# On the debug builds the tests made: a release build only for this smoke test cost a clean CI
# run ~7 minutes. It checks that the harness works end to end (every target produces numbers);
# performance figures come from full runs (`bash benches/load/run.sh`, release).
step "load harness smoke test on debug builds: proxy, bare pingora, nginx and LiteLLM in front of the mock (benches/load/run.sh --quick --debug-build)"
bash benches/load/run.sh --quick --debug-build

step "all checks passed"
finish_step
