"""llmtrace-proxy with a collector that is down or hangs: traffic must not notice.

Five proxies in front of the same mock, in the same run:
- `baseline`: no collector (JSON-lines spans to a file, the default exporter);
- `grpc-down`, `http-down`: OTEL_EXPORTER_OTLP_ENDPOINT on a closed loopback port, with
  OTEL_EXPORTER_OTLP_PROTOCOL grpc and http/protobuf;
- `grpc-hang`, `http-hang`: pointing at a TCP server (here, in Python) that accepts
  connections, reads, and never answers.

30 requests go through each (OpenAI streams with usage, OpenAI non-streaming, Anthropic
streams), interleaved round by round in a shuffled order over ~12 s, so that the batch
processor's export attempts (every 5 s) fall inside the measurement and noise hits every proxy
alike. Every request must succeed with the full body (byte-equal to the mock's own answer for
the same seeded request), and each proxy's p95 latency must stay within MARGIN of the
baseline's.
"""

import math
import random
import socket
import statistics
import threading
import time

import httpx2
import pytest

from proxyutil import Proxy, free_port

ROUNDS = 30
MARGIN_S = 0.050

TIMING = {"x-mock-ttft-ms": "10", "x-mock-gap-ms": "2", "x-mock-tokens": "8"}
KINDS = [
    (
        "openai stream",
        "/v1/chat/completions",
        {},
        {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
         "messages": [{"role": "user", "content": "Say hello"}]},
    ),
    (
        "openai chat",
        "/v1/chat/completions",
        {},
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]},
    ),
    (
        "anthropic stream",
        "/v1/messages",
        {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-test-collector"},
        {"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
         "messages": [{"role": "user", "content": "Say hello"}]},
    ),
]


