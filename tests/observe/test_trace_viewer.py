"""``keel ui``: the trace viewer over HTTP, and in a real headless Chromium driven by Playwright."""

from __future__ import annotations

import http.client
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
from conftest import DemoRuns, record_demo_runs
from opentelemetry import trace

from keel.errors import ConfigError
from keel.observe import setup_tracing, shutdown_tracing
from keel.observe.ui import TraceViewer, serve

HOSTILE_NAME = "<script>alert('name')</script>"
HOSTILE_VALUE = "<img src=x onerror=alert('value')>"
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TraceViewer, DemoRuns, str]]:
    data_dir = tmp_path_factory.mktemp("viewer")
    store = setup_tracing(data_dir / "traces.db")
    try:
        runs = record_demo_runs(store)
        with trace.get_tracer("test").start_as_current_span(HOSTILE_NAME) as span:
            span.set_attribute("keel.note", HOSTILE_VALUE)
            span.add_event("hostile", {"detail": HOSTILE_VALUE})
        hostile = f"{span.get_span_context().trace_id:032x}"
    finally:
        shutdown_tracing()
    started = serve(data_dir / "traces.db", port=0)
    yield started, runs, hostile
    started.close()


def _get(url: str) -> tuple[int, dict[str, str], str]:
    with urlopen(url) as response:
        return response.status, dict(response.headers), response.read().decode()


def test_pages_escape_untrusted_span_content(viewer: tuple[TraceViewer, DemoRuns, str]) -> None:
    server, _, hostile = viewer
    status, headers, body = _get(f"{server.url}trace/{hostile}")
    assert status == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert HOSTILE_NAME not in body and HOSTILE_VALUE not in body
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=alert(&#x27;value&#x27;)&gt;" in body
    status, _, body = _get(f"{server.url}?{urlencode({'q': HOSTILE_VALUE})}")
    assert status == 200 and HOSTILE_VALUE not in body and hostile[:12] in body


def test_unknown_pages_and_traces_are_404_and_foreign_hosts_are_refused(
    viewer: tuple[TraceViewer, DemoRuns, str],
) -> None:
    server, _, _ = viewer
    for path in ("/nope", "/trace/abcdef0123"):
        with pytest.raises(Exception, match="404"):
            urlopen(f"{server.url.rstrip('/')}{path}")
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/", headers={"Host": "evil.example:80"})
    assert conn.getresponse().status == 421
    conn.close()


def test_a_busy_port_is_a_config_error(viewer: tuple[TraceViewer, DemoRuns, str]) -> None:
    server, _, _ = viewer
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
        TraceViewer(server.store.path, port=port)


def _png(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values in the image data of a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"IDAT":
            chunks.append(data[offset + 8 : offset + 8 + length])
        offset += 12 + length
    pixels = zlib.decompress(b"".join(chunks))
    return width, height, len(set(pixels))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_browse_filter_open_a_run_and_inspect_spans(
    viewer: tuple[TraceViewer, DemoRuns, str], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    server, runs, hostile = viewer
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=BROWSER_ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            # The run list: every run, newest first.
            page.goto(server.url)
            rows = page.locator("table.runs tbody tr")
            assert rows.count() == 3
            assert page.locator(f"tr[data-trace='{runs.ok_trace}']").inner_text().count("ok")
            page.screenshot(path=str(tmp_path / "list.png"))

            # Errors only: the checkbox submits the filter by itself.
            with page.expect_navigation():
                page.check("#errors-only")
            assert "errors=1" in page.url
            assert rows.count() == 1
            assert page.locator("table.runs tbody tr .badge.error").count() == 1

            # Into the failed run: its tree, then the failed tool call's details.
            page.click(f"a[href='/trace/{runs.failed_trace}']")
            page.wait_for_url(f"**/trace/{runs.failed_trace}")
            tree = page.locator("table.tree tbody tr")
            assert tree.count() == 4
            assert page.locator("tr.span-row.failed").count() == 3
            divide = page.locator("tr.span-row", has_text="execute_tool divide")
            details = page.locator("section.details:has(h3:text-is('execute_tool divide'))")
            assert not details.is_visible()
            divide.click()
            assert details.is_visible()
            assert "selected" in (divide.get_attribute("class") or "")
            assert "division by zero" in details.locator(".status").inner_text()
            assert "tool_error" in details.locator("table.attrs").inner_text()
            page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)

            # The graph run: the path of nodes it visited, by session.
            page.goto(f"{server.url}?session={runs.session}")
            assert rows.count() == 1
            page.click(f"a[href='/trace/{runs.ok_trace}']")
            page.wait_for_url(f"**/trace/{runs.ok_trace}")
            assert page.locator("ol.path li").all_inner_texts() == ["plan", "ask", "finish"]
            assert "$0.000100" in page.locator("dl.facts").inner_text()
            page.screenshot(path=str(tmp_path / "graph.png"))

            # Hostile content is shown as text and runs nothing.
            page.goto(f"{server.url}trace/{hostile}")
            assert page.locator("h1").inner_text() == HOSTILE_NAME
            page.locator("tr.span-row").first.click()
            assert HOSTILE_VALUE in page.locator("section.details table.attrs").first.inner_text()
        finally:
            browser.close()
    assert dialogs == []

    shots = {name: _png(tmp_path / f"{name}.png") for name in ("list", "failed", "graph")}
    assert shots["list"][:2] == (1280, 800)
    assert shots["graph"][:2] == (1280, 800)
    width, height, _ = shots["failed"]
    assert width == 1280 and height > 800  # the full page, details included
    for name, (_, _, distinct) in shots.items():
        assert distinct > 20, f"{name}.png looks blank"
    assert (tmp_path / "list.png").read_bytes() != (tmp_path / "graph.png").read_bytes()


def test_keel_ui_serves_the_store_of_the_data_dir(
    viewer: tuple[TraceViewer, DemoRuns, str],
) -> None:
    import os
    import subprocess
    import sys

    server, runs, _ = viewer
    env = {**os.environ, "KEEL_DATA_DIR": str(server.store.path.parent)}
    env.pop("KEEL_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "ui", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "Keel trace viewer on http://127.0.0.1:" in line
        url = line.split(" on ", 1)[1].split()[0]
        status, _, body = _get(url)
        assert status == 200 and runs.ok_trace[:12] in body
    finally:
        process.terminate()
        process.wait(10)
