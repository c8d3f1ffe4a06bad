"""The page at `/`, in headless Chromium: load it, filter, open a run and a program, and save a screenshot that
must not be blank; a real 4 s `glia run` has its memory and CPU timelines drawn (test_page_views.py checks the
charts' axes, tooltips and colours). Uses Debian's chromium through
Playwright (no browser download)."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.conftest import ReceiverServer
from tests.helpers import GLIA, chromium, client_env, expected, run_id, seed_runs


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit PNG (what Chromium's screenshots are)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def test_page_filters_opens_a_run_and_a_program(
    database_url: str, receiver_factory: Callable[..., ReceiverServer], tmp_path: Path
) -> None:
    seed_runs(database_url)
    receiver = receiver_factory()
    with chromium() as browser:
        check_page(browser, receiver, tmp_path)


def check_page(browser: Any, receiver: ReceiverServer, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(receiver.url + "/")
    page.wait_for_selector("#runs tbody tr")
    rows = page.locator("#runs tbody tr")
    assert rows.count() == 50
    assert rows.first.get_attribute("data-run-id") == run_id(1)

    # filter: prog-07 has runs 7, 57 and 107
    page.fill("#filters input[name=program]", "prog-07")
    page.click("#filters button[type=submit]")
    # predicates are functions: Playwright would eval a bare expression, which the page's policy refuses
    page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 3")
    assert [rows.nth(i).get_attribute("data-run-id") for i in range(3)] == [run_id(i) for i in (7, 57, 107)]
    assert page.locator("#count").inner_text() == "3 runs"

    # open run 7: its attributes and its memory and CPU over time
    rows.first.click()
    page.wait_for_selector("#memory-plot canvas")
    detail = page.locator("#run-detail")
    assert "prog-07" in detail.inner_text()
    shown = set(page.locator("#run-detail dd.custom").all_inner_texts())
    assert shown == {f'"{v}"' if isinstance(v, str) else str(v) for v in expected(7)["attributes"].values()}
    points = page.locator("#memory-plot").get_attribute("data-points")
    assert points == str(int(expected(7)["wall_seconds"] // 10) + 1)
    assert page.locator("#cpu-plot canvas").count() == 1
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

    # the program's runs: peak memory and wall time across them
    page.click("#program-link")
    page.wait_for_selector("#program-memory-plot canvas")
    assert page.locator("#program-memory-plot").get_attribute("data-points") == "3"
    assert page.locator("#program-wall-plot").get_attribute("data-points") == "3"
    shot = tmp_path / "program.png"
    page.screenshot(path=str(shot), full_page=True)

    assert not errors, errors
    assert all(url.startswith(receiver.url) for url in requests), "the page loaded something from elsewhere"
    for path in (tmp_path / "run.png", shot):
        width, height, pixels = png_pixels(path.read_bytes())
        assert width >= 1000 and height >= 600
        colours = {row[i : i + 3] for row in pixels[::4] for i in range(0, len(row), 12)}
        # a blank page is one colour; this one has text, a table, plots in two colours
        assert len(colours) > 20, f"{path.name} looks blank ({len(colours)} colours)"
        non_white = sum(row[i : i + 3] != b"\xff\xff\xff" for row in pixels for i in range(0, len(row), 12))
        assert non_white > 500


def test_page_asks_for_a_key_when_keys_exist(
    database_url: str, receiver_factory: Callable[..., ReceiverServer]
) -> None:
    import asyncio

    import asyncpg

    from receiver import auth

    seed_runs(database_url, n=10, metrics_every=0)

    async def make() -> str:
        conn = await asyncpg.connect(database_url)
        try:
            key, _ = await auth.create_key(conn, "page", "read")
            return key
        finally:
            await conn.close()

    key = asyncio.run(make())
    receiver = receiver_factory(key_cache_seconds=0)
    with chromium() as browser:
        page = browser.new_page()
        page.goto(receiver.url + "/")
        page.wait_for_selector("#key-form:not([hidden])")
        assert "requires an API key" in page.locator("#key-message").inner_text()
        assert page.locator("#runs tbody tr").count() == 0
        page.fill("#key-form input[name=key]", key)
        page.click("#key-form button")
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 10")


CPU_BUSY = """
import time
x = b"x" * (30 * 1024 * 1024)
end = time.monotonic() + 4
while time.monotonic() < end:
    pass
