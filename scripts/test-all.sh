#!/usr/bin/env bash
# Every check and test of the project, on a fresh machine: formatting, lints, unit and
# integration tests (real sockets, in-memory span export), doctests, docs, and the benches
# run once in test mode. Installs what it needs; needs only the Rust toolchain to start.
set -euo pipefail
cd "$(dirname "$0")/.."

# A full run builds every target once: incremental caches would only double the disk it takes
# (a clean run once filled a CI disk). Set CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

# pingora's build needs cmake (Debian package); install it when missing.
if ! command -v cmake >/dev/null; then
  step "installing cmake (needed to build pingora)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq cmake; else sudo apt-get update -qq && sudo apt-get install -y -qq cmake; fi
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "no function over 80 lines in the crates' sources (scripts/fn-lengths.py)"
python3 scripts/fn-lengths.py middleware/src proxy/src

step "cargo test (unit, integration, examples, benches in test mode)"
cargo test --workspace --all-features --all-targets

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
LLMTRACE_FUZZ_SECONDS="${LLMTRACE_FUZZ_SECONDS:-20}"
if [ "$LLMTRACE_FUZZ_SECONDS" != "0" ]; then
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
  for target in header_parsers sse_decoder genai_observer usage_splice; do
    step "fuzz $target for ${LLMTRACE_FUZZ_SECONDS}s"
    (cd middleware/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
        -max_total_time="${LLMTRACE_FUZZ_SECONDS}")
  done
fi

step "load harness smoke test: proxy, nginx and LiteLLM in front of the mock (benches/load/run.sh --quick)"
bash benches/load/run.sh --quick

step "all checks passed"
