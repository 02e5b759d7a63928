"""Fixtures: the mock upstream (llmtrace-mock's `mock_upstream` example) and SDK clients.

run.sh starts the mock and passes its URL in LLMTRACE_MOCK_URL. Without it, the session starts
the already-built binary itself (CARGO_TARGET_DIR or ./target, debug profile).
"""

import os
import pathlib
import subprocess

import anthropic
import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mock_url():
    url = os.environ.get("LLMTRACE_MOCK_URL")
    if url:
        yield url.rstrip("/")
        return
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target / "debug" / "examples" / "mock_upstream"
    if not binary.exists():
        pytest.exit(f"{binary} not built: run tests/sdk/run.sh, or cargo build --example mock_upstream", 2)
    proc = subprocess.Popen([str(binary), "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on http://"), first
        yield first.removeprefix("listening on ")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def oai(mock_url):
    return openai.OpenAI(base_url=f"{mock_url}/v1", api_key="sk-mock", max_retries=0)


@pytest.fixture
def claude(mock_url):
    return anthropic.Anthropic(base_url=mock_url, api_key="sk-ant-mock", max_retries=0)


# === llmtrace-proxy in front of the mock (test_proxy_sdks.py, test_collector_down.py) ===


@pytest.fixture(scope="session")
def proxy(mock_url):
    """(proxy URL, spans file) of an llmtrace-proxy in front of the mock writing JSON-lines spans.

    run.sh starts it and passes LLMTRACE_PROXY_URL and LLMTRACE_SPANS_FILE; without them the
    session starts the already-built binary itself.
    """
    from proxyutil import Proxy

    url = os.environ.get("LLMTRACE_PROXY_URL")
    spans_file = os.environ.get("LLMTRACE_SPANS_FILE")
    if url and spans_file:
        yield url.rstrip("/"), spans_file
        return
    instance = Proxy(mock_url)
    try:
        instance.start()
    except FileNotFoundError as e:
        pytest.exit(f"{e} (or cargo build -p llmtrace-proxy)", 2)
    try:
        yield instance.url, instance.spans_file
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def proxy_url(proxy):
    return proxy[0]


@pytest.fixture(scope="session")
def spans(proxy):
    from proxyutil import Spans

    return Spans(proxy[1])
