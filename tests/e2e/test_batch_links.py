"""The batch example's span with 100 links, exported over OTLP/HTTP and read back from Phoenix.

Run by tests/e2e/run.sh, which builds `examples/batch_worker.rs` (LLMTRACE_E2E_BATCH_WORKER)
and starts Phoenix (LLMTRACE_E2E_PHOENIX_URL). This module runs the example once, exporting
over OTLP/HTTP to a relay of its own that keeps a copy of each request and forwards its bytes
unchanged to Phoenix's `/v1/traces`. Then it checks two things:

- on the wire (the relay's copy, decoded with `opentelemetry-proto`): the batch span
  `process requests` carries 100 span links, one per producer span, with `llmtrace.link.index`
  0..99 and each producer's trace id, span id and `tracestate`;
- in Phoenix (`GET /v1/projects/{project}/spans`): the batch span's `llmtrace.links.trace_ids`
  holds exactly those 100 trace ids in link order, and the `chat gpt-4o-mini` span is its
  child. Phoenix reads no span links on OTLP ingest (its `decode_otlp_span` skips them and its
  span model has no place for them): the attribute is how the relation survives there.
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

PHOENIX_URL = os.environ.get("LLMTRACE_E2E_PHOENIX_URL", "")
BATCH_WORKER = os.environ.get("LLMTRACE_E2E_BATCH_WORKER", "")
PROJECT = os.environ.get("LLMTRACE_E2E_BATCH_PROJECT", f"llmtrace-e2e-batch-{os.getpid()}")
SPAN_WAIT_SECONDS = float(os.environ.get("LLMTRACE_E2E_SPAN_WAIT", "30"))

BATCH_SIZE = 100
BATCH_SPAN = "process requests"
PRODUCER_SPAN = "send requests"
CHAT_SPAN = "chat gpt-4o-mini"
TRACE_IDS = "llmtrace.links.trace_ids"
LINK_INDEX = "llmtrace.link.index"

if not (PHOENIX_URL and BATCH_WORKER):
    pytest.skip(
        "run through tests/e2e/run.sh (LLMTRACE_E2E_PHOENIX_URL or LLMTRACE_E2E_BATCH_WORKER is not set)",
        allow_module_level=True,
    )

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402


# --- the relay ---------------------------------------------------------------------------------


class Relay(http.server.ThreadingHTTPServer):
    """OTLP/HTTP in front of Phoenix: keeps each request's body, forwards it unchanged."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), RelayHandler)
        self.upstream = upstream
        self.bodies: list[bytes] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class RelayHandler(http.server.BaseHTTPRequestHandler):
    server: Relay

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        forwarded = {
            name: value for name, value in self.headers.items()
            if name.lower() in ("content-type", "content-encoding", "user-agent")
        }
        try:
            response = httpx.post(self.server.upstream + self.path, content=body, headers=forwarded, timeout=10)
            status, answer = response.status_code, response.content
            content_type = response.headers.get("content-type", "application/x-protobuf")
        except httpx.HTTPError as error:
            status, answer, content_type = 502, repr(error).encode(), "text/plain"
        with self.server.lock:
            self.server.bodies.append(body)
            if status != 200:
                self.server.errors.append(f"{self.path}: Phoenix answered {status}: {answer[:200]!r}")
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):  # quiet
        pass


# --- one run of the example ----------------------------------------------------------------


@dataclass
class BatchRun:
    stdout: str
    batch_trace_id: str
    otlp_spans: list = field(default_factory=list)  # opentelemetry.proto Span messages
    phoenix_spans: list[dict] = field(default_factory=list)

    def otlp(self, name: str) -> list:
        return [s for s in self.otlp_spans if s.name == name]

    def phoenix(self, name: str) -> dict:
        found = [
            s for s in self.phoenix_spans
            if s["name"] == name and s["context"]["trace_id"] == self.batch_trace_id
        ]
        assert len(found) == 1, f"{len(found)} spans named {name!r} in trace {self.batch_trace_id}"
        return found[0]


def _fetch_spans(project: str) -> list[dict]:
    spans, cursor = [], None
    with httpx.Client(base_url=PHOENIX_URL, timeout=10) as client:
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            response = client.get(f"/v1/projects/{project}/spans", params=params)
            if response.status_code == 404:  # the project appears with its first span
                return []
            response.raise_for_status()
            page = response.json()
            spans.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return spans


