"""Agent loops through llmtrace-proxy with the official SDKs: the model asks for a tool call,
the client runs the tool (300 ms), sends the result back; the gateway infers the tool's run
as an `execute_tool get_weather` span in the trace of the request that carries the result,
linked to the GenAI span that asked for the call.
"""

import json
import secrets
import time

import anthropic
import openai

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLAUDE_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOL_SECONDS = 0.3


def fast():
    return {"x-mock-ttft-ms": "5", "x-mock-gap-ms": "1", "x-request-id": f"agent-{secrets.token_hex(8)}"}


def warm_up(call):
    """One throwaway round of the same calls: the SDK builds its response models lazily, and the
    first parse takes tens of ms that would count as the agent's time between the exchanges.
    (Its tool call is never answered: no span comes of it.)"""
    call()


def run_tool(arguments):
    time.sleep(TOOL_SECONDS)
    return json.dumps({"city": json.loads(arguments or "{}").get("city"), "celsius": 21})


def execute_tool_span(spans, call_id, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        found = [
            s
            for s in spans.all()
            if s["attributes"].get("gen_ai.operation.name") == "execute_tool"
            and s["attributes"].get("gen_ai.tool.call.id") == call_id
        ]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.1)


def check_tool_span(span, spans, asking_trace, answer_trace):
    """The inferred span: its name, attributes, duration, trace, parent and link."""
    assert span["name"] == "execute_tool get_weather"
    assert span["kind"] == "internal"
    attributes = span["attributes"]
    assert attributes["gen_ai.tool.name"] == "get_weather"
    assert attributes["gen_ai.tool.type"] == "function"
    assert attributes["llmtrace.inferred"] == "gateway"
    seconds = (span["end_unix_nano"] - span["start_unix_nano"]) / 1e9
    assert abs(seconds - TOOL_SECONDS) <= 0.02, f"the tool ran {TOOL_SECONDS} s; the span is {seconds} s"
    # In the trace of the request that carries the result, under its SERVER span.
    assert span["trace_id"] == answer_trace
    server = [s for s in spans.trace(answer_trace, want=3) if s["kind"] == "server"]
    assert len(server) == 1 and span["parent_span_id"] == server[0]["span_id"]
    # Linked to the GenAI span that asked for the call.
    asking = [s for s in spans.trace(asking_trace, want=2) if s["kind"] == "client"]
    assert len(asking) == 1
    (link,) = span["links"]
    assert link["trace_id"] == asking_trace
    assert link["span_id"] == asking[0]["span_id"]
    assert link["attributes"]["llmtrace.link.kind"] == "tool_call"


class Clock:
    """When the client last finished reading an answer, and when it sent each request (an
    httpx event hook, called as the request goes out)."""

    def __init__(self):
        self.sent = []
        self.answered = None

    def on_request(self, request):
        self.sent.append(time.perf_counter())

    def client(self):
        import httpx2 as httpx

        return httpx.Client(event_hooks={"request": [self.on_request]}, timeout=30)


def test_openai_agent_loop_infers_the_tool_span(proxy_url, spans):
    clock = Clock()
    oai = openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="sk-agent", max_retries=0, http_client=clock.client())
    messages = [{"role": "user", "content": "What's the weather in Paris? Use the get_weather tool."}]
    ask = lambda: oai.chat.completions.with_raw_response.create(  # noqa: E731
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], extra_headers=fast()
    )
    warm_up(lambda: ask().parse().choices[0].message.model_dump(exclude_none=True))
    first = ask()
    asking_trace = first.headers["x-llmtrace-trace-id"]
    completion = first.parse()
    clock.answered = time.perf_counter()
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    result = run_tool(call.function.arguments)
    messages += [
        completion.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    second = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], extra_headers=fast()
    )
    answer_trace = second.headers["x-llmtrace-trace-id"]
    assert second.parse().choices[0].finish_reason == "stop"
    assert answer_trace != asking_trace
    span = execute_tool_span(spans, call.id)
    client_gap = clock.sent[-1] - clock.answered
    print(f"tool span {(span['end_unix_nano'] - span['start_unix_nano']) / 1e9:.4f} s, client gap {client_gap:.4f} s")
    check_tool_span(span, spans, asking_trace, answer_trace)


def test_openai_streamed_tool_call_is_seen_too(proxy_url, spans):
    oai = openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="sk-agent", max_retries=0)
    messages = [{"role": "user", "content": "weather in Oslo? use get_weather"}]
    ask = lambda: oai.chat.completions.with_streaming_response.create(  # noqa: E731
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], stream=True, extra_headers=fast()
    )

    def drain():
        with ask() as response:
            list(response.parse())

    warm_up(drain)
    with ask() as response:
        asking_trace = response.headers["x-llmtrace-trace-id"]
        call_id, name, arguments = None, "", ""
        for chunk in response.parse():
            for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                call_id = tc.id or call_id
                name += tc.function.name or ""
                arguments += tc.function.arguments or ""
    assert name == "get_weather" and call_id
    result = run_tool(arguments)
    messages += [
        {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]
    second = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], extra_headers=fast()
    )
    check_tool_span(execute_tool_span(spans, call_id), spans, asking_trace, second.headers["x-llmtrace-trace-id"])


def test_anthropic_agent_loop_infers_the_tool_span(proxy_url, spans):
    claude = anthropic.Anthropic(base_url=proxy_url, api_key="sk-ant-agent", max_retries=0)
    messages = [{"role": "user", "content": "weather in Paris? use get_weather"}]
    ask = lambda: claude.messages.with_streaming_response.create(  # noqa: E731
        model="claude-sonnet-4-5",
        max_tokens=1024,
        messages=messages,
        tools=[CLAUDE_TOOL],
        stream=True,
        extra_headers=fast(),
    )

    def drain():
        with ask() as response:
            list(response.parse())

    warm_up(drain)
    with ask() as response:
        asking_trace = response.headers["x-llmtrace-trace-id"]
        events = list(response.parse())
    starts = [e for e in events if e.type == "content_block_start" and e.content_block.type == "tool_use"]
    assert len(starts) == 1
    block = starts[0].content_block
    assert block.name == "get_weather"
    result = run_tool("{}")
    messages += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": block.id, "name": block.name, "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": result}]},
    ]
    second = claude.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=1024, messages=messages, tools=[CLAUDE_TOOL], extra_headers=fast()
    )
    assert second.parse().stop_reason == "end_turn"
    check_tool_span(execute_tool_span(spans, block.id), spans, asking_trace, second.headers["x-llmtrace-trace-id"])
