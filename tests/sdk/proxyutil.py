"""Helpers for the tests that go through llmtrace-proxy.

- `Recorder`: an httpx2 transport for the SDKs that keeps every request as sent and every
  response's raw bytes as the SDK read them (so a test compares exactly what the client got);
  over HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
- `replay`: sends a recorded request, byte for byte, to another base URL (the mock directly).
- `assert_transparent`: the client got the mock's own answer, and the mock got the client's
  request (`assert_upstream_got`: `upstream_received` + `assert_forwarded_exactly`, from
  upstream.py, which tests/e2e uses too).
- `Spans`: reads the proxy's JSON-lines spans file, waiting for a trace's spans to be exported.
- `Proxy`: starts and stops an `llmtrace-proxy` process on a free port.
"""

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time

import httpx2

from upstream import assert_forwarded_exactly, request_id_of, upstream_received

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Headers that are per hop or per connection, or that the proxy sets on purpose.
HOP_HEADERS = {"date", "content-length", "transfer-encoding", "connection", "keep-alive"}
PROXY_HEADERS = {"x-request-id", "x-llmtrace-trace-id"}


@dataclasses.dataclass
class Exchange:
    method: str
    url: str
    request_headers: list
    request_body: bytes
    status: int = 0
    headers: dict = dataclasses.field(default_factory=dict)
    body: bytearray = dataclasses.field(default_factory=bytearray)
    # Closed before the end of the body was read (the OpenAI SDK also closes a stream after
    # `[DONE]` without reading the chunked terminator: compare lengths, not this flag alone).
    closed_early: bool = False
    # "HTTP/1.1" or "HTTP/2", as the connection to the proxy spoke it.
    http_version: str = ""

    @property
    def path(self):
        return httpx2.URL(self.url).raw_path.decode()

    @property
    def request_id(self):
        return request_id_of(self)

    @property
    def trace_id(self):
        return self.headers.get("x-llmtrace-trace-id")


class _Tee(httpx2.SyncByteStream):
    def __init__(self, inner, exchange):
        self.inner = inner
        self.exchange = exchange
        self.done = False

    def __iter__(self):
        for chunk in self.inner:
            self.exchange.body.extend(chunk)
            yield chunk
        self.done = True

    def close(self):
        if not self.done:
            self.exchange.closed_early = True
        self.inner.close()


class Recorder(httpx2.BaseTransport):
    """Pass as `http_client=httpx2.Client(transport=Recorder())` to an SDK client.

    `http2=True`: HTTP/2 only, with prior knowledge over cleartext (h2c), as the proxy accepts
    on its one port (needs the `h2` package).
    """

    def __init__(self, http2=False):
        self.inner = httpx2.HTTPTransport(http1=not http2, http2=http2)
        self.exchanges = []

    def handle_request(self, request):
        body = request.read()
        exchange = Exchange(request.method, str(request.url), list(request.headers.raw), body)
        self.exchanges.append(exchange)
        response = self.inner.handle_request(request)
        exchange.status = response.status_code
        exchange.http_version = response.extensions.get("http_version", b"").decode()
        exchange.headers = {k.lower(): v for k, v in response.headers.items()}
        response.stream = _Tee(response.stream, exchange)
        return response

    def close(self):
        self.inner.close()

    @property
    def last(self):
        return self.exchanges[-1]


def replay(exchange, base_url, timeout=30):
    """The same request (method, path, headers, body bytes) to `base_url`: (status, headers, raw body)."""
    headers = [(k, v) for k, v in exchange.request_headers if k.lower() not in (b"host", b"content-length")]
    with httpx2.Client(timeout=timeout) as client:
        request = client.build_request(
            exchange.method, base_url.rstrip("/") + exchange.path, headers=headers, content=exchange.request_body
        )
        response = client.send(request, stream=True)
        try:
            raw = b"".join(response.iter_raw())
        finally:
            response.close()
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, raw


def comparable_headers(headers):
    return {k: v for k, v in headers.items() if k not in HOP_HEADERS | PROXY_HEADERS}


def assert_upstream_got(exchange, mock_url, allow_usage_splice=False):
    """The mock received exactly one request with the exchange's `x-request-id`, and it is the
    client's (see `assert_forwarded_exactly`). Returns it."""
    found = upstream_received(mock_url, exchange.request_id)
    assert len(found) == 1, (
        f"{exchange.method} {exchange.path}: the upstream received {len(found)} requests with "
        f"x-request-id {exchange.request_id}, not 1"
    )
    assert_forwarded_exactly(exchange, found[0], allow_usage_splice=allow_usage_splice)
    return found[0]


