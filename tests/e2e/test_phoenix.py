"""Spans exported by llmtrace-proxy land in Arize Phoenix, over OTLP/gRPC and OTLP/HTTP.

Run by tests/e2e/run.sh, which starts Phoenix, the mock provider and one proxy per protocol,
and passes their addresses in LLMTRACE_E2E_* variables. For each protocol this module sends
five requests through that protocol's proxy, then reads the spans back from Phoenix's REST API
(`GET /v1/projects/{project}/spans`) and checks names, parentage, trace ids and attributes.

Each request sends its own `x-request-id`; the mock's log (`GET /__mock/requests`) shows that
the proxy forwarded it as the client sent it (tests/sdk/upstream.py).

Phoenix returns `attributes` as one flat JSON object keyed by the full dotted OpenTelemetry
name (`"gen_ai.usage.input_tokens": 1`), array attributes as JSON arrays; it adds OpenInference
attributes of its own (`llm.token_count.prompt`, ...) and rewrites span kinds (LLM, UNKNOWN),
so kinds are not checked here.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import sys
import time
from dataclasses import dataclass, field

import httpx
import pytest

# Standard library only, shared with tests/sdk.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "sdk"))
from upstream import assert_forwarded_exactly, upstream_received  # noqa: E402

PHOENIX_URL = os.environ.get("LLMTRACE_E2E_PHOENIX_URL", "")
MOCK_URL = os.environ.get("LLMTRACE_E2E_MOCK_URL", "")
PROTOCOLS = ["grpc", "http"]

# The proxy batches spans (BatchSpanProcessor, 5 s by default); Phoenix inserts asynchronously.
SPAN_WAIT_SECONDS = float(os.environ.get("LLMTRACE_E2E_SPAN_WAIT", "30"))

if not PHOENIX_URL:
    pytest.skip("run through tests/e2e/run.sh (LLMTRACE_E2E_PHOENIX_URL is not set)", allow_module_level=True)


@dataclass
class ClientRequest:
    """A request as the client sent it (what `assert_forwarded_exactly` compares)."""

    method: str
    path: str
    request_headers: list
    request_body: bytes
    request_id: str


@dataclass
class Sent:
    """One request sent through the proxy and what the client saw."""

    label: str
    status: int
    trace_id: str
    body: bytes
    request: ClientRequest | None = None
    caller_parent: str | None = None
    caller_trace: str | None = None


@dataclass
class Run:
    protocol: str
    project: str
    sent: dict[str, Sent] = field(default_factory=dict)
    spans: list[dict] = field(default_factory=list)

    def trace(self, label: str) -> tuple[dict, dict]:
        """The (server span, chat span) of one request's trace."""
        trace_id = self.sent[label].trace_id
        spans = [s for s in self.spans if s["context"]["trace_id"] == trace_id]
        names = sorted(s["name"] for s in spans)
        assert len(spans) == 2, f"{label}: expected 2 spans in trace {trace_id}, got {names}"
        servers = [s for s in spans if s["name"].startswith("POST ")]
        chats = [s for s in spans if s["name"].startswith("chat ")]
        assert len(servers) == 1 and len(chats) == 1, f"{label}: span names {names}"
        return servers[0], chats[0]


def _env(protocol: str, what: str) -> str:
    return os.environ[f"LLMTRACE_E2E_{protocol.upper()}_{what}"]


def _proxy_log(protocol: str) -> str:
    path = pathlib.Path(_env(protocol, "LOG"))
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    # Leave out the frames of a panic's backtrace: the message is what tells.
    lines = [
        line for line in text.splitlines()
        if not re.match(r"\s+(\d+: |at )", line) and not line.startswith("note: Some details")
    ]
    return "\n".join(lines[-25:])


