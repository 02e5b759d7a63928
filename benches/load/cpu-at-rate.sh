#!/usr/bin/env bash
# CPU per request of bare pingora, llmtrace-proxy with tracing off and with tracing on, at
# fixed open-loop rates below every target's limit (issue 12): the same offered load for
# each, where the max-rate phase compares a saturated target with one its generator could not
# saturate.
#
#   bash benches/load/cpu-at-rate.sh                        # 300, 1000 and 4000 req/s, 3 rounds
#   bash benches/load/cpu-at-rate.sh --rates 500,2000 --rounds 5 --seconds 8
#   bash benches/load/cpu-at-rate.sh --stream               # streamed requests (16 chunks)
#   bash benches/load/cpu-at-rate.sh --no-build             # use the binaries in target/release
#
# Each target runs alone on CPU 1 (one worker thread) in front of the instant mock
# (`llmtrace-load mock`, answers at once, 16 tokens); the generator (`llmtrace-load load`,
# open-loop, 10-word prompts), the mock and the OTLP sink run on CPU 0. Per rate and round,
# every target is started, warmed up for 1 s at the rate, then driven for SECONDS while its
# CPU time is read around the run (its CPU-time clock, `clock_getcpuclockid`: the scheduler's
# exact runtime of all its threads, the access log writer and the export thread included).
# Rounds alternate the targets, so a neighbour's burst on this shared machine lands on one
# round, not one target; the table gives the median round per target and its ratio to bare
# pingora's median. Writes
# benches/load/results/cpu-at-rate.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

command_line="bash benches/load/cpu-at-rate.sh${*:+ $*}"
rates=300,1000,4000
rounds=3
seconds=6
build=1
stream=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rates) rates=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --stream) stream=1; shift ;;
    --no-build) build=""; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ "$(nproc)" -ge 2 ] || { echo "needs two CPUs (the target alone on one)" >&2; exit 1; }
if [ -n "$build" ]; then
  cargo build --release -p llmtrace-proxy -p llmtrace-load
fi
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
load="${LLMTRACE_LOAD:-$target_dir/release/llmtrace-load}"
proxy="${LLMTRACE_PROXY:-$target_dir/release/llmtrace-proxy}"
scratch=benches/load/.scratch/cpu-at-rate${stream:+-stream}
out=benches/load/results/cpu-at-rate${stream:+-stream}.md
rm -rf "$scratch"
mkdir -p "$scratch" "$(dirname "$out")"
load_args=(--prompt-words 10)
[ -n "$stream" ] || load_args+=(--no-stream)

# shellcheck source=benches/load/processes.sh
source benches/load/processes.sh

mock_port=$(free_port)
taskset -c 0 "$load" mock --port "$mock_port" --ttft-ms 0 --gap-ms 0 --tokens 16 --threads 1 \
  2>"$scratch/mock.log" &
pids+=($!)
sink_port=$(free_port)
taskset -c 0 "$load" sink --port "$sink_port" --counts-file "$scratch/sink-counts.json" \
  2>"$scratch/sink.log" &
pids+=($!)
wait_port "$mock_port"
wait_port "$sink_port"

# run NAME RATE ROUND VAR=VALUE... -- COMMAND...: starts COMMAND (@PORT@ replaced by a free
# port) on CPU 1, warms it up, drives it at RATE for $seconds with its CPU read around the
# run, appends "NAME RATE ROUND CPU_S_PER_1000 OK SENT" to $scratch/results.txt.
run() {
  local name=$1 rate=$2 round=$3; shift 3
  parse_target "$@"
  local port=$target_port
  "${clean_env[@]}" ${target_vars[@]+"${target_vars[@]}"} \
    taskset -c 1 "${target_cmd[@]}" >"$scratch/$name.stdout" 2>"$scratch/$name.log" &
  local pid=$!
  pids+=("$pid")
  wait_port "$port"
  taskset -c 0 "$load" load --url "http://127.0.0.1:$port" --rate "$rate" --duration 1 \
    "${load_args[@]}" >/dev/null
  taskset -c 0 "$load" load --url "http://127.0.0.1:$port" --rate "$rate" \
    --duration "$seconds" "${load_args[@]}" --pid "$pid" >"$scratch/$name-$rate-$round.json"
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  python3 - "$scratch/$name-$rate-$round.json" "$name" "$rate" "$round" \
    >>"$scratch/results.txt" <<'PY'
import json, re, sys
path, name, rate, round_ = sys.argv[1:]
text = open(path).read()
cpu = re.search(r"cpu: ([0-9.]+) s per 1000 requests", text).group(1)
report = json.loads(text[: text.rindex("}") + 1])
print(name, rate, round_, cpu, report["ok"], report["sent"])
PY
}

