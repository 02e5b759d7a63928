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