def _send_traffic(client: httpx.Client, protocol: str) -> dict[str, Sent]:
    openai = {"content-type": "application/json", "authorization": "Bearer sk-e2e"}
    anthropic = {
        "content-type": "application/json",
        "x-api-key": "sk-ant-e2e",
        "anthropic-version": "2023-06-01",
    }
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    requests = [
        ("stream_chat", "/v1/chat/completions", openai, {
            "model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Say hello"}],
        }),
        ("chat", "/v1/chat/completions", openai, {
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}],
        }),
        ("stream_messages", "/v1/messages", anthropic, {
            "model": "claude-sonnet-4-6", "stream": True, "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello"}],
        }),
        ("rate_limited", "/v1/chat/completions", {**openai, "x-mock-fault": "429"}, {
            "model": "gpt-4o", "messages": [{"role": "user", "content": "again"}],
        }),
        # The caller's W3C trace context is continued: the proxy's spans join its trace.
        ("traceparent", "/v1/chat/completions",
         {**openai, "traceparent": f"00-{caller_trace}-{caller_span}-01"}, {
            "model": "gpt-4o", "messages": [{"role": "user", "content": "in your trace"}],
        }),
    ]
    sent = {}
    for label, path, headers, body in requests:
        request_id = f"e2e-{protocol}-{label}-{secrets.token_hex(8)}"
        headers = {**headers, "x-request-id": request_id}
        with client.stream("POST", path, headers=headers, json=body) as response:
            data = response.read()
            trace_id = response.headers.get("x-llmtrace-trace-id", "")
            r = response.request
            request = ClientRequest(r.method, r.url.raw_path.decode(), list(r.headers.raw), r.content, request_id)
            sent[label] = Sent(label, response.status_code, trace_id, data, request)
    sent["traceparent"].caller_parent = caller_span
    sent["traceparent"].caller_trace = caller_trace
    return sent


def _fetch_spans(project: str) -> list[dict]:
    """Every span of the project, following next_cursor."""
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


@pytest.fixture(scope="module", params=PROTOCOLS)
def run(request) -> Run:
    protocol = request.param
    result = Run(protocol, _env(protocol, "PROJECT"))
    try:
        with httpx.Client(base_url=_env(protocol, "PROXY"), timeout=30) as client:
            result.sent = _send_traffic(client, protocol)
    except httpx.TransportError as error:
        pytest.fail(
            f"the {protocol} proxy did not answer ({error!r}); its output:\n{_proxy_log(protocol)}",
            pytrace=False,
        )
    expected = {s.trace_id for s in result.sent.values()}
    deadline = time.monotonic() + SPAN_WAIT_SECONDS
    while True:
        result.spans = _fetch_spans(result.project)
        by_trace = {}
        for span in result.spans:
            by_trace.setdefault(span["context"]["trace_id"], []).append(span)
        if all(len(by_trace.get(t, [])) >= 2 for t in expected):
            return result
        if time.monotonic() > deadline:
            pytest.fail(
                f"{protocol}: after {SPAN_WAIT_SECONDS:.0f} s Phoenix project {result.project!r} "
                f"holds {len(result.spans)} spans, not the 2 per trace expected for {sorted(expected)}"
                f"; proxy output:\n{_proxy_log(protocol)}",
                pytrace=False,
            )
        time.sleep(0.5)


def _sse_events(body: bytes) -> list[dict]:
    events = []
    for line in body.decode().splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data and data != "[DONE]":
                events.append(json.loads(data))
    return events


# --- the client's side ---------------------------------------------------------------------


def test_responses_and_trace_id_headers(run: Run):
    assert {label: s.status for label, s in run.sent.items()} == {
        "stream_chat": 200, "chat": 200, "stream_messages": 200, "rate_limited": 429, "traceparent": 200,
    }
    for s in run.sent.values():
        assert len(s.trace_id) == 32 and int(s.trace_id, 16), f"{s.label}: x-llmtrace-trace-id {s.trace_id!r}"
    assert len({s.trace_id for s in run.sent.values()}) == len(run.sent), "trace ids are not distinct"


def test_upstream_received_what_the_client_sent(run: Run):
    for s in run.sent.values():
        found = upstream_received(MOCK_URL, s.request.request_id)
        assert len(found) == 1, f"{s.label}: the mock received {len(found)} requests with its x-request-id"
        assert_forwarded_exactly(s.request, found[0])


# --- what Phoenix holds ----------------------------------------------------------------------


def test_span_names(run: Run):
    expected = {
        "stream_chat": ("POST /v1/chat/completions", "chat gpt-4o"),
        "chat": ("POST /v1/chat/completions", "chat gpt-4o-mini"),
        "stream_messages": ("POST /v1/messages", "chat claude-sonnet-4-6"),
        "rate_limited": ("POST /v1/chat/completions", "chat gpt-4o"),
        "traceparent": ("POST /v1/chat/completions", "chat gpt-4o"),
    }
    for label, (server_name, chat_name) in expected.items():
        server, chat = run.trace(label)
        assert (server["name"], chat["name"]) == (server_name, chat_name), label