class HangingCollector:
    """Accepts TCP connections, reads whatever comes, never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = []
        self.bytes_received = 0
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn):
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.bytes_received += len(data)

    def close(self):
        self.closing = True
        self.sock.close()
        for conn in self.connections:
            try:
                conn.close()
            except OSError:
                pass


def p95(samples):
    ordered = sorted(samples)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def send(client, base_url, kind, seed):
    _, path, extra, body = KINDS[kind]
    headers = {"authorization": "Bearer sk-test-collector", "x-mock-seed": str(seed), **TIMING, **extra}
    started = time.perf_counter()
    with client.stream("POST", base_url + path, json=body, headers=headers) as response:
        raw = b"".join(response.iter_raw())
    return time.perf_counter() - started, response.status_code, raw


@pytest.fixture(scope="module")
def collectors():
    hangs = {"grpc": HangingCollector(), "http/protobuf": HangingCollector()}
    yield hangs
    for c in hangs.values():
        c.close()


@pytest.fixture(scope="module")
def proxies(mock_url, collectors):
    closed = free_port()  # bound and released: nothing listens there
    variants = {"baseline": {}}
    for name, protocol in (("grpc", "grpc"), ("http", "http/protobuf")):
        variants[f"{name}-down"] = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
        variants[f"{name}-hang"] = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collectors[protocol].port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
    started, failed = {}, {}
    try:
        for name, env in variants.items():
            try:
                started[name] = Proxy(mock_url, otlp_env=env).start()
            except RuntimeError as e:
                failed[name] = str(e)
        assert "baseline" in started, failed.get("baseline")
        yield started, failed
    finally:
        for p in started.values():
            p.stop()


def running(proxies, name):
    started, failed = proxies
    if name in failed:
        pytest.skip(f"{name} did not start (test_otlp_exporter_starts): {failed[name][:300]}")
    return started[name]


@pytest.fixture(scope="module")
def measured(mock_url, proxies):
    """Latencies and failures per proxy, from one interleaved run (of the proxies that started)."""
    proxies = proxies[0]
    seeds = {kind: 5000 + kind for kind in range(len(KINDS))}
    with httpx2.Client(timeout=30) as direct:
        expected = {}
        for kind in range(len(KINDS)):
            _, status, raw = send(direct, mock_url, kind, seeds[kind])
            assert status == 200
            expected[kind] = raw
    clients = {name: httpx2.Client(timeout=30) for name in proxies}
    latencies = {name: [] for name in proxies}
    failures = {name: [] for name in proxies}
    order = list(proxies)
    rng = random.Random(7)
    # Warm-up: one request each (connections, first-use costs), not measured.
    for name, proxy in proxies.items():
        send(clients[name], proxy.url, 0, seeds[0])
    run_started = time.monotonic()
    for round_ in range(ROUNDS):
        kind = round_ % len(KINDS)
        rng.shuffle(order)
        for name in order:
            try:
                took, status, raw = send(clients[name], proxies[name].url, kind, seeds[kind])
            except httpx2.HTTPError as e:
                failures[name].append(f"round {round_} {KINDS[kind][0]}: {e!r}")
                continue
            latencies[name].append(took)
            if status != 200 or raw != expected[kind]:
                failures[name].append(f"round {round_} {KINDS[kind][0]}: {status} {raw[-200:]!r}")
        time.sleep(0.25)
    duration = time.monotonic() - run_started
    for c in clients.values():
        c.close()
    return {"latencies": latencies, "failures": failures, "duration": duration}


def test_report(measured, proxies, collectors, capsys):
    lat = measured["latencies"]
    lines = [f"collector-down run: {ROUNDS} requests per proxy over {measured['duration']:.1f} s"]
    lines.append(f"{'proxy':<11} {'n':>3} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}")
    for name, samples in lat.items():
        if samples:
            lines.append(
                f"{name:<11} {len(samples):>3} {statistics.median(samples) * 1e3:7.1f} "
                f"{p95(samples) * 1e3:7.1f} {max(samples) * 1e3:7.1f}"
            )
    for name in proxies[1]:
        lines.append(f"{name:<11} did not start")
    for protocol, c in collectors.items():
        lines.append(f"hanging collector ({protocol}): {len(c.connections)} connections, {c.bytes_received} bytes")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


@pytest.mark.parametrize(
    "protocol",
    [
        "grpc",
        "http/protobuf",
    ],
)
def test_otlp_exporter_starts(proxies, protocol):
    prefix = "grpc" if protocol == "grpc" else "http"
    _, failed = proxies
    for name in (f"{prefix}-down", f"{prefix}-hang"):
        assert name not in failed, failed.get(name)


@pytest.mark.parametrize("name", ["baseline", "grpc-down", "http-down", "grpc-hang", "http-hang"])
def test_every_request_succeeds_with_the_full_body(measured, proxies, name):
    running(proxies, name)
    assert measured["failures"][name] == []
    assert len(measured["latencies"][name]) == ROUNDS


@pytest.mark.parametrize("name", ["grpc-down", "http-down", "grpc-hang", "http-hang"])
def test_p95_latency_within_margin_of_baseline(measured, proxies, name):
    running(proxies, name)
    lat = measured["latencies"]
    base, this = p95(lat["baseline"]), p95(lat[name])
    assert this <= base + MARGIN_S, f"{name} p95 {this * 1e3:.1f} ms vs baseline {base * 1e3:.1f} ms"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_hanging_collector_was_tried(measured, proxies, collectors, protocol):
    running(proxies, ("grpc" if protocol == "grpc" else "http") + "-hang")
    # The batch processor exports every 5 s: by the end of the run the proxy has tried.
    c = collectors[protocol]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (c.connections and c.bytes_received):
        time.sleep(0.2)
    assert c.connections, f"the {protocol} exporter never connected"
    assert c.bytes_received > 0, f"the {protocol} exporter sent nothing"


def test_proxies_are_alive_and_did_not_panic(measured, proxies):
    for name, proxy in proxies[0].items():
        assert proxy.alive(), f"{name} exited:\n{proxy.output()}"
        assert "panicked" not in proxy.output(), f"{name}:\n{proxy.output()}"


def test_quick_shutdown_with_a_hanging_collector_is_bounded(mock_url, collectors):
    # SIGINT (quick shutdown) flushes the batched spans before exit: against a collector that
    # never answers, the flush must give up rather than keep the process alive.
    proxy = Proxy(
        mock_url,
        otlp_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collectors['http/protobuf'].port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        },
    ).start()
    try:
        with httpx2.Client(timeout=30) as client:
            _, status, _ = send(client, proxy.url, 1, 77)
        assert status == 200
    finally:
        took = proxy.stop(timeout=30)
    assert proxy.proc.returncode == 0, proxy.output()
    assert took < 12, f"exit took {took:.1f} s"
