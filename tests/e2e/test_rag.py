"""The RAG example against a real Chroma server: one trace, SERVER → embeddings → vector query → chat.

Run by tests/e2e/run.sh, which builds `examples/rag.rs` (LLMTRACE_E2E_RAG), starts Phoenix, the
mock provider and a gateway exporting over OTLP/gRPC (LLMTRACE_E2E_GRPC_PROXY, its Phoenix project
LLMTRACE_E2E_GRPC_PROJECT; Phoenix's gRPC endpoint in LLMTRACE_E2E_PHOENIX_GRPC). This module starts `chroma run` (the `chromadb` package of the venv)
on a free port with a temporary data directory, then the example, pointed at the gateway and at
Chroma, exporting to a Phoenix project of its own. It asks one question and checks:

- the answer: three documents of the seeded collection, the very ones Chroma returns for the
  question's embedding when asked directly, and the chat request the mock provider received (in
  the question's trace) carries them in its prompt;
- in Phoenix: the example's trace holds `POST /ask` as its root and, as its children, the
  `embeddings …`, `query <collection>` and `chat gpt-4o-mini` spans; the query span has
  `db.system.name = chroma`, `db.operation.name = query`, `db.collection.name`,
  `llmtrace.db.top_k = 3`, `db.response.returned_rows = 3`, `db.response.status_code = "200"`;
- the gateway's spans for the embeddings and chat calls are in the same trace, their SERVER
  spans children of the example's CLIENT spans.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx
import pytest

PHOENIX_URL = os.environ.get("LLMTRACE_E2E_PHOENIX_URL", "")
RAG = os.environ.get("LLMTRACE_E2E_RAG", "")
# The gRPC-exporting gateway, and OTLP/gRPC for the example too: in this tree the OTLP/HTTP
# exporter panics at start ("No rustls crypto provider is configured": reqwest's
# `rustls-no-provider`, unified in by the proxy's shadow client), in the proxy and the examples.
GATEWAY = os.environ.get("LLMTRACE_E2E_GRPC_PROXY", "")
GATEWAY_PROJECT = os.environ.get("LLMTRACE_E2E_GRPC_PROJECT", "")
PHOENIX_GRPC = os.environ.get("LLMTRACE_E2E_PHOENIX_GRPC", "")
MOCK_URL = os.environ.get("LLMTRACE_E2E_MOCK_URL", "")
SPAN_WAIT_SECONDS = float(os.environ.get("LLMTRACE_E2E_SPAN_WAIT", "30"))
CHROMA = pathlib.Path(sys.executable).parent / "chroma"
DATABASE = "/api/v2/tenants/default_tenant/databases/default_database/collections"

if not (PHOENIX_URL and PHOENIX_GRPC and RAG and GATEWAY and MOCK_URL):
    pytest.skip("run through tests/e2e/run.sh (LLMTRACE_E2E_RAG and friends are not set)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, ready, process: subprocess.Popen, log: pathlib.Path, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        if process.poll() is not None:
            break
        time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:]) if log.exists() else ""
    pytest.fail(f"{what} did not start; its output:\n{tail}", pytrace=False)


def _fetch_spans(project: str) -> list[dict]:
    spans, cursor = [], None
    with httpx.Client(base_url=PHOENIX_URL, timeout=10) as client:
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            response = client.get(f"/v1/projects/{project}/spans", params=params)
            if response.status_code == 404:
                return []
            response.raise_for_status()
            page = response.json()
            spans.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return spans


@dataclass
class Run:
    collection: str
    chroma_url: str
    answer: dict
    # Every span of the question's trace. Phoenix files a trace under one project (the first
    # span's), so the example's and the gateway's spans are gathered from both projects.
    spans: list[dict] = field(default_factory=list)

    def server(self) -> dict:
        found = [s for s in self.spans if s["name"] == "POST /ask"]
        assert len(found) == 1, [s["name"] for s in self.spans]
        return found[0]

    def children(self, span: dict) -> list[dict]:
        return [s for s in self.spans if s["parent_id"] == span["context"]["span_id"]]

    def client(self, prefix: str) -> dict:
        """The example's CLIENT span whose name starts with `prefix` (a child of POST /ask)."""
        found = [s for s in self.children(self.server()) if s["name"].startswith(prefix)]
        assert len(found) == 1, f"{prefix!r}: {[s['name'] for s in self.spans]}"
        return found[0]