def test_parent_child_and_trace_ids(run: Run):
    for label, sent in run.sent.items():
        server, chat = run.trace(label)
        # The trace id is the one the proxy told the client in x-llmtrace-trace-id.
        assert server["context"]["trace_id"] == chat["context"]["trace_id"] == sent.trace_id, label
        assert chat["parent_id"] == server["context"]["span_id"], label
        # Root span, or the caller's span when the caller sent traceparent.
        assert server["parent_id"] == sent.caller_parent, label
        assert server["context"]["span_id"] != chat["context"]["span_id"], label
        if sent.caller_trace:
            assert sent.trace_id == sent.caller_trace, f"{label}: the caller's trace is not continued"


def test_spans_only_in_their_own_project(run: Run):
    other = [p for p in PROTOCOLS if p != run.protocol][0]
    foreign = {s["context"]["trace_id"] for s in _fetch_spans(_env(other, "PROJECT"))}
    assert not foreign & {s.trace_id for s in run.sent.values()}


def test_attributes_come_back_flat_with_dotted_keys(run: Run):
    _, chat = run.trace("stream_chat")
    attributes = chat["attributes"]
    assert isinstance(attributes, dict)
    assert "gen_ai.usage.input_tokens" in attributes and "gen_ai" not in attributes
    assert isinstance(attributes["gen_ai.response.finish_reasons"], list)
    server, _ = run.trace("stream_chat")
    assert server["attributes"]["http.route"] == "/v1/chat/completions"
    assert server["attributes"]["http.request.method"] == "POST"
    assert server["attributes"]["http.response.status_code"] == 200


def test_streamed_openai_chat(run: Run):
    _, chat = run.trace("stream_chat")
    a = chat["attributes"]
    usage = [e["usage"] for e in _sse_events(run.sent["stream_chat"].body) if e.get("usage")]
    assert usage, "the client got no usage chunk despite stream_options.include_usage"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.usage.input_tokens"] == usage[-1]["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage[-1]["completion_tokens"] > 0
    assert a["llmtrace.usage.source"] == "reported"
    assert a["gen_ai.response.time_to_first_chunk"] > 0
    assert chat["status_code"] != "ERROR"


def test_plain_openai_chat(run: Run):
    _, chat = run.trace("chat")
    a = chat["attributes"]
    body = json.loads(run.sent["chat"].body)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.id"] == body["id"]
    assert a["gen_ai.response.finish_reasons"] == [c["finish_reason"] for c in body["choices"]]
    assert a["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"] > 0
    assert chat["status_code"] != "ERROR"


def test_streamed_anthropic_message(run: Run):
    server, chat = run.trace("stream_messages")
    a = chat["attributes"]
    events = _sse_events(run.sent["stream_messages"].body)
    start = next(e for e in events if e["type"] == "message_start")
    delta = [e for e in events if e["type"] == "message_delta"][-1]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.request.model"] == "claude-sonnet-4-6"
    assert a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.response.id"] == start["message"]["id"]
    assert a["gen_ai.response.finish_reasons"] == [delta["delta"]["stop_reason"]] == ["end_turn"]
    assert a["gen_ai.usage.input_tokens"] == start["message"]["usage"]["input_tokens"]
    assert a["gen_ai.usage.output_tokens"] == delta["usage"]["output_tokens"] > 0
    assert server["attributes"]["http.route"] == "/v1/messages"
    assert chat["status_code"] != "ERROR"


def test_rate_limited_call_is_an_error_on_the_chat_span(run: Run):
    server, chat = run.trace("rate_limited")
    body = json.loads(run.sent["rate_limited"].body)
    a = chat["attributes"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o"
    assert a["http.response.status_code"] == 429
    # The provider's error code from the body.
    assert a["error.type"] == body["error"]["code"] == "rate_limit_exceeded"
    assert chat["status_code"] == "ERROR"
    assert chat["status_message"] == body["error"]["message"]
    assert any(e["name"] == "exception" for e in chat["events"])
    assert "gen_ai.usage.output_tokens" not in a
    # A 4xx answered by the server is not the server span's error (HTTP semantic conventions).
    assert server["attributes"]["http.response.status_code"] == 429
    assert server["status_code"] == "UNSET"
