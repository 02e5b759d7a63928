#!/usr/bin/env bash
# Instructions per request (issue 12) of bare pingora, llmtrace-proxy with tracing off and
# with tracing on, counted by callgrind (this VM has no hardware counters for
# `perf stat -e instructions`).
#
#   bash benches/load/instructions.sh                 # 2 000 requests per target
#   bash benches/load/instructions.sh --requests 500  # quicker
#   bash benches/load/instructions.sh --no-build      # use the binaries in target/release
#   bash benches/load/instructions.sh --stream        # streamed requests (16 chunks each)
#   bash benches/load/instructions.sh --prompt-words 15000  # a ~100 KB prompt (default 10 words)
#   bash benches/load/instructions.sh --config benches/load/configs/lean.toml  # the gateway
#                                      # configured by a file (@UPSTREAM@: the mock's URL)
#   LLMTRACE_LOAD=... LLMTRACE_PROXY=... bash benches/load/instructions.sh --no-build  # others
#
# Each target runs under `valgrind --tool=callgrind --instr-atstart=no` (native speed until
# instrumented) in front of the instant mock (`llmtrace-load mock`, answers at once, 16
# tokens), one worker thread, as in the harness's max-rate phase. After a warm-up of 200
# requests, `callgrind_control -i on` starts counting; `llmtrace-load count` sends exactly N
# identical non-streamed OpenAI chat requests (10-word prompt) over 4 keep-alive connections;
# then the target stays instrumented for EXPORT_WAIT seconds more (the OTLP batch exporter
# sends every 5 s, so the tracing target's export of those N requests' spans is counted; the
# other two idle alike), `callgrind_control -i off` stops counting and the target is stopped.
# Instructions per request = callgrind's `totals` (Ir) / N. Writes
# benches/load/results/instructions.md and keeps the callgrind files in
# benches/load/.scratch/instructions.
set -euo pipefail
cd "$(dirname "$0")/../.."

requests=2000
build=1
stream=""
prompt_words=10
config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --requests) requests=$2; shift 2 ;;
    --no-build) build=""; shift ;;
    --stream) stream=1; shift ;;
    --prompt-words) prompt_words=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
export_wait=${EXPORT_WAIT:-7}
warmup=200

for tool in valgrind callgrind_control; do
  command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install valgrind" >&2; exit 1; }
done
if [ -n "$build" ]; then
  cargo build --release -p llmtrace-proxy -p llmtrace-load
fi
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
load="${LLMTRACE_LOAD:-$target_dir/release/llmtrace-load}"
proxy="${LLMTRACE_PROXY:-$target_dir/release/llmtrace-proxy}"
suffix=${stream:+-stream}
[ "$prompt_words" = 10 ] || suffix="$suffix-prompt-$prompt_words"
[ -z "$config" ] || suffix="$suffix-config-$(basename "$config" .toml)"
scratch=benches/load/.scratch/instructions$suffix
out=benches/load/results/instructions$suffix.md
count_args=(--connections 4 --prompt-words "$prompt_words" ${stream:+--stream})
rm -rf "$scratch"
mkdir -p "$scratch" "$(dirname "$out")"

# shellcheck source=benches/load/processes.sh
source benches/load/processes.sh


mock_port=$(free_port)
"$load" mock --port "$mock_port" --ttft-ms 0 --gap-ms 0 --tokens 16 --threads 1 \
  2>"$scratch/mock.log" &
pids+=($!)
sink_port=$(free_port)
"$load" sink --port "$sink_port" --counts-file "$scratch/sink-counts.json" 2>"$scratch/sink.log" &
pids+=($!)
wait_port "$mock_port"
wait_port "$sink_port"

# measure NAME VAR=VALUE... -- COMMAND...: runs COMMAND (@PORT@ replaced by a free port)
# under callgrind with the variables set (and the OTLP ones of this shell unset), appends
# "NAME IR" to $scratch/results.txt and leaves the callgrind file in $scratch.
measure() {
  local name=$1; shift
  parse_target "$@"
  local port=$target_port
  # env before valgrind: valgrind does not follow an exec (env's) into the program.
  "${clean_env[@]}" ${target_vars[@]+"${target_vars[@]}"} \
    valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$scratch/callgrind.out.$name" "${target_cmd[@]}" \
    >"$scratch/$name.stdout" 2>"$scratch/$name.log" &
  local pid=$!
  pids+=("$pid")
  wait_port "$port"
  "$load" count --url "http://127.0.0.1:$port" --requests "$warmup" "${count_args[@]}" >/dev/null
  callgrind_control -i on "$pid" >/dev/null
  "$load" count --url "http://127.0.0.1:$port" --requests "$requests" "${count_args[@]}" \
    >"$scratch/$name.count.json"
  sleep "$export_wait"
  callgrind_control -i off "$pid" >/dev/null
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  local ir
  ir=$(awk '/^totals:/ {print $2; exit}' "$scratch/callgrind.out.$name")
  [ -n "$ir" ] || { echo "no totals in $scratch/callgrind.out.$name" >&2; return 1; }
  echo "$name $ir" >>"$scratch/results.txt"
}