@pytest.fixture(scope="module")
def chroma(tmp_path_factory):
    root = tmp_path_factory.mktemp("chroma")
    port = _free_port()
    log = root / "chroma.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(CHROMA), "run", "--path", str(root / "data"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def heartbeat():
        try:
            return httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    started = time.monotonic()
    _wait("chroma run", heartbeat, process, log)
    print(f"chroma up in {time.monotonic() - started:.1f} s at {url}")
    yield url
    process.terminate()
    process.wait(timeout=15)


@pytest.fixture(scope="module")
def run(chroma, tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("rag")
    project = f"llmtrace-e2e-rag-{os.getpid()}"
    collection = f"rag-{secrets.token_hex(4)}"
    log = root / "rag.log"
    env = {
        **os.environ,
        "LLMTRACE_GATEWAY": GATEWAY,
        "CHROMA_URL": chroma,
        "RAG_COLLECTION": collection,
        "OTEL_EXPORTER_OTLP_ENDPOINT": PHOENIX_GRPC,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with log.open("wb") as out:
        process = subprocess.Popen([RAG, "127.0.0.1:0"], stdout=out, stderr=subprocess.STDOUT, env=env)

    def listening():
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("listening on "):
                return line.removeprefix("listening on ").strip()
        return None

    try:
        url = _wait("the rag example", listening, process, log)
        response = httpx.post(f"{url}/ask", json={"question": "How is a trace carried between services?"}, timeout=30)
        assert response.status_code == 200, response.text
        result = Run(collection, chroma, response.json())
    finally:
        process.terminate()  # SIGTERM: the example flushes its spans and exits
        process.wait(timeout=15)
    trace_id = result.answer["trace_id"]
    deadline = time.monotonic() + SPAN_WAIT_SECONDS
    while True:
        spans = {
            s["context"]["span_id"]: s
            for p in (project, GATEWAY_PROJECT)
            for s in _fetch_spans(p)
            if s["context"]["trace_id"] == trace_id
        }
        result.spans = list(spans.values())
        # Ours: POST /ask and its 3 CLIENT spans; the gateway's: a SERVER and a GenAI span for
        # each of the embeddings and chat calls.
        if len(result.spans) >= 8:
            return result
        if time.monotonic() > deadline:
            pytest.fail(
                f"after {SPAN_WAIT_SECONDS:.0f} s: {[s['name'] for s in result.spans]} in trace {trace_id} "
                f"({project}, {GATEWAY_PROJECT}); example output:\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-25:]),
                pytrace=False,
            )
        time.sleep(0.5)


def test_the_answer_uses_what_chroma_returned(run: Run):
    documents = run.answer["documents"]
    assert len(documents) == 3 and len(set(documents)) == 3, documents
    # Ask Chroma directly with the question's embedding (the mock's are deterministic).
    embedding = httpx.post(
        f"{MOCK_URL}/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "How is a trace carried between services?", "dimensions": 64},
        timeout=10,
    ).json()["data"][0]["embedding"]
    with httpx.Client(base_url=run.chroma_url, timeout=10) as client:
        collection = client.get(f"{DATABASE}/{run.collection}").json()
        direct = client.post(
            f"{DATABASE}/{collection['id']}/query",
            json={"query_embeddings": [embedding], "n_results": 3, "include": ["documents"]},
        ).json()
        assert client.get(f"{DATABASE}/{collection['id']}/count").json() == 6
    assert direct["documents"][0] == documents
    # The chat request of this trace carried them in its prompt.
    requests = httpx.get(f"{MOCK_URL}/__mock/requests", timeout=10).json()["requests"]
    chats = [
        r for r in requests
        if r["path"].startswith("/v1/chat/completions")
        and any(n == "traceparent" and run.answer["trace_id"] in v for n, v in r["headers"])
    ]
    assert len(chats) == 1, [r["path"] for r in requests]
    prompt = json.loads(base64.b64decode(chats[0]["body_base64"]))["messages"][0]["content"]
    for document in documents:
        assert document in prompt
    assert run.answer["answer"]


def test_one_trace_server_root_three_client_children(run: Run):
    assert len(run.spans) == 8, sorted(s["name"] for s in run.spans)
    server = run.server()
    assert server["parent_id"] is None
    names = sorted(s["name"] for s in run.children(server))
    assert names == sorted(["chat gpt-4o-mini", "embeddings text-embedding-3-small", f"query {run.collection}"]), names


def test_vector_query_span_attributes(run: Run):
    query = run.client("query ")
    assert query["name"] == f"query {run.collection}"
    attributes = query["attributes"]
    assert attributes["db.system.name"] == "chroma"
    assert attributes["db.operation.name"] == "query"
    assert attributes["db.collection.name"] == run.collection
    assert attributes["db.namespace"] == "default_tenant|default_database"
    assert attributes["llmtrace.db.top_k"] == 3
    assert attributes["db.response.returned_rows"] == 3
    assert attributes["db.response.status_code"] == "200"
    assert "error.type" not in attributes
    assert run.children(query) == []  # Chroma does not trace here: nothing below


def test_the_gateway_continues_the_trace(run: Run):
    for prefix, route in [("embeddings ", "POST /v1/embeddings"), ("chat ", "POST /v1/chat/completions")]:
        ours = run.client(prefix)
        gateway = run.children(ours)
        assert [s["name"] for s in gateway] == [route], (prefix, [s["name"] for s in gateway])
        genai = run.children(gateway[0])
        assert [s["name"] for s in genai] == [ours["name"]], (route, [s["name"] for s in genai])


# --- The gateway in front of a vector database --------------------------------------------------

PROXY_BIN = os.environ.get("LLMTRACE_E2E_PROXY_BIN", "")

# Four documents in 3-d; the query vector is closest to "b" then "a" (cosine and L2 alike).
POINTS = {
    "a": [1.0, 0.0, 0.0],
    "b": [0.9, 0.1, 0.0],
    "c": [0.0, 1.0, 0.0],
    "d": [0.0, 0.0, 1.0],
}
QUERY = [0.92, 0.09, 0.0]


@dataclass
class Gateway:
    collection: str
    project: str
    chroma_port: int
    client_result: dict
    direct_result: dict
    count: int
    spans: list[dict] = field(default_factory=list)

    def named(self, name: str) -> dict:
        found = [s for s in self.spans if s["name"] == name]
        assert len(found) == 1, (name, sorted(s["name"] for s in self.spans))
        return found[0]

    def parent(self, span: dict) -> dict:
        found = [s for s in self.spans if s["context"]["span_id"] == span["parent_id"]]
        assert len(found) == 1, span["name"]
        return found[0]


@pytest.fixture(scope="module")
def vector_gateway(chroma, tmp_path_factory) -> Gateway:
    """The official chromadb client through llmtrace-proxy (`--provider chroma`) to real Chroma."""
    if not PROXY_BIN:
        pytest.skip("LLMTRACE_E2E_PROXY_BIN is not set")
    import chromadb

    root = tmp_path_factory.mktemp("vector-gateway")
    project = f"llmtrace-e2e-vectordb-{os.getpid()}"
    port = _free_port()
    log = root / "proxy.log"
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": PHOENIX_GRPC,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_SERVICE_NAME": "llmtrace-proxy-e2e-vectordb",
        "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PROXY_BIN, "--listen", f"127.0.0.1:{port}", "--upstream", chroma, "--provider", "chroma",
             "--admin", "off"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )

    def listening():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    collection = f"vec-{secrets.token_hex(4)}"
    try:
        _wait("llmtrace-proxy in front of chroma", listening, process, log)
        client = chromadb.HttpClient(host="127.0.0.1", port=port)
        created = client.create_collection(collection, embedding_function=None)
        created.add(ids=list(POINTS), embeddings=list(POINTS.values()), documents=[f"doc {k}" for k in POINTS])
        client_result = created.query(query_embeddings=[QUERY], n_results=2, include=["distances", "documents"])
    finally:
        process.send_signal(2)  # SIGINT: pingora's fast shutdown; spans are flushed first
        process.wait(timeout=30)
    with httpx.Client(base_url=chroma, timeout=10) as direct:
        described = direct.get(f"{DATABASE}/{collection}").json()
        count = direct.get(f"{DATABASE}/{described['id']}/count").json()
        direct_result = direct.post(
            f"{DATABASE}/{described['id']}/query",
            json={"query_embeddings": [QUERY], "n_results": 2, "include": ["distances", "documents"]},
        ).json()
    result = Gateway(collection, project, int(chroma.rsplit(":", 1)[1]), dict(client_result), direct_result, count)
    deadline = time.monotonic() + SPAN_WAIT_SECONDS
    wanted = {f"create_collection {collection}", f"add {collection}", f"query {collection}"}
    while True:
        result.spans = _fetch_spans(project)
        if wanted <= {s["name"] for s in result.spans}:
            return result
        if time.monotonic() > deadline:
            pytest.fail(
                f"after {SPAN_WAIT_SECONDS:.0f} s: {sorted(s['name'] for s in result.spans)} in {project}; "
                "gateway output:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]),
                pytrace=False,
            )
        time.sleep(0.5)


def test_the_chromadb_client_through_the_gateway_gets_what_chroma_holds(vector_gateway: Gateway):
    # What landed upstream: the collection and its four points, in the real Chroma.
    assert vector_gateway.count == 4
    # What the client got: the two nearest, as Chroma answers them directly.
    assert vector_gateway.client_result["ids"] == [["b", "a"]]
    assert vector_gateway.client_result["ids"] == vector_gateway.direct_result["ids"]
    assert vector_gateway.client_result["documents"] == vector_gateway.direct_result["documents"]
    assert vector_gateway.client_result["distances"][0] == pytest.approx(vector_gateway.direct_result["distances"][0])


def test_gateway_database_spans(vector_gateway: Gateway):
    name = vector_gateway.collection
    query = vector_gateway.named(f"query {name}")
    attributes = query["attributes"]
    assert attributes["db.system.name"] == "chroma"
    assert attributes["db.operation.name"] == "query"
    # Named by its name, learned from the create answer, though the path carries the id.
    assert attributes["db.collection.name"] == name
    assert attributes["db.namespace"] == "default_tenant|default_database"
    assert attributes["llmtrace.db.top_k"] == 2
    assert attributes["db.response.returned_rows"] == 2
    assert attributes["db.response.status_code"] == "200"
    # The CLIENT span names the database it called, not the gateway.
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == vector_gateway.chroma_port
    assert "error.type" not in attributes
    server = vector_gateway.parent(query)
    assert server["name"] == "POST /api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/query"
    assert server["parent_id"] is None

    add = vector_gateway.named(f"add {name}")
    assert add["attributes"]["db.operation.name"] == "add"
    assert add["attributes"]["db.response.status_code"] in ("200", "201")
    create = vector_gateway.named(f"create_collection {name}")
    assert create["attributes"]["db.collection.name"] == name
    # The client's heartbeat and tenant checks are not database calls: SERVER spans only.
    database_spans = [s for s in vector_gateway.spans if "db.system.name" in s["attributes"]]
    assert sorted(s["attributes"]["db.operation.name"] for s in database_spans) == ["add", "create_collection", "query"]
