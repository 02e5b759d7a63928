"""The trace viewer in headless Chromium, after `llmtrace-proxy demo`'s traffic.

Run by tests/browser/run.sh, which installs Chromium and Playwright and builds the proxy
(LLMTRACE_BROWSER_PROXY, LLMTRACE_BROWSER_CHROMIUM).
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

PROXY = os.environ.get("LLMTRACE_BROWSER_PROXY")
CHROMIUM = os.environ.get("LLMTRACE_BROWSER_CHROMIUM")
SHOTS = pathlib.Path(__file__).parent / "screenshots"

if not PROXY or not CHROMIUM:
    pytest.skip("run through tests/browser/run.sh", allow_module_level=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def viewer():
    """The demo, serving its viewer; yields the viewer's base URL."""
    admin = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    demo = subprocess.Popen(
        [PROXY, "--admin", admin, "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    # The read below blocks: a demo that never prints its address is killed after 120 s.
    timer = threading.Timer(120, demo.kill)
    timer.start()
    try:
        url = None
        for line in demo.stdout:
            if line.startswith("Trace viewer: "):
                url = line.split()[2]
                break
        timer.cancel()
        assert url == f"http://{admin}/ui", url
        yield f"http://{admin}"
    finally:
        timer.cancel()
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=15)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()


def streamed_chat(base):
    """The streamed OpenAI chat's trace id, its GenAI span's TTFT and duration (seconds)."""
    with urllib.request.urlopen(f"{base}/api/traces?limit=10") as response:
        traces = json.load(response)["data"]
    for trace in traces:
        for span in trace["spans"]:
            tags = {t["key"]: t["value"] for t in span["tags"]}
            if span["operationName"] == "chat gpt-4o" and tags.get("gen_ai.request.stream"):
                ttft = tags["gen_ai.response.time_to_first_chunk"]
                return trace["traceID"], ttft, span["duration"] / 1e6
    raise AssertionError(f"no streamed gpt-4o chat among {len(traces)} traces")


def test_the_viewer_lists_the_exchanges_and_marks_the_first_token(viewer):
    trace_id, ttft, duration = streamed_chat(viewer)
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 640})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        page.goto(f"{viewer}/")  # redirects to /ui
        assert page.url.endswith("/ui"), page.url
        rows = page.locator("tr[data-trace-id]")
        assert rows.count() == 4
        models = rows.locator("td:nth-child(3)").all_inner_texts()
        assert sorted(models) == ["claude-sonnet-4-6", "gpt-4o", "gpt-4o", "gpt-4o-mini"]
        page.screenshot(path=str(SHOTS / "viewer-list.png"), full_page=True)

        page.locator(f'tr[data-trace-id="{trace_id}"] a').first.click()
        page.wait_for_url(f"**/ui/traces/{trace_id}")
        bar = page.locator(".row.genai .bar").bounding_box()
        marker = page.locator(".row.genai .bar .first-token").bounding_box()
        # The marker is 3 px wide, centred on its position.
        at = (marker["x"] + marker["width"] / 2 - bar["x"]) / bar["width"]
        expected = ttft / duration
        assert abs(at - expected) <= 0.02, f"marker at {at:.4f} of the bar, TTFT/duration {expected:.4f}"
        assert page.locator("#trace-id").inner_text() == trace_id
        page.screenshot(path=str(SHOTS / "viewer-trace.png"))
        assert not errors, errors
        browser.close()


def test_the_map_and_the_overview_draw_the_demo_traffic(viewer):
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        page.goto(f"{viewer}/ui")
        page.locator("header nav a", has_text="map").click()
        page.wait_for_url("**/ui/map")
        gateway = page.locator('svg.map g.node.service[data-node="llmtrace-proxy"]')
        assert gateway.count() == 1, page.content()
        upstreams = page.locator("svg.map g.node.upstream")
        assert upstreams.count() >= 1
        calls = page.locator('svg.map g.edge[data-parent="llmtrace-proxy"]')
        counts = [int(calls.nth(i).get_attribute("data-calls")) for i in range(calls.count())]
        assert counts and max(counts) > 0, counts
        assert page.locator("table.edges tbody tr").count() == calls.count()
        page.screenshot(path=str(SHOTS / "map.png"), full_page=True)

        page.locator("header nav a", has_text="overview").click()
        page.wait_for_url("**/ui/overview")
        charts = page.locator("figure.chart svg")
        assert charts.count() >= 1
        lines = charts.first.locator("g.series path.line")
        assert lines.count() >= 1, page.content()
        models = page.locator("table.models tbody tr").all_inner_texts()
        assert any("gpt-4o" in m for m in models), models
        page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)
        assert not errors, errors
        browser.close()