upstream="127.0.0.1:$mock_port"
proxy_args=(--listen 127.0.0.1:@PORT@ --threads 1 --admin off)
if [ -n "$config" ]; then
  sed "s|@UPSTREAM@|http://$upstream|g" "$config" >"$scratch/proxy.toml"
  proxy_args+=(--config "$scratch/proxy.toml")
else
  proxy_args+=(--upstream "http://$upstream" --provider openai)
fi
echo "==> bare pingora" >&2
measure pingora -- "$load" bare-pingora --listen 127.0.0.1:@PORT@ --upstream "$upstream" \
  --threads 1
echo "==> llmtrace-proxy, tracing off (OTEL_SDK_DISABLED=true)" >&2
measure proxy-no-tracing OTEL_SDK_DISABLED=true -- "$proxy" "${proxy_args[@]}"
echo "==> llmtrace-proxy, tracing on (OTLP/gRPC to the sink)" >&2
measure proxy-tracing OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" \
  OTEL_EXPORTER_OTLP_PROTOCOL=grpc -- "$proxy" "${proxy_args[@]}"
mapfile -t results <"$scratch/results.txt"
spans=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("spans", 0))' \
  "$scratch/sink-counts.json" 2>/dev/null || echo "?")

python3 - "$out" "$requests" "$export_wait" "$spans" "$(valgrind --version)" "${stream:-}" "$scratch" "$prompt_words" "$config" \
  "$(git rev-parse --short HEAD)$(git diff --quiet -- proxy middleware || echo ' + uncommitted changes in proxy/ or middleware/'); proxy binary $proxy built $(date -u -r "$proxy" '+%Y-%m-%d %H:%M UTC')" \
  "${results[@]}" <<'PY'
import datetime, sys
out, n, wait, spans, valgrind, stream, scratch, words, config, commit, *rows = sys.argv[1:]
kind = "streamed" if stream else "non-streamed"
flag = " --stream" if stream else ""
if words != "10":
    flag += f" --prompt-words {words}"
if config:
    flag += f" --config {config}"
n = int(n)
ir = {name: int(value.replace(",", "")) for name, value in (r.split() for r in rows)}
base = ir.get("pingora")
lines = [
    "# Instructions per request (callgrind)",
    "",
    f"Generated by `bash benches/load/instructions.sh --requests {n}{flag}` on "
    f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}, {valgrind}.",
    "",
    "| target | instructions (Ir) for the requests | Ir per request | × bare pingora |",
    "|---|---|---|---|",
]
for name, value in ir.items():
    per = value / n
    ratio = f"{value / base:.2f}×" if base else "–"
    lines.append(f"| {name} | {value:,} | {per:,.0f} | {ratio} |")
lines += [
    "",
    f"Each target under `valgrind --tool=callgrind --instr-atstart=no`, one worker thread, in "
    f"front of the instant mock (`llmtrace-load mock --ttft-ms 0 --gap-ms 0 --tokens 16`); "
    f"200 warm-up requests uninstrumented, then `callgrind_control -i on`, exactly {n} "
    f"{kind} OpenAI chat requests ({words}-word prompt; streamed: 16 content chunks, then a "
    f"finish chunk and `[DONE]`, read whole) from `llmtrace-load count` over 4 "
    f"keep-alive connections, {wait} s more instrumented (the OTLP batch exporter's interval "
    f"is 5 s: the tracing target's export of these requests' spans counts; the others idle "
    f"alike), `callgrind_control -i off`. Ir counts user-space instructions of every thread "
    f"of the target's process (kernel work, e.g. in syscalls, is not counted). The sink "
    f"received {spans} spans in all (warm-up included). Callgrind files: "
    f"`{scratch}/`.",
]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