def _run_example(relay: Relay) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=relay.url,  # a base URL: the exporter appends /v1/traces
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={PROJECT}",
    )
    return subprocess.run([BATCH_WORKER], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def batch() -> BatchRun:
    relay = Relay(PHOENIX_URL)
    thread = threading.Thread(target=relay.serve_forever, daemon=True)
    thread.start()
    try:
        done = _run_example(relay)
    finally:
        relay.shutdown()
        relay.server_close()
    output = f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"batch_worker exited with {done.returncode}\n{output}"
    assert not relay.errors, "\n".join(relay.errors)
    found = re.search(r"^batch trace ([0-9a-f]{32}) linked to (\d+) request traces$", done.stdout, re.M)
    assert found, f"no batch trace id in the example's output\n{output}"
    assert int(found[2]) == BATCH_SIZE, found[0]
    run = BatchRun(done.stdout, found[1])
    for body in relay.bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                run.otlp_spans.extend(scope_spans.spans)
    assert run.otlp_spans, f"the relay received {len(relay.bodies)} requests and no span"

    deadline = time.monotonic() + SPAN_WAIT_SECONDS
    while True:
        run.phoenix_spans = _fetch_spans(PROJECT)
        in_batch = {s["name"] for s in run.phoenix_spans if s["context"]["trace_id"] == run.batch_trace_id}
        if {BATCH_SPAN, CHAT_SPAN} <= in_batch:
            return run
        if time.monotonic() > deadline:
            pytest.fail(
                f"after {SPAN_WAIT_SECONDS:.0f} s Phoenix project {PROJECT!r} holds {len(run.phoenix_spans)} "
                f"spans, trace {run.batch_trace_id} has {sorted(in_batch)}",
                pytrace=False,
            )
        time.sleep(0.5)


def _attributes(otlp_key_values) -> dict:
    """OTLP KeyValues as a dict of plain Python values (strings, ints, arrays of them)."""

    def value(any_value):
        which = any_value.WhichOneof("value")
        if which == "array_value":
            return [value(v) for v in any_value.array_value.values]
        return getattr(any_value, which) if which else None

    return {kv.key: value(kv.value) for kv in otlp_key_values}


# --- on the wire ---------------------------------------------------------------------------


def test_batch_span_carries_100_links_over_otlp(batch: BatchRun):
    (span,) = batch.otlp(BATCH_SPAN)
    producers = {p.span_id: p for p in batch.otlp(PRODUCER_SPAN)}
    assert len(producers) == BATCH_SIZE
    assert span.trace_id.hex() == batch.batch_trace_id
    assert span.parent_span_id == b"", "the batch span is the root of a trace of its own"
    assert len(span.links) == BATCH_SIZE
    assert span.dropped_links_count == 0
    indices = [_attributes(link.attributes).get(LINK_INDEX) for link in span.links]
    assert indices == list(range(BATCH_SIZE))
    for i, link in enumerate(span.links):
        producer = producers.get(link.span_id)
        assert producer is not None, f"link {i} names no producer span"
        assert link.trace_id == producer.trace_id, f"link {i}"
        assert link.trace_id.hex() != batch.batch_trace_id, f"link {i}"
        # The producer's tracestate travels with the link: request i sent app=req-i.
        assert link.trace_state == producer.trace_state == f"app=req-{i}", f"link {i}"
    assert len({link.trace_id for link in span.links}) == BATCH_SIZE


def test_trace_ids_attribute_is_sent_in_link_order(batch: BatchRun):
    (span,) = batch.otlp(BATCH_SPAN)
    sent = _attributes(span.attributes)[TRACE_IDS]
    assert sent == [link.trace_id.hex() for link in span.links]


# --- in Phoenix ------------------------------------------------------------------------------


def test_phoenix_keeps_the_100_request_trace_ids(batch: BatchRun):
    (otlp_span,) = batch.otlp(BATCH_SPAN)
    request_traces = [link.trace_id.hex() for link in otlp_span.links]
    producer_traces = {p.trace_id.hex() for p in batch.otlp(PRODUCER_SPAN)}
    span = batch.phoenix(BATCH_SPAN)
    assert span["parent_id"] is None
    stored = span["attributes"][TRACE_IDS]
    assert stored == request_traces
    assert len(set(stored)) == BATCH_SIZE and set(stored) == producer_traces
    assert span["attributes"]["messaging.batch.message_count"] == BATCH_SIZE


def test_chat_span_is_the_batch_spans_child(batch: BatchRun):
    span, chat = batch.phoenix(BATCH_SPAN), batch.phoenix(CHAT_SPAN)
    assert chat["context"]["trace_id"] == span["context"]["trace_id"] == batch.batch_trace_id
    assert chat["parent_id"] == span["context"]["span_id"]
    assert chat["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat["attributes"]["gen_ai.operation.name"] == "chat"


def test_phoenix_drops_span_links(batch: BatchRun):
    """Why `llmtrace.links.trace_ids` exists. When this fails, Phoenix keeps links now:
    update README.md's "Span links" and tests/e2e/README.md."""
    with httpx.Client(base_url=PHOENIX_URL, timeout=10) as client:
        response = client.get(f"/v1/projects/{PROJECT}/spans/otlpv1", params={"limit": 1000})
        response.raise_for_status()
    span_id = batch.phoenix(BATCH_SPAN)["context"]["span_id"]
    (span,) = [s for s in response.json()["data"] if s.get("span_id") == span_id]
    assert not span.get("links"), "Phoenix returned span links"
    assert "links" not in batch.phoenix(BATCH_SPAN)
