"""The official OpenAI and Anthropic Python SDKs against llmtrace-mock.

Each test asserts what the SDK itself makes of the mock's answers, faults included, so a change
in the mock (or an SDK upgrade) that breaks "indistinguishable from the real API" shows here.
"""

import json
import time

import anthropic
import openai
import pytest

# Tokens are "tok0 tok1 ..."; the mock's default is 16 tokens.
def text_of(n):
    return " ".join(f"tok{i}" for i in range(n))


DEFAULT_TEXT = text_of(16)
REFUSAL = "I'm sorry, but I can't help with that."
FAST = {"x-mock-ttft-ms": "5", "x-mock-gap-ms": "1"}
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the world"},
]  # 8 words: the mock's prompt tokens
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def headers(**controls):
    h = dict(FAST)
    h.update({f"x-mock-{k.replace('_', '-')}": str(v) for k, v in controls.items()})
    return h


# === OpenAI: chat completions ===


def test_chat_stream_without_include_usage_has_no_usage_chunk(oai):
    started = time.monotonic()
    stream = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    chunks = list(stream)
    elapsed = time.monotonic() - started
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_TEXT
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "no chunk with empty choices"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.id == chunks[0].id and c.id.startswith("chatcmpl-") for c in chunks)
    assert chunks[0].system_fingerprint.startswith("fp_")
    # Default timing: 50 ms to the first token, 15 gaps of 20 ms.
    assert elapsed >= 0.35


def test_chat_stream_with_include_usage_has_one_usage_chunk(oai):
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers(cached_tokens=3, reasoning_tokens=2),
    )
    chunks = list(stream)
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    last = chunks[-1]
    assert last is with_usage[0] and last.choices == []
    assert last.usage.prompt_tokens == 8
    assert last.usage.completion_tokens == 16 + 2
    assert last.usage.total_tokens == 8 + 18
    assert last.usage.prompt_tokens_details.cached_tokens == 3
    assert last.usage.completion_tokens_details.reasoning_tokens == 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_TEXT


def test_chat_non_streaming(oai):
    completion = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=5, extra_headers=FAST
    )
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    assert completion.choices[0].message.content == text_of(5)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == 8
    assert completion.usage.completion_tokens == 5
    # The raw response carries the real API's headers.
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, extra_headers=FAST)
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["content-type"] == "application/json"
    assert raw.parse().choices[0].message.content == DEFAULT_TEXT


def test_chat_tool_call_stream(oai):
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "What's the weather in Paris? Use the get_weather tool."}],
        tools=[WEATHER_TOOL],
        stream=True,
        extra_headers=FAST,
    )
    calls = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        for tc in choice.delta.tool_calls or []:
            call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = tc.id or call["id"]
            call["name"] += tc.function.name or ""
            call["arguments"] += tc.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "mock"}


def test_chat_stream_helper_accumulates_tool_calls(oai):
    # The SDK's own accumulator (chat.completions.stream) rebuilds the final completion.
    with oai.chat.completions.stream(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER_TOOL],
        extra_headers=headers(fault="tools"),
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls[0].function.name == "get_weather"
    assert message.tool_calls[0].function.arguments == '{"city":"mock"}'


def test_chat_n2(oai):
    stream = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, n=2, stream=True, extra_headers=headers(tokens=4)
    )
    texts = {0: "", 1: ""}
    order = []
    for chunk in stream:
        for choice in chunk.choices:
            order.append(choice.index)
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: text_of(4), 1: text_of(4)}
    assert order[:4] == [0, 1, 0, 1], "choices are interleaved"
    whole = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, n=2, extra_headers=FAST)
    assert [c.index for c in whole.choices] == [0, 1]
    assert whole.usage.completion_tokens == 32


def test_chat_refusal_and_content_filter(oai):
    refused = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers(fault="refusal"))
    assert refused.choices[0].message.content is None
    assert refused.choices[0].message.refusal == REFUSAL
    stream = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers(fault="refusal")
    )
    assert "".join(c.choices[0].delta.refusal or "" for c in stream) == REFUSAL
    filtered = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers=headers(fault="content-filter", tokens=6)
    )
    assert filtered.choices[0].finish_reason == "content_filter"
    assert filtered.choices[0].message.content == text_of(3)


