"""Request fidelity through llmtrace-proxy: the upstream gets exactly what the SDK sent.

The official SDKs send, through the proxy, prompts of 1 KB, 100 KB and 5 MB (the 5 MB one a
base64 PNG content part: several reads, many HTTP/2 DATA frames), streamed and not, over
HTTP/1.1 and over HTTP/2 with prior knowledge (h2c, the proxy's same port). For each:

- the SDK call succeeds and reads the mock's answer;
- the mock received exactly the client's request: method, path, body bytes, end-to-end headers
  (`GET /__mock/requests?request_id=...`, every request sends its own `x-request-id`); a streamed
  OpenAI chat without `stream_options.include_usage` may differ by that one splice only;
- the client read the same bytes as the mock sends for the same request sent to it directly
  (`x-mock-seed` makes them repeat).

Issue 10: a body that arrived in more than one read went upstream empty.
"""

import base64
import itertools
import random
import secrets

import anthropic
import httpx2
import openai
import pytest

from proxyutil import Recorder, assert_transparent

TOKENS = 4
TEXT = " ".join(f"tok{i}" for i in range(TOKENS))
SIZES = {"1KB": 1 << 10, "100KB": 100 << 10, "5MB": 5 << 20}
IMAGE_FROM = 5 << 20  # prompts this large are a base64 image, not text
HTTP = ["h1", "h2"]
PNG = b"\x89PNG\r\n\x1a\n"

_seeds = itertools.count(50_000)


def headers():
    seed = next(_seeds)
    return {
        "x-mock-ttft-ms": "1",
        "x-mock-gap-ms": "0",
        "x-mock-tokens": str(TOKENS),
        "x-mock-seed": str(seed),
        "x-request-id": f"fidelity-{seed}-{secrets.token_hex(8)}",
    }


def text_of(size):
    """`size` bytes of words (ASCII)."""
    words = (f"w{i}" for i in itertools.count())
    out, n = [], 0
    while n < size:
        w = next(words)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:size]


def image_b64(size):
    """A base64 "PNG" of `size` characters (deterministic bytes after the signature)."""
    raw = PNG + random.Random(size).randbytes(size * 3 // 4 - len(PNG))
    return base64.b64encode(raw).decode()


_cache = {}


def cached(kind, size):
    key = (kind, size)
    if key not in _cache:
        _cache[key] = text_of(size) if kind == "text" else image_b64(size)
    return _cache[key]


# === one call per API: returns nothing, asserts the SDK read the answer ===


def chat(oai, size, mode):
    if size >= IMAGE_FROM:
        url = "data:image/png;base64," + cached("image", size)
        content = [{"type": "text", "text": "Describe this image."}, {"type": "image_url", "image_url": {"url": url}}]
    else:
        content = cached("text", size)
    kw = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], "extra_headers": headers()}
    if mode == "whole":
        completion = oai.chat.completions.create(**kw)
        assert completion.choices[0].message.content == TEXT
        return
    if mode == "stream+usage":
        kw["stream_options"] = {"include_usage": True}
    chunks = list(oai.chat.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "stop"
    if mode == "stream+usage":
        assert chunks[-1].usage.completion_tokens == TOKENS
    else:
        assert all(c.usage is None for c in chunks)


def embeddings(oai, size, mode):
    assert mode == "whole"
    result = oai.embeddings.create(model="text-embedding-3-small", input=cached("text", size), extra_headers=headers())
    assert [len(d.embedding) for d in result.data] == [1536]


def responses(oai, size, mode):
    if size >= IMAGE_FROM:
        url = "data:image/png;base64," + cached("image", size)
        content = [{"type": "input_text", "text": "Describe this image."}, {"type": "input_image", "image_url": url}]
        prompt = [{"role": "user", "content": content}]
    else:
        prompt = cached("text", size)
    kw = {"model": "gpt-4o", "input": prompt, "extra_headers": headers()}
    if mode == "whole":
        assert oai.responses.create(**kw).output_text == TEXT
        return
    events = list(oai.responses.create(stream=True, **kw))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT
    assert events[-1].type == "response.completed"


def messages(claude, size, mode):
    if size >= IMAGE_FROM:
        source = {"type": "base64", "media_type": "image/png", "data": cached("image", size)}
        content = [{"type": "text", "text": "Describe this image."}, {"type": "image", "source": source}]
    else:
        content = cached("text", size)
    kw = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": content}],
        "extra_headers": headers(),
    }
    if mode == "whole":
        message = claude.messages.create(**kw)
        assert [b.text for b in message.content] == [TEXT]
        assert message.stop_reason == "end_turn"
        return
    events = list(claude.messages.create(stream=True, **kw))
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == TEXT
    assert events[-1].type == "message_stop"


CALLS = {"chat": chat, "embeddings": embeddings, "responses": responses, "messages": messages}
MODES = {
    "chat": ["whole", "stream", "stream+usage"],
    "embeddings": ["whole"],
    "responses": ["whole", "stream"],
    "messages": ["whole", "stream"],
}
CASES = [
    pytest.param(api, size, mode, http, id=f"{api}-{size}-{mode}-{http}")
    for api, modes in MODES.items()
    for size in SIZES
    for mode in modes
    for http in HTTP
]


@pytest.mark.parametrize("api,size,mode,http", CASES)
def test_fidelity(api, size, mode, http, proxy_url, mock_url):
    recorder = Recorder(http2=http == "h2")
    client = httpx2.Client(transport=recorder, timeout=30)
    try:
        if api == "messages":
            sdk = anthropic.Anthropic(base_url=proxy_url, api_key="sk-ant-fidelity", max_retries=0, http_client=client)
        else:
            sdk = openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="sk-fidelity", max_retries=0, http_client=client)
        CALLS[api](sdk, SIZES[size], mode)
        assert len(recorder.exchanges) == 1
        exchange = recorder.last
        assert exchange.http_version == ("HTTP/2" if http == "h2" else "HTTP/1.1"), exchange.http_version
        assert exchange.status == 200
        assert len(exchange.request_body) > SIZES[size]
        # Only a streamed OpenAI chat that did not ask for usage may be rewritten (to ask).
        assert_transparent(exchange, mock_url, allow_usage_splice=api == "chat" and mode == "stream")
    finally:
        client.close()