"""


def test_a_four_second_command_has_memory_and_cpu_timelines_on_its_page(
    receiver: ReceiverServer, sql: Callable[..., list[dict[str, Any]]], tmp_path: Path
) -> None:
    prog = tmp_path / "busy.py"
    prog.write_text(CPU_BUSY)
    env = client_env(receiver.url, tmp_path / "spool")  # the default sampling settings
    proc = subprocess.run([GLIA, "run", "--", sys.executable, str(prog)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (run,) = sql("SELECT span_id FROM spans")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{receiver.url}/#run={run['span_id']}")
        page.wait_for_selector("#cpu-plot[data-points] canvas")
        cpu_svg = page.locator("#cpu-plot")
        memory_svg = page.locator("#memory-plot")
        # what was drawn, not only pixels: the CPU chart has its points, and they show a busy core
        cpu_points = int(cpu_svg.get_attribute("data-points") or 0)
        assert cpu_points >= 3, page.locator("#run-detail").inner_text()
        drawn = cpu_svg.evaluate("(fig) => fig.uplot.data[1].filter((v) => v !== null).length")
        assert drawn == cpu_points
        assert float(cpu_svg.get_attribute("data-y-max") or 0) > 30  # percent of one core
        assert int(memory_svg.get_attribute("data-points") or 0) >= 3
        assert float(memory_svg.get_attribute("data-y-max") or 0) > 30 * 1024 * 1024
        assert page.locator("#run-detail .plots .nodata").count() == 0
        shot = tmp_path / "timelines.png"
        page.locator("#run-detail .plots").screenshot(path=str(shot))
        assert not errors, errors
    width, height, pixels = png_pixels(shot.read_bytes())
    assert width >= 400 and height >= 150
    step = len(pixels[0]) // width  # RGB or RGBA
    # the charts' lines and points are drawn in the accent colour (#2563eb); antialiasing leaves some exact pixels
    accent = sum(row[i : i + 3] == b"\x25\x63\xeb" for row in pixels for i in range(0, len(row), step))
    assert accent > 50, f"{shot} shows no line ({accent} accent pixels)"


# --- seeding through the real OTLP endpoint ---------------------------------------------------------------------


def otlp_value(v: object) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": str(v)}


def run_span(
    trace_id: str,
    span_id: str,
    name: str,
    start_ns: int,
    end_ns: int,
    attrs: dict[str, object],
    parent: str | None = None,
    error: bool = False,
) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(end_ns),
        "attributes": [{"key": k, "value": otlp_value(v)} for k, v in attrs.items()],
        "status": {"code": 2, "message": "exit code 137"} if error else {"code": 1},
    }
    if parent:
        span["parentSpanId"] = parent
    return span


def post_runs(receiver: ReceiverServer, service: str, *spans: dict[str, Any]) -> None:
    """One OTLP/JSON request to the receiver's /v1/traces, as a client sends it: 200 and no partial success."""
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": "glia_otel"}, "spans": list(spans)}],
            }
        ]
    }
    response = httpx.post(
        f"{receiver.url}/v1/traces", content=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200 and response.content == b"{}", response.text


MIB = 1024 * 1024


def test_the_run_view_and_the_table_name_both_memory_figures(
    receiver: ReceiverServer, sql: Callable[..., list[dict[str, Any]]], tmp_path: Path
) -> None:
    now = time.time_ns()
    command = {"glia.run.kind": "command", "glia.memory.peak_rss_method": "wait4"}
    killed = run_span(
        "a" * 32, "a" * 16, "killed", now - 9_000_000_000, now - 8_000_000_000,
        {**command, "process.exit.code": 137, "glia.memory.peak_rss_bytes": 100 * MIB,
         "glia.memory.tree_peak_bytes": 300 * MIB, "glia.memory.tree_peak_method": "cgroup",
         "glia.memory.oom_kills": 1},
        error=True,
    )  # fmt: skip
    tree = run_span(
        "b" * 32, "b" * 16, "tree", now - 7_000_000_000, now - 6_000_000_000,
        {**command, "process.exit.code": 0, "glia.memory.peak_rss_bytes": 110 * MIB,
         "glia.memory.tree_peak_bytes": 330 * MIB, "glia.memory.tree_peak_method": "sampled-tree",
         "glia.memory.oom_kills": 0},
    )  # fmt: skip
    block = run_span(
        "c" * 32, "c" * 16, "block", now - 5_000_000_000, now - 4_000_000_000,
        {"glia.run.kind": "block", "glia.memory.peak_rss_bytes": 520 * MIB, "glia.memory.peak_rss_method": "hwm-reset"},
    )  # fmt: skip
    post_runs(receiver, "mem", killed, tree, block)
    stored = {r["span_id"]: r for r in sql("SELECT span_id, peak_rss_bytes, tree_peak_bytes, oom_kills FROM spans")}
    assert stored["a" * 16]["tree_peak_bytes"] == 300 * MIB and stored["a" * 16]["oom_kills"] == 1

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(receiver.url + "/")
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 3")
        heads = page.locator("#runs thead th").all_inner_texts()
        assert "PEAK RSS" in heads and "TREE PEAK" in heads, heads  # uppercased by the style sheet
        cells = {
            r.get_attribute("data-run-id"): (
                r.locator("td.peak-rss").inner_text(),
                r.locator("td.tree-peak").inner_text(),
            )
            for r in page.locator("#runs tbody tr").all()
        }
        assert cells == {
            "a" * 16: ("100.0 MiB", "300.0 MiB OOM"),
            "b" * 16: ("110.0 MiB", "330.0 MiB"),
            "c" * 16: ("520.0 MiB", "-"),
        }
        # the table fits the window: no column pushed out of sight
        assert page.evaluate("() => document.querySelector('#runs').scrollWidth <= window.innerWidth")

        page.goto(f"{receiver.url}/#run={'a' * 16}")
        page.wait_for_selector("#run-detail #tree-peak-bytes")
        detail = page.locator("#run-detail")
        assert page.locator("#peak-rss-bytes").inner_text() == "100.0 MiB (wait4)"
        assert "GNU time" in (page.locator("#peak-rss-bytes").get_attribute("title") or "")
        assert page.locator("#tree-peak-bytes").inner_text() == "300.0 MiB (cgroup)"
        assert "memory limit" in (page.locator("#tree-peak-bytes").get_attribute("title") or "")
        labels = detail.locator("dt").all_inner_texts()
        assert "peak_rss_bytes largest process (GNU time %M)" in labels, labels
        assert "tree_peak_bytes whole tree" in labels, labels
        assert page.locator("#oom-kills").inner_text().startswith("1 ")
        page.screenshot(path=str(tmp_path / "memory.png"), full_page=True)

        page.goto(f"{receiver.url}/#run={'b' * 16}")
        page.wait_for_function("() => document.querySelector('#tree-peak-bytes')?.textContent.includes('330')")
        assert page.locator("#tree-peak-bytes").inner_text() == "330.0 MiB (sampled-tree)"
        assert page.locator("#oom-kills").count() == 0  # none killed: not shown

        page.goto(f"{receiver.url}/#run={'c' * 16}")
        page.wait_for_function("() => document.querySelector('#peak-rss-bytes')?.textContent.includes('520')")
        assert page.locator("#peak-rss-bytes").inner_text() == "520.0 MiB (hwm-reset)"
        assert page.locator("#tree-peak-bytes").count() == 0  # a block has no tree figure
        assert not errors, errors


# --- a workflow's view ------------------------------------------------------------------------------------------

WF_TRACE, WF_SPAN, WF_ID = "d" * 32, "d" * 16, "3f2c9a4e-5b1d-4c8e-9f00-000000000001"
S = 1_000_000_000
# (span id, service = process, task name, attempt, start s, end s, status error?, exit, peak MiB, oom kills)
TASKS = [
    ("1000000000000001", "index", "index (GRCh38)", 1, 0.0, 10.0, False, 0, 100, 0),
    ("1000000000000002", "align", "align (S1)", 1, 10.0, 20.0, True, 137, 900, 1),
    ("1000000000000003", "align", "align (S2)", 1, 10.5, 30.5, False, 0, 800, 0),
    ("1000000000000004", "align", "align (S1)", 2, 20.0, 40.0, False, 0, 1536, 0),
    ("1000000000000005", "qc", "qc (S3)", 1, 30.0, 35.0, False, 0, 60, 0),  # sent alone, in a trace of its own
    ("1000000000000006", "report", "report", 1, 40.0, 60.0, False, 0, 50, 0),
]


def seed_workflows(receiver: ReceiverServer, t0: int) -> None:
    """A Nextflow-like workflow span with six task attempts (one OOM-killed and retried, one in a trace of its own
    whose parent never arrives), and a second workflow whose own span never arrives, through /v1/traces."""
    workflow = {"glia.workflow.engine": "nextflow", "glia.workflow.run_id": WF_ID, "glia.workflow.name": "rnaseq"}
    post_runs(
        receiver,
        "nextflow",
        run_span(WF_TRACE, WF_SPAN, "rnaseq", t0, t0 + 61 * S, {"glia.run.kind": "workflow", **workflow}),
    )
    for span_id, process, task, attempt, start, end, error, code, mib, oom in TASKS:
        alone = process == "qc"
        attrs = {
            "glia.run.kind": "task", **workflow, "glia.task.name": task, "glia.task.attempt": attempt,
            "process.exit.code": code, "glia.memory.peak_rss_bytes": mib * MIB, "glia.memory.peak_rss_method": "wait4",
            "glia.memory.tree_peak_bytes": mib * MIB + 3 * MIB, "glia.memory.tree_peak_method": "cgroup",
            "glia.memory.oom_kills": oom,
        }  # fmt: skip
        span = run_span(
            "e" * 32 if alone else WF_TRACE, span_id, task, t0 + int(start * S), t0 + int(end * S), attrs,
            parent=None if alone else WF_SPAN, error=error,
        )  # fmt: skip
        post_runs(receiver, process, span)
    other = {"glia.workflow.engine": "snakemake", "glia.workflow.run_id": "wf-two", "glia.workflow.name": "two"}
    for i in (1, 2):
        attrs = {"glia.run.kind": "task", **other, "glia.task.name": f"step{i}", "glia.task.attempt": 1}
        span = run_span(
            "f" * 32, f"200000000000000{i}", f"step{i}", t0 + i * S, t0 + (i + 1) * S, attrs, parent="f" * 16
        )
        post_runs(receiver, f"step{i}", span)


def timeline_rows(page: Any) -> list[dict[str, Any]]:
    """Each row of the workflow timeline as drawn: its run id, status, link, bar geometry and figures text."""
    rows: list[dict[str, Any]] = page.evaluate(
        """() => [...document.querySelectorAll('#workflow-timeline svg a.task')].map((a) => {
             const bar = a.querySelector('rect.bar');
             return { id: a.dataset.runId, status: a.dataset.status, href: a.getAttribute('href'),
                      cls: bar.getAttribute('class'), x: +bar.getAttribute('x'), w: +bar.getAttribute('width'),
                      label: a.querySelector('.label').textContent, figures: a.querySelector('.figures').textContent };
           })"""
    )
    return rows


def test_a_workflow_view_draws_its_tasks_as_a_timeline_with_their_peak_memory(
    receiver: ReceiverServer, sql: Callable[..., list[dict[str, Any]]], tmp_path: Path
) -> None:
    t0 = time.time_ns() - 600 * S
    seed_workflows(receiver, t0)
    stored = sql("SELECT count(*) AS n FROM spans WHERE workflow_run_id = $1 AND run_kind = 'task'", WF_ID)
    assert stored[0]["n"] == len(TASKS)
    order = [t[0] for t in sorted(TASKS, key=lambda t: t[4])]

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        # from the workflow span's run view
        page.goto(f"{receiver.url}/#run={WF_SPAN}")
        page.click("#run-detail #workflow-link")
        page.wait_for_selector(f"#workflow-timeline svg[data-tasks='{len(TASKS)}']")
        detail = page.locator("#workflow-detail")
        assert "Workflow rnaseq" in detail.inner_text()
        assert page.locator("#run-detail").is_hidden()
        rows = timeline_rows(page)
        assert [r["id"] for r in rows] == order  # one row per attempt, in start order, the lone qc task among them
        by_id = {r["id"]: r for r in rows}
        for span_id, _, task, _, _start, _end, error, _, mib, _ in TASKS:
            row = by_id[span_id]
            assert row["status"] == ("error" if error else "ok")
            assert row["cls"] == f"bar {row['status']}"
            assert row["href"] == f"#run={span_id}"
            assert row["label"] == (task + " #2" if span_id == "1000000000000004" else task)  # the retry
            assert row["figures"].endswith(" / " + ("1.5 GiB" if mib == 1536 else f"{mib:.1f} MiB"))
        # bars on one time axis: widths in proportion to the tasks' wall times, starts to their start times
        unit = by_id["1000000000000001"]["w"] / 10.0  # px a second
        x0 = by_id["1000000000000001"]["x"]
        for span_id, *_, start, end, _error, _code, _mib, _oom in TASKS:
            assert abs(by_id[span_id]["w"] - (end - start) * unit) < 1.0, span_id
            assert abs(by_id[span_id]["x"] - (x0 + start * unit)) < 1.0, span_id
        # the table beside it: every attempt, the OOM-killed one marked
        table = page.locator("#workflow-tasks tbody tr")
        assert [table.nth(i).get_attribute("data-run-id") for i in range(table.count())] == order
        killed = page.locator("#workflow-tasks tr[data-run-id='1000000000000002']")
        assert "OOM" in killed.inner_text() and "137" in killed.inner_text()
        shot = tmp_path / "workflow.png"
        detail.screenshot(path=str(shot))

        # a bar leads to its task, and the task back to its workflow
        page.click("#workflow-timeline a.task[data-run-id='1000000000000003'] rect")
        page.wait_for_selector("#run-detail:not([hidden])")
        page.wait_for_function("() => location.hash === '#run=1000000000000003'")
        page.wait_for_function("() => document.querySelector('#run-detail h2')?.textContent.includes('align (S2)')")
        assert page.locator("#workflow-detail").is_hidden()
        assert page.locator("#workflow-link").inner_text() == "its workflow rnaseq"
        page.click("#workflow-link")
        page.wait_for_selector(f"#workflow-timeline svg[data-tasks='{len(TASKS)}']")
        assert [r["id"] for r in timeline_rows(page)] == order

        # by the workflow span's run id, the same tasks
        page.goto(f"{receiver.url}/#workflow={WF_SPAN}")
        page.wait_for_function("() => location.hash === '#workflow=" + WF_SPAN + "'")
        page.wait_for_selector(f"#workflow-timeline svg[data-tasks='{len(TASKS)}']")
        assert [r["id"] for r in timeline_rows(page)] == order

        # a workflow whose own span never arrived: reached from a task, its tasks grouped all the same
        page.goto(f"{receiver.url}/#run=2000000000000002")
        page.wait_for_function("() => document.querySelector('#run-detail h2')?.textContent.includes('step2')")
        page.click("#workflow-link")
        page.wait_for_selector("#workflow-timeline svg[data-tasks='2']")
        assert "has not arrived" in page.locator("#workflow-detail").inner_text()
        assert [r["id"] for r in timeline_rows(page)] == ["2000000000000001", "2000000000000002"]
        assert not errors, errors
        assert all(url.startswith(receiver.url) for url in requests), "the page loaded something from elsewhere"

    width, height, pixels = png_pixels(shot.read_bytes())
    assert width >= 1000 and height >= 6 * 18
    step = len(pixels[0]) // width
    colours = [row[i : i + 3] for row in pixels for i in range(0, len(row), step)]
    ok_px, error_px = colours.count(b"\x2f\x9e\x44"), colours.count(b"\xc0\x26\x2d")
    assert ok_px > 500 and error_px > 50, (ok_px, error_px)  # bars drawn in their status colours