# === OpenAI: completions, embeddings, models ===


def test_completions(oai):
    stream = oai.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="Once upon a time",
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers(tokens=5),
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text_of(5)
    assert [c.usage.completion_tokens for c in chunks if c.usage] == [5]
    whole = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon a time", max_tokens=3, extra_headers=FAST)
    assert whole.object == "text_completion"
    assert whole.choices[0].text == text_of(3)
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.prompt_tokens == 4


def test_embeddings_default_base64_decodes_to_the_float_vectors(oai):
    # The SDK asks for base64 unless told otherwise, and decodes it.
    default = oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "bye"], extra_headers=FAST)
    assert len(default.data) == 2
    assert len(default.data[0].embedding) == 1536
    assert all(isinstance(x, float) for x in default.data[0].embedding[:8])
    assert default.usage.prompt_tokens == 3
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input=["hello world", "bye"], encoding_format="float", extra_headers=FAST
    )
    for a, b in zip(default.data, floats.data):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    small = oai.embeddings.create(model="text-embedding-3-small", input="x", dimensions=8, extra_headers=FAST)
    assert len(small.data[0].embedding) == 8
    assert sum(x * x for x in small.data[0].embedding) == pytest.approx(1.0, abs=1e-4)


def test_models(oai):
    ids = [m.id for m in oai.models.list()]
    assert "gpt-4o" in ids
    assert oai.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"


# === OpenAI: Responses API ===


def test_responses_non_streaming(oai):
    response = oai.responses.create(model="gpt-4.1", instructions="Be brief.", input="Tell me a story", extra_headers=FAST)
    assert response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.output_text == DEFAULT_TEXT
    assert response.usage.input_tokens == 6
    assert response.usage.output_tokens == 16
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    cut_short = oai.responses.create(model="gpt-4.1", input="Tell me a story", max_output_tokens=4, extra_headers=FAST)
    assert cut_short.status == "incomplete"
    assert cut_short.incomplete_details.reason == "max_output_tokens"
    assert cut_short.output_text == text_of(4)


def test_responses_streaming(oai):
    events = list(oai.responses.create(model="gpt-4.1", input="Tell me a story", stream=True, extra_headers=headers(tokens=3)))
    types = [e.type for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text_of(3)
    assert events[-1].response.usage.output_tokens == 3
    # The SDK's stream helper accumulates the same response.
    with oai.responses.stream(model="gpt-4.1", input="Tell me a story", extra_headers=FAST) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert deltas == DEFAULT_TEXT
    assert final.output_text == DEFAULT_TEXT
    assert final.usage.total_tokens == 4 + 16


def test_responses_function_call(oai):
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
    with oai.responses.stream(model="gpt-4.1", input="use the lookup tool", tools=[tool], extra_headers=FAST) as stream:
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call"
    assert call.name == "lookup"
    assert json.loads(call.arguments) == {"q": "mock"}
    assert call.call_id.startswith("call_")


# === OpenAI: faults ===


def test_429_is_rate_limit_error(oai):
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers(fault=429))
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "1"


def test_500_is_internal_server_error(oai):
    with pytest.raises(openai.InternalServerError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers(fault=500))
    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"


def test_cut_stream_raises_connection_error_after_the_tokens_before_it(oai):
    # The SDK wraps httpx's "incomplete chunked read" into APIConnectionError mid-iteration.
    stream = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers(fault="cut")
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == text_of(8)


def test_truncated_stream_ends_silently(oai):
    # A stream that ends cleanly without finish_reason or [DONE]: the SDK does not notice.
    chunks = list(
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers(fault="truncate"))
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text_of(8)
    assert all(c.choices[0].finish_reason is None for c in chunks)


def test_error_event_is_api_error(oai):
    stream = oai.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers(fault="error-event")
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert not isinstance(caught.value, openai.APIStatusError), "no status: the HTTP answer was 200"
    assert "error" in caught.value.message
    assert caught.value.body["type"] == "server_error"
    assert "".join(received) == text_of(8)


