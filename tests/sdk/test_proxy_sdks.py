"""The official OpenAI and Anthropic SDKs through llmtrace-proxy, in front of llmtrace-mock.

For every request:
- what the SDK makes of the answer (as test_mock_sdks.py checks against the mock directly);
- the mock received exactly the client's request (method, path, body bytes, end-to-end
  headers), found in its log by the `x-request-id` every request sends;
- the proxy is transparent: the raw response bytes the SDK read through the proxy equal those
  the mock sends for the identical request sent to it directly (`x-mock-seed` makes the mock's
  ids and timestamps repeat), and so do the headers, except the proxy's own
  (`x-llmtrace-trace-id`, and `x-request-id` when the provider sends none) and per-connection ones;
- the spans the proxy exported for it: a SERVER span `POST <route>` and, under it, a GenAI
  CLIENT span `<operation> <model>`, in the trace named by `x-llmtrace-trace-id`, with the
  usage the SDK reports, errors and aborts as the README says, and no credential anywhere.
"""

import itertools
import json
import secrets

import anthropic
import httpx2
import openai
import pytest

from proxyutil import Recorder, assert_transparent, assert_upstream_got, span_tree

API_KEY = "sk-test-" + secrets.token_hex(20)
ANTHROPIC_KEY = "sk-ant-test-" + secrets.token_hex(20)

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the world"},
]  # 8 words: the mock's prompt tokens
CLAUDE_MESSAGES = [{"role": "user", "content": "Hello Claude, how are you"}]  # 5 words
DEFAULT_TEXT = " ".join(f"tok{i}" for i in range(16))

_seeds = itertools.count(1000)


def controls(**kw):
    """x-mock-* headers: fast timing, a fresh seed, and the given controls; and a fresh
    x-request-id (forwarded as is: it finds the request in the mock's log)."""
    seed = next(_seeds)
    h = {"x-mock-ttft-ms": "5", "x-mock-gap-ms": "1", "x-mock-seed": str(seed)}
    h["x-request-id"] = f"sdk-proxy-{seed}-{secrets.token_hex(8)}"
    h.update({f"x-mock-{k.replace('_', '-')}": str(v) for k, v in kw.items()})
    return h


@pytest.fixture
def rec():
    recorder = Recorder()
    yield recorder
    recorder.close()


@pytest.fixture
def oai(proxy_url, rec):
    http = httpx2.Client(transport=rec, timeout=30)
    return openai.OpenAI(base_url=f"{proxy_url}/v1", api_key=API_KEY, max_retries=0, http_client=http)


@pytest.fixture
def claude(proxy_url, rec):
    http = httpx2.Client(transport=rec, timeout=30)
    return anthropic.Anthropic(base_url=proxy_url, api_key=ANTHROPIC_KEY, max_retries=0, http_client=http)


def trace_of(exchange, spans, server_name, client_name):
    """The (server, client) spans of the exchange's trace, with the structure every request has."""
    trace_id = exchange.trace_id
    assert trace_id and len(trace_id) == 32 and int(trace_id, 16), exchange.headers
    found = spans.trace(trace_id, want=2)
    server, client = span_tree(found)
    assert server["name"] == server_name
    assert client["name"] == client_name
    assert client["parent_span_id"] == server["span_id"]
    assert server["trace_id"] == client["trace_id"] == trace_id
    assert server["start_unix_nano"] <= client["start_unix_nano"]
    assert client["end_unix_nano"] <= server["end_unix_nano"]
    # The provider's own request id reaches the client untouched (and is recorded); the
    # proxy's id is returned only when the provider sent none.
    request_id = exchange.headers["x-request-id"]
    upstream_id = server["attributes"].get("llmtrace.upstream.request_id")
    if upstream_id is not None:
        assert upstream_id == request_id
    else:
        assert server["attributes"]["http.request.header.x-request-id"] == request_id
    text = json.dumps(found)
    assert API_KEY not in text and ANTHROPIC_KEY not in text
    assert API_KEY[8:] not in text and ANTHROPIC_KEY[12:] not in text
    return server, client


def is_error(span):
    return isinstance(span["status"], dict) and "error" in span["status"]


# === OpenAI chat ===