upstream="127.0.0.1:$mock_port"
proxy_args=(--listen 127.0.0.1:@PORT@ --upstream "http://$upstream" --provider openai
  --threads 1 --admin off)
IFS=, read -ra rate_list <<<"$rates"
for rate in "${rate_list[@]}"; do
  for round in $(seq 1 "$rounds"); do
    echo "==> $rate req/s, round $round" >&2
    run pingora "$rate" "$round" -- "$load" bare-pingora --listen 127.0.0.1:@PORT@ \
      --upstream "$upstream" --threads 1
    run proxy-no-tracing "$rate" "$round" OTEL_SDK_DISABLED=true -- "$proxy" "${proxy_args[@]}"
    run proxy-tracing "$rate" "$round" \
      OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
      -- "$proxy" "${proxy_args[@]}"
  done
done

python3 - "$out" "$scratch/results.txt" "$seconds" "$rounds" "${stream:-}" \
  "$(git rev-parse --short HEAD)$(git diff --quiet -- proxy middleware || echo ' + uncommitted changes in proxy/ or middleware/')" \
  "$command_line" <<'PY'
import collections, datetime, statistics, sys
out, path, seconds, rounds, stream, commit, command_line = sys.argv[1:]
runs = collections.defaultdict(list)
failed = []
for line in open(path):
    name, rate, round_, cpu, ok, sent = line.split()
    if ok != sent:
        failed.append(f"{name} at {rate} req/s, round {round_}: {ok} of {sent} answered")
    runs[(int(rate), name)].append(float(cpu) * 1000.0)  # µs per request
names = ["pingora", "proxy-no-tracing", "proxy-tracing"]
kind = "streamed (16 content chunks)" if stream else "non-streamed"
lines = [
    f"# CPU per request at fixed rates ({kind})",
    "",
    f"Generated by `{command_line}` on "
    f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}. "
    f"Each target alone on CPU 1, one worker thread; the open-loop generator, the instant "
    f"mock and the OTLP sink on CPU 0; {rounds} rounds of {seconds} s per rate, the targets "
    f"alternating; CPU (the process's CPU-time clock, all threads) per answered request, µs: the median "
    f"round, then every round.",
    "",
    "| rate (req/s) | bare pingora | tracing off | tracing on | off × pingora | on × pingora |",
    "|---|---|---|---|---|---|",
]
for rate in sorted({r for r, _ in runs}):
    med = {n: statistics.median(runs[(rate, n)]) for n in names if runs[(rate, n)]}
    cell = lambda n: (f"**{med[n]:.1f}** ({', '.join(f'{v:.0f}' for v in runs[(rate, n)])})"
                      if n in med else "–")
    ratio = lambda n: (f"{med[n] / med['pingora']:.2f}×"
                       if n in med and med.get("pingora") else "–")
    lines.append(f"| {rate} | {cell('pingora')} | {cell('proxy-no-tracing')} | "
                 f"{cell('proxy-tracing')} | {ratio('proxy-no-tracing')} | {ratio('proxy-tracing')} |")
if failed:
    lines += ["", "Runs with failed requests: " + "; ".join(failed) + "."]
lines += ["", "CPU is read from each process's CPU-time clock (`clock_getcpuclockid`: the "
          "scheduler's exact runtime), not from the tick-sampled `utime + stime` of /proc, which "
          "charges a whole 10 ms tick to whoever runs when it fires and misleads for a process "
          "busy a small part of the time."]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
