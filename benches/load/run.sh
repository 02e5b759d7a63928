#!/usr/bin/env bash
# The load harness of issues 6 and 12: llmtrace-proxy (tracing on and off), bare pingora, nginx
# and LiteLLM in front of the same mock upstream, measured one after the other on loopback.
#
#   bash benches/load/run.sh            # full run (~18 min): benches/load/results + BENCHMARKS.md
#   bash benches/load/run.sh --quick    # smoke test (~4 min): benches/load/results/quick
#   bash benches/load/run.sh --quick --debug-build   # the same on debug builds (CI: checks
#                                       # that the harness works; not performance figures)
#
# Installs what is missing (cmake, nginx and wrk with apt-get, LiteLLM in benches/load/.venv),
# builds the proxy and the harness in release mode, runs, and exits non-zero when the
# harness did not produce numbers. Extra arguments go to `llmtrace-load run` (see --help),
# e.g. --targets direct,proxy-tracing,nginx or --nice -10 on a machine shared with other jobs.
# LLMTRACE_LOAD_SKIP_LITELLM=1 leaves LiteLLM out (no install, no measurement).
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

quick=""
profile=release
args=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --debug-build) profile=debug ;;
    *) args+=("$arg") ;;
  esac
done

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)  # the max-rate phase's load generator
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

venv=benches/load/.venv
targets="direct,pingora,proxy-tracing,proxy-no-tracing,nginx,litellm"
if [ "${LLMTRACE_LOAD_SKIP_LITELLM:-0}" = 1 ]; then
  targets="direct,pingora,proxy-tracing,proxy-no-tracing,nginx"
elif [ ! -x "$venv/bin/litellm" ]; then
  step "installing LiteLLM (litellm[proxy]) in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'litellm[proxy]'
fi
[ "${LLMTRACE_SETUP_ONLY:-0}" = 1 ] && exit 0  # installs only (scripts/test-all.sh)

if [ "$profile" = release ]; then
  step "building llmtrace-proxy and llmtrace-load (release)"
  cargo build --release -p llmtrace-proxy -p llmtrace-load
else
  # A smoke test of the harness itself, reusing the debug builds the tests made: the numbers
  # it prints are a debug build's, not performance figures.
  step "building llmtrace-proxy and llmtrace-load (debug: a smoke test, not performance figures)"
  cargo build -p llmtrace-proxy -p llmtrace-load
fi
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

if [ -n "$quick" ]; then
  out=benches/load/results/quick
  set -- run --quick --out "$out"
  command_line="bash benches/load/run.sh --quick"
  [ "$profile" = debug ] && command_line+=" --debug-build"
else
  out=benches/load/results
  set -- run --out "$out" --benchmarks-md BENCHMARKS.md
  command_line="bash benches/load/run.sh"
fi
[ ${#args[@]} -gt 0 ] && command_line+=" ${args[*]}"

step "running the harness ($out)"
rm -f "$out/results.json"
"$target_dir/$profile/llmtrace-load" "$@" \
  --proxy "$target_dir/$profile/llmtrace-proxy" \
  --targets "$targets" \
  --command-line "$command_line" \
  ${args[@]+"${args[@]}"}

# The harness exits non-zero without numbers; check the file too, so a silent failure fails.
python3 - "$out/results.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))
rows = results["targets"]
bad = [r["target"] for r in rows if not r["stream"]["total"]["p99_ms"]]
if not rows or bad:
    sys.exit(f"load harness produced no numbers for: {bad or 'any target'}")
print(f"load harness: numbers for {len(rows)} targets in {sys.argv[1]}")
for r in rows:
    m = r.get("max_rate")
    if m and m.get("error"):
        print(f"load harness: no max-rate numbers for {r['target']}: {m['error']}")
PY
