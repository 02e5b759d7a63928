"""The OpenAI Batch and Files APIs with the official SDK, through llmtrace-proxy, in front of
llmtrace-mock: upload a batch input, create the batch, poll it until it completes, download
its output.

For each call:
- the mock received exactly the client's request (a multipart upload's bytes included);
- the SDK reads the answers it expects (file and batch objects, the output's lines);
- the proxy exported a SERVER span on the route template and a CLIENT span for the call
  (`file.upload`, `batch.create`, `batch.retrieve`, `file.content`) with what the answer said,
  and links from each later call to the span that made the batch or file it is about.
"""

import json
import time

import pytest

from proxyutil import assert_upstream_got
from test_proxy_sdks import API_KEY, controls, oai, rec  # noqa: F401 (fixtures)


def calls_of(exchange, spans, server_name, client_name):
    """The (server, client) spans of one proxied Batch/Files call."""
    trace_id = exchange.trace_id
    found = spans.trace(trace_id, want=2)
    servers = [s for s in found if s["kind"] == "server"]
    clients = [s for s in found if s["kind"] == "client"]
    assert len(servers) == 1 and len(clients) == 1, json.dumps(found, indent=1)
    server, client = servers[0], clients[0]
    assert server["name"] == server_name
    assert client["name"] == client_name
    assert client["parent_span_id"] == server["span_id"]
    assert API_KEY not in json.dumps(found)
    return server, client


def linked_to(span, maker, kind):
    links = [(l["trace_id"], l["span_id"], l["attributes"].get("llmtrace.batch.link")) for l in span["links"]]
    assert (maker["trace_id"], maker["span_id"], kind) in links, json.dumps(span, indent=1)


def batch_input(n, bad=()):
    lines = []
    for i in range(n):
        body = {"model": "gpt-4o-mini", "max_tokens": 3, "messages": [{"role": "user", "content": f"question {i}"}]}
        if i in bad:
            del body["messages"]
        lines.append(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}))
    return ("\n".join(lines) + "\n").encode()


def test_a_batch_from_upload_to_output_is_traced_and_linked(oai, rec, mock_url, spans):  # noqa: F811
    data = batch_input(6, bad={4})
    upload = oai.files.create(file=("requests.jsonl", data), purpose="batch", extra_headers=controls())
    assert upload.purpose == "batch" and upload.bytes == len(data)
    # The multipart body reached the upstream byte for byte.
    assert_upstream_got(rec.last, mock_url)
    _, upload_span = calls_of(rec.last, spans, "POST /v1/files", "file.upload")
    a = upload_span["attributes"]
    assert a["llmtrace.file.id"] == upload.id
    assert a["llmtrace.file.purpose"] == "batch"
    assert a["llmtrace.file.bytes"] == len(data)
    assert "requests.jsonl" not in json.dumps(upload_span), "file names are not recorded"

    batch = oai.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
        extra_headers=controls(batch_ms=300),
    )
    assert_upstream_got(rec.last, mock_url)
    _, create_span = calls_of(rec.last, spans, "POST /v1/batches", "batch.create")
    a = create_span["attributes"]
    assert a["llmtrace.batch.id"] == batch.id
    assert a["llmtrace.batch.status"] == batch.status
    assert a["llmtrace.batch.input_file_id"] == upload.id
    assert a["llmtrace.batch.endpoint"] == "/v1/chat/completions"
    assert a["llmtrace.batch.completion_window"] == "24h"
    linked_to(create_span, upload_span, "file")

    deadline = time.monotonic() + 20
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
        batch = oai.batches.retrieve(batch.id, extra_headers=controls())
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (6, 5, 1)
    _, poll_span = calls_of(rec.last, spans, "GET /v1/batches/{batch_id}", "batch.retrieve")
    a = poll_span["attributes"]
    assert a["llmtrace.batch.status"] == "completed"
    assert a["llmtrace.batch.output_file_id"] == batch.output_file_id
    assert (a["llmtrace.batch.requests.total"], a["llmtrace.batch.requests.failed"]) == (6, 1)
    linked_to(poll_span, create_span, "batch")

    content = oai.files.content(batch.output_file_id, extra_headers=controls())
    lines = [json.loads(line) for line in content.text.splitlines() if line.strip()]
    assert sorted(line["custom_id"] for line in lines) == [f"req-{i}" for i in range(6) if i != 4]
    _, download_span = calls_of(rec.last, spans, "GET /v1/files/{file_id}/content", "file.content")
    a = download_span["attributes"]
    assert a["llmtrace.batch.output.requests"] == len(lines)
    assert a["llmtrace.batch.output.failed"] == 0
    usage = [line["response"]["body"]["usage"] for line in lines]
    assert a["gen_ai.usage.input_tokens"] == sum(u["prompt_tokens"] for u in usage)
    assert a["gen_ai.usage.output_tokens"] == sum(u["completion_tokens"] for u in usage)
    # The output file belongs to the batch: its download links to the batch's creation.
    linked_to(download_span, create_span, "batch")


def test_an_unknown_batch_is_the_providers_404_and_the_span_says_so(oai, rec, mock_url, spans):  # noqa: F811
    import openai

    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve("batch_doesnotexist", extra_headers=controls())
    assert_upstream_got(rec.last, mock_url)
    server, client = calls_of(rec.last, spans, "GET /v1/batches/{batch_id}", "batch.retrieve")
    assert client["attributes"]["llmtrace.batch.id"] == "batch_doesnotexist"
    assert client["attributes"]["http.response.status_code"] == 404
    assert client["links"] == []
    assert "error" in client["status"]
    assert server["status"] == "unset", "a 404 is the caller's, not the gateway's failure"