def test_chat_stream_without_include_usage(oai, rec, mock_url, spans):
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=controls()))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert all(c.usage is None for c in chunks), "no usage chunk reaches a client that did not ask"
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The proxy asked upstream for usage: the body differs by exactly that splice.
    upstream = assert_upstream_got(rec.last, mock_url, allow_usage_splice=True)
    assert json.loads(upstream["body"])["stream_options"] == {"include_usage": True}
    direct = assert_transparent(rec.last, mock_url, allow_usage_splice=True)
    assert direct.endswith(b"data: [DONE]\n\n")

    server, client = trace_of(rec.last, spans, "POST /v1/chat/completions", "chat gpt-4o")
    a = client["attributes"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.response.id"] == chunks[0].id
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["llmtrace.stream.complete"] is True
    # The proxy asked the upstream for usage: the span has the reported count all the same.
    assert a["llmtrace.usage.source"] == "reported"
    assert a["gen_ai.usage.output_tokens"] == 16
    assert a["gen_ai.usage.input_tokens"] == 8
    # The bundled price of the answering model (gpt-4o: $2.50 in, $10 out per million).
    assert a["gen_ai.response.model"].startswith("gpt-4o")
    assert a["gen_ai.usage.cost"] == pytest.approx((8 * 2.5 + 16 * 10.0) / 1e6, rel=1e-12)
    assert server["attributes"]["http.response.status_code"] == 200
    assert server["status"] == "unset" and client["status"] == "unset"


def test_chat_stream_with_include_usage(oai, rec, mock_url, spans):
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=controls(cached_tokens=3, reasoning_tokens=2),
        )
    )
    usage = chunks[-1].usage
    assert [c.usage for c in chunks if c.usage] == [usage]
    assert (usage.prompt_tokens, usage.completion_tokens) == (8, 18)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert_transparent(rec.last, mock_url)

    _, client = trace_of(rec.last, spans, "POST /v1/chat/completions", "chat gpt-4o")
    a = client["attributes"]
    assert a["llmtrace.usage.source"] == "reported"
    assert a["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert a["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert a["gen_ai.usage.cache_read.input_tokens"] == usage.prompt_tokens_details.cached_tokens
    assert a["gen_ai.usage.reasoning.output_tokens"] == usage.completion_tokens_details.reasoning_tokens
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.response.id"] == chunks[0].id
    assert a["gen_ai.response.time_to_first_chunk"] > 0
    assert any(e["name"] == "llmtrace.first_token" for e in client["events"])


def test_chat_non_streaming_continues_the_callers_trace(oai, rec, mock_url, spans):
    parent_trace, parent_span = secrets.token_hex(16), secrets.token_hex(8)
    headers = controls()
    headers["traceparent"] = f"00-{parent_trace}-{parent_span}-01"
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5, extra_headers=headers)
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"
    assert completion.choices[0].finish_reason == "length"
    assert rec.last.trace_id == parent_trace
    assert_transparent(rec.last, mock_url)

    server, client = trace_of(rec.last, spans, "POST /v1/chat/completions", "chat gpt-4o-mini")
    assert server["parent_span_id"] == parent_span
    a = client["attributes"]
    assert a["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens == 5
    assert a["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens == 8
    assert a["gen_ai.request.max_tokens"] == 5
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.response.finish_reasons"] == ["length"]
    assert a["gen_ai.response.id"] == completion.id
    assert a["llmtrace.usage.source"] == "reported"


def test_embeddings(oai, rec, mock_url, spans):
    result = oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "bye"], extra_headers=controls())
    assert [len(d.embedding) for d in result.data] == [1536, 1536]
    assert json.loads(rec.last.request_body)["encoding_format"] == "base64"
    assert_transparent(rec.last, mock_url)

    _, client = trace_of(rec.last, spans, "POST /v1/embeddings", "embeddings text-embedding-3-small")
    a = client["attributes"]
    assert a["gen_ai.operation.name"] == "embeddings"
    assert a["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens == 3


# === faults ===


def test_429(oai, rec, mock_url, spans):
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=controls(fault=429))
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "1"
    assert_transparent(rec.last, mock_url)

    server, client = trace_of(rec.last, spans, "POST /v1/chat/completions", "chat gpt-4o")
    assert is_error(client), client
    assert client["attributes"]["error.type"]
    assert server["attributes"]["http.response.status_code"] == 429
    # A 4xx is the client's fault: not an error of the server span (HTTP conventions).
    assert not is_error(server)


def test_500(oai, rec, mock_url, spans):
    with pytest.raises(openai.InternalServerError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=controls(fault=500))
    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"
    assert_transparent(rec.last, mock_url, allow_usage_splice=True)

    server, client = trace_of(rec.last, spans, "POST /v1/chat/completions", "chat gpt-4o")
    assert is_error(client) and client["attributes"]["error.type"]
    assert is_error(server) and server["attributes"]["error.type"] == "500"
    assert server["attributes"]["http.response.status_code"] == 500


def test_client_disconnect_mid_stream(oai, rec, mock_url, spans):
    # 16 tokens 50 ms apart: the stream is still running when the client goes.
    stream = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=controls(ttft_ms=20, gap_ms=50)
    )
    received = []
    for chunk in stream:
        received.append(chunk.choices[0].delta.content or "")
        if len(received) == 3:
            break
    stream.close()
    assert "".join(received) == "tok0 tok1"  # after the role chunk
    assert_transparent(rec.last, mock_url, cut_short=True, allow_usage_splice=True)

    server, client = trace_of(rec.last, spans, "POST /v1/chat/completions", "chat gpt-4o")
    for span in (server, client):
        assert span["attributes"].get("llmtrace.aborted") is True, span
        assert is_error(span), span
    # Ended when the client went, not when the mock would have finished (20 + 15 * 50 ms).
    assert client["duration_ms"] < 700, client["duration_ms"]
    assert client["attributes"].get("llmtrace.stream.complete") is not True


# === Anthropic ===


def test_anthropic_messages_stream(claude, rec, mock_url, spans):
    with claude.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=1024,
        messages=CLAUDE_MESSAGES,
        extra_headers=controls(cached_tokens=2, cache_creation_tokens=1),
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_TEXT
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 16)
    assert_transparent(rec.last, mock_url)

    server, client = trace_of(rec.last, spans, "POST /v1/messages", "chat claude-sonnet-4-6")
    a = client["attributes"]
    # Told from the path: the proxy runs with --upstream and no --provider.
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.response.id"] == final.id
    assert a["gen_ai.usage.output_tokens"] == final.usage.output_tokens
    # The conventions count cached prompt tokens in input_tokens; Anthropic reports them apart.
    u = final.usage
    assert a["gen_ai.usage.input_tokens"] == u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens
    assert a["gen_ai.usage.cache_read.input_tokens"] == u.cache_read_input_tokens
    assert a["gen_ai.usage.cache_creation.input_tokens"] == u.cache_creation_input_tokens
    assert a["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert server["attributes"]["http.response.status_code"] == 200


# === last: the whole file ===


def test_zz_no_span_anywhere_holds_a_key(spans):
    text = spans.text()
    assert text, "spans were exported"
    for key in (API_KEY, ANTHROPIC_KEY, API_KEY[8:], ANTHROPIC_KEY[12:]):
        assert key not in text