def test_responses_error_event_is_yielded_not_raised(oai):
    # The Responses API's in-stream `error` event has no "error" key: the SDK yields it as an
    # event (ResponseErrorEvent) instead of raising.
    events = list(
        oai.responses.create(model="gpt-4.1", input="x", stream=True, extra_headers=headers(fault="error-event"))
    )
    assert events[-1].type == "error"
    assert events[-1].code == "server_error"


def test_garbage_stream_yields_nothing(oai):
    # 200 + text/event-stream with an HTML body: no line is an SSE field the SDK knows, so the
    # stream ends without a chunk and without an error.
    chunks = list(
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers(fault="garbage"))
    )
    assert chunks == []


# === Anthropic ===


CLAUDE_MESSAGES = [{"role": "user", "content": "Hello Claude, how are you"}]  # 5 words


def test_anthropic_messages_non_streaming(claude):
    message = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=1024, system="Be kind.", messages=CLAUDE_MESSAGES, extra_headers=FAST
    )
    assert message.type == "message"
    assert message.id.startswith("msg_01")
    assert message.content[0].type == "text"
    assert message.content[0].text == DEFAULT_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 7
    assert message.usage.output_tokens == 16
    assert message.usage.cache_read_input_tokens == 0
    short = claude.messages.create(model="claude-sonnet-4-6", max_tokens=3, messages=CLAUDE_MESSAGES, extra_headers=FAST)
    assert short.stop_reason == "max_tokens"
    assert short.content[0].text == text_of(3)


def test_anthropic_stream_final_message(claude):
    with claude.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=1024,
        messages=CLAUDE_MESSAGES,
        extra_headers=headers(cached_tokens=2, cache_creation_tokens=1),
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_TEXT
    assert final.content[0].text == DEFAULT_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16
    assert final.usage.input_tokens == 5 - 2 - 1
    assert final.usage.cache_read_input_tokens == 2
    assert final.usage.cache_creation_input_tokens == 1


def test_anthropic_stream_tool_use(claude):
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    with claude.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=1024,
        messages=[{"role": "user", "content": "weather in Paris? use get_weather"}],
        tools=[tool],
        extra_headers=FAST,
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use"
    assert block.name == "get_weather"
    assert block.input == {"city": "mock"}


def test_anthropic_overloaded_error_event(claude):
    # An in-stream error event after a 200: the SDK raises APIStatusError whose status is 200
    # (OverloadedError is only for an HTTP 529) and whose body is the event.
    with pytest.raises(anthropic.APIStatusError) as caught:
        with claude.messages.stream(
            model="claude-sonnet-4-6", max_tokens=1024, messages=CLAUDE_MESSAGES, extra_headers=headers(fault="error-event")
        ) as stream:
            for _ in stream.text_stream:
                pass
    assert caught.value.status_code == 200
    assert caught.value.body["error"]["type"] == "overloaded_error"


def test_anthropic_http_errors(claude):
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=CLAUDE_MESSAGES, extra_headers=headers(fault=429))
    assert caught.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=CLAUDE_MESSAGES, extra_headers=headers(fault=529))
    with pytest.raises(anthropic.InternalServerError):
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=CLAUDE_MESSAGES, extra_headers=headers(fault=500))


def test_anthropic_count_tokens(claude):
    count = claude.messages.count_tokens(model="claude-sonnet-4-6", messages=CLAUDE_MESSAGES)
    assert count.input_tokens == 5


# === Azure OpenAI ===


def test_azure_client_streams_through_the_deployment_path(mock_url):
    client = openai.AzureOpenAI(azure_endpoint=mock_url, api_key="mock", api_version="2024-10-21", max_retries=0)
    stream = client.chat.completions.create(
        model="my-gpt4o-deployment",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=FAST,
    )
    chunks = list(stream)
    # Azure opens with a chunk of prompt filter results and no choices: code that reads
    # chunk.choices[0] unguarded breaks on it (and on the usage chunk).
    assert chunks[0].choices == [] and chunks[0].usage is None
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert chunks[1].model == "my-gpt4o-deployment"
    assert chunks[-1].usage.completion_tokens == 16