def assert_transparent(exchange, mock_url, cut_short=False, allow_usage_splice=False):
    """Both ways through the proxy, nothing changed.

    First the request: the mock received the client's bytes (`assert_upstream_got`; with
    `allow_usage_splice`, an OpenAI stream request may have `include_usage` spliced in). Then the
    answer: the bytes (and headers) the SDK got through the proxy are the mock's own answer to
    the same request sent to it directly (`x-mock-seed` makes them repeat). For an OpenAI stream
    whose client did not ask for usage, the proxy asks for it upstream and removes what that
    adds (the usage chunk, `"usage":null` in every chunk): the bytes are the same all the same.
    Returns the direct answer's body.
    """
    # Before the replay: it sends the same x-request-id to the mock.
    assert_upstream_got(exchange, mock_url, allow_usage_splice=allow_usage_splice)
    status, headers, direct = replay(exchange, mock_url)
    assert exchange.status == status
    assert comparable_headers(exchange.headers) == comparable_headers(headers)
    got = bytes(exchange.body)
    if cut_short:
        assert exchange.closed_early
        assert 0 < len(got) < len(direct)
        assert direct.startswith(got), f"through the proxy:\n{got[:2000]!r}\ndirect:\n{direct[:2000]!r}"
    else:
        assert got == direct, f"through the proxy:\n{got[:4000]!r}\ndirect:\n{direct[:4000]!r}"
    return direct


# === spans ===


class Spans:
    """The proxy's spans file (one JSON object per line, appended in batches)."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def text(self):
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return ""
        # Only whole lines: a batch may be half written.
        return data[: data.rfind(b"\n") + 1].decode()

    def all(self):
        return [json.loads(line) for line in self.text().splitlines() if line.strip()]

    def trace(self, trace_id, want=2, timeout=15.0):
        """The spans of `trace_id`, once at least `want` of them have been exported."""
        deadline = time.monotonic() + timeout
        while True:
            spans = [s for s in self.all() if s["trace_id"] == trace_id]
            if len(spans) >= want or time.monotonic() > deadline:
                return spans
            time.sleep(0.1)


def span_tree(spans):
    """(server span, client span) of one proxied LLM request, the client a child of the server."""
    servers = [s for s in spans if s["kind"] == "server"]
    clients = [s for s in spans if s["kind"] == "client"]
    assert len(servers) == 1 and len(clients) == 1, json.dumps(spans, indent=1)
    return servers[0], clients[0]


# === processes ===


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc=None, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def proxy_binary():
    explicit = os.environ.get("LLMTRACE_PROXY_BIN")
    if explicit:
        return pathlib.Path(explicit)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "debug" / "llmtrace-proxy"


class Proxy:
    """An `llmtrace-proxy` in front of `upstream` on a free port.

    Without `otlp_env`, spans go to `spans_file` (a new temp file when not given). The OTEL_*
    variables of the environment are removed, then `otlp_env` is applied.
    """

    def __init__(self, upstream, spans_file=None, otlp_env=None):
        self.upstream = upstream
        self.otlp_env = otlp_env or {}
        self.spans_file = None if self.otlp_env else (spans_file or tempfile.mktemp(prefix="llmtrace-spans-"))
        self.proc = None
        self.port = None
        self.log = tempfile.TemporaryFile()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        binary = proxy_binary()
        if not binary.exists():
            raise FileNotFoundError(f"{binary} not built: run tests/sdk/run.sh")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(self.otlp_env)
        for attempt in range(3):
            self.port = free_port()
            args = [str(binary), "--listen", f"127.0.0.1:{self.port}", "--upstream", self.upstream]
            if self.spans_file:
                args += ["--spans-file", str(self.spans_file)]
            self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
            try:
                wait_for_port(self.port, self.proc)
                return self
            except RuntimeError:
                if attempt == 2:
                    raise RuntimeError(f"llmtrace-proxy did not start:\n{self.output()}")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, timeout=10.0):
        """SIGINT (pingora's fast shutdown), then SIGKILL. Returns the seconds it took to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - started

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
