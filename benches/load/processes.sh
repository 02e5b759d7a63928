# Sourced by the scripts in benches/load that start targets by hand (instructions.sh,
# cpu-at-rate.sh): free ports, waiting for a listener, and stopping what was started.

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 30 s for something to listen on port $1.
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# Processes to stop when the script exits: append each started pid to `pids`.
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# The environment a target starts in: none of this shell's OTLP or llmtrace settings.
clean_env=(env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  -u OTEL_EXPORTER_OTLP_PROTOCOL -u OTEL_SDK_DISABLED -u LLMTRACE_CONFIG)

# parse_target VAR=VALUE... -- COMMAND...: sets target_port (a free port), target_vars (the
# variables, to set in the target's environment) and target_cmd (COMMAND with @PORT@ replaced
# by the port).
parse_target() {
  target_vars=()
  while [ "$1" != "--" ]; do target_vars+=("$1"); shift; done
  shift
  target_port=$(free_port)
  target_cmd=("$@")
  target_cmd=("${target_cmd[@]//@PORT@/$target_port}")
}
