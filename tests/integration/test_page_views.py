"""The page made for looking, in headless Chromium: the runs table with run names and statuses and its filters kept
in the URL and driven from the keyboard; a run's charts and a program's charts by script version, each with axes,
units and a value under the mouse. Runs come from real `glia run` commands or through the real OTLP endpoint, and
every screenshot is checked for what it shows (tick labels, a tooltip's value, the versions' colours)."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.conftest import ReceiverServer
from tests.helpers import GLIA, Sql, chromium, client_env, poll

S = 1_000_000_000
MIB = 1024 * 1024


# --- pictures -------------------------------------------------------------------------------------------------


def png_rgb(data: bytes) -> tuple[int, int, list[list[bytes]]]:
    """Width, height and the RGB triple of every pixel of an 8-bit PNG (what Chromium's screenshots are)."""
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
    raw, stride, prev = zlib.decompress(idat), width * channels, bytearray(width * channels)
    rows: list[list[bytes]] = []
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
        rows.append([bytes(line[i : i + 3]) for i in range(0, stride, channels)])
        prev = line
    return width, height, rows


def count(pixels: list[list[bytes]], colour: str, box: tuple[int, int, int, int] | None = None) -> int:
    """Pixels of exactly `colour` (#rrggbb), in `box` (x0, y0, x1, y1) when given."""
    want = bytes.fromhex(colour.lstrip("#"))
    x0, y0, x1, y1 = box or (0, 0, len(pixels[0]), len(pixels))
    return sum(px == want for row in pixels[y0:y1] for px in row[x0:x1])


def to_fixed(value: float, digits: int) -> str:
    """`value.toFixed(digits)` as the page's JavaScript writes it: the exact value rounded half up. Python's `:.1f`
    rounds an exact half to even (85.25 MiB, a whole number of 4 KiB pages, is 85.2 there and 85.3 on the page)."""
    return str(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def dark(pixels: list[list[bytes]], box: tuple[int, int, int, int]) -> int:
    """Pixels in `box` dark enough to be text (tick labels are drawn in the page's ink colour, #1d2330)."""
    x0, y0, x1, y1 = box
    return sum(sum(px) < 450 for row in pixels[y0:y1] for px in row[x0:x1])


# --- the browser ----------------------------------------------------------------------------------------------


@contextmanager
def browser_page(receiver: ReceiverServer) -> Iterator[Any]:
    """A page in headless Chromium that fails the test on a script error or a request to another origin."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        elsewhere: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("request", lambda r: None if r.url.startswith(receiver.url) else elsewhere.append(r.url))
        yield page
        assert not errors, errors
        assert not elsewhere, elsewhere


def chart(page: Any, selector: str) -> dict[str, Any]:
    """What a chart drew: its point count, tick labels and the plot area's box in the page."""
    info: dict[str, Any] = page.locator(selector).evaluate(
        """(fig) => { const r = fig.uplot.over.getBoundingClientRect();
             return { points: +fig.dataset.points, x: JSON.parse(fig.dataset.xTicks), y: JSON.parse(fig.dataset.yTicks),
                      box: [r.left + scrollX, r.top + scrollY, r.right + scrollX, r.bottom + scrollY],
                      labels: fig.uplot.axes.map((a) => a.label) }; }"""
    )
    return info


def hover(page: Any, selector: str, x: float, y: float) -> str:
    """Move the mouse to the point (x, y) of the chart's scales and return the tooltip's text."""
    page.locator(selector).scroll_into_view_if_needed()
    pos = page.locator(selector).evaluate(
        """(fig, [x, y]) => { const u = fig.uplot, r = u.over.getBoundingClientRect();
             return [r.left + u.valToPos(x, "x"), r.top + u.valToPos(y, "y")]; }""",
        [x, y],
    )
    page.mouse.move(pos[0] - 30, pos[1] - 30)
    page.mouse.move(pos[0], pos[1], steps=3)
    tip = page.locator(f"{selector} .tip")
    tip.wait_for(state="visible", timeout=5000)
    text: str = tip.inner_text()
    return text


# --- runs, through real clients and the real OTLP endpoint ----------------------------------------------------


def otlp_value(v: object) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": str(v)}


def post_run(
    receiver: ReceiverServer,
    span_id: str,
    name: str,
    service: str,
    start_ns: int,
    wall_s: float,
    attrs: dict[str, object],
    resource: dict[str, object],
    status: int = 0,
) -> None:
    """One run as an OTLP/JSON request to /v1/traces: 200 and no partial success."""
    span = {
        "traceId": span_id * 2,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + int(wall_s * S)),
        "attributes": [{"key": k, "value": otlp_value(v)} for k, v in attrs.items()],
        "status": {"code": status},
    }
    res = {"service.name": service, **resource}
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": k, "value": otlp_value(v)} for k, v in res.items()]},
                "scopeSpans": [{"scope": {"name": "glia_otel"}, "spans": [span]}],
            }
        ]
    }
    response = httpx.post(
        f"{receiver.url}/v1/traces", content=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200 and response.content == b"{}", response.text


# --- the runs table -------------------------------------------------------------------------------------------


def test_the_runs_table_names_runs_says_ok_and_keeps_its_filters_in_the_url(
    receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    for args in (["--name", "align", "--", sys.executable, "-c", "pass"],
                 ["--name", "align", "--", sys.executable, "-c", "raise SystemExit(3)"],
                 ["--name", "index", "--", sys.executable, "-c", "pass"]):  # fmt: skip
        subprocess.run([GLIA, "run", *args], env=env, capture_output=True, text=True, timeout=60)
    stored = sql("SELECT name, service_name, status_code, exit_code FROM spans ORDER BY start_time")
    assert [(r["name"], r["exit_code"]) for r in stored] == [("align", 0), ("align", 3), ("index", 0)]
    assert stored[0]["status_code"] != 1  # a successful run's span status is not set: the page must still say ok
    program = stored[0]["service_name"]
    now = time.time_ns()
    post_run(receiver, "0a" * 8, "report", "reporter", now - 3600 * S, 2.0, {"glia.run.kind": "block"}, {})

    with browser_page(receiver) as page:
        page.goto(receiver.url + "/")
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 4")
        heads = page.locator("#runs thead th").all_inner_texts()
        assert heads[:3] == ["STARTED (UTC)", "NAME", "PROGRAM"], heads  # uppercased by the style sheet
        rows = [
            tuple(r.locator(f"td.{cell}").inner_text() for cell in ("name", "program", "status"))
            for r in page.locator("#runs tbody tr").all()
        ]
        assert rows == [("index", program, "ok"), ("align", program, "error"), ("align", program, "ok"),
                        ("report", "reporter", "ok")]  # fmt: skip
        assert page.evaluate("() => document.querySelector('#runs').scrollWidth <= window.innerWidth")
        shot = tmp_path / "table.png"
        page.screenshot(path=str(shot), full_page=True)

        # the keyboard: "/" goes to the filters, Enter applies them, and they land in the URL
        page.keyboard.press("/")
        assert page.evaluate("() => document.activeElement.name") == "name"
        page.keyboard.type("align")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 2")
        assert page.evaluate("() => location.search") == "?name=align"
        assert {r.locator("td.name").inner_text() for r in page.locator("#runs tbody tr").all()} == {"align"}
        # a choice from a list applies at once
        page.select_option("#filters select[name=status]", "error")
        page.wait_for_function("() => location.search === '?name=align&status=error'")
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 1")
        assert page.locator("#runs tbody td.status").inner_text() == "error"
        # Back undoes the last filter, the form follows the URL
        page.go_back()
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 2")
        assert page.locator("#filters select[name=status]").input_value() == ""
        assert page.locator("#filters input[name=name]").input_value() == "align"

        # a shared URL opens with its filters in the form and the table
        page.goto(f"{receiver.url}/?program={program}&sort=-wall_seconds")
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 3")
        assert page.locator("#filters input[name=program]").input_value() == program
        assert page.locator("#filters select[name=sort]").input_value() == "-wall_seconds"

        # rows by j/k, Enter opens one, Esc closes it and gives the row its focus back
        page.locator("body").press("j")
        page.keyboard.press("j")
        second = page.evaluate("() => document.activeElement.dataset.runId")
        assert second == page.locator("#runs tbody tr").nth(1).get_attribute("data-run-id")
        page.keyboard.press("k")
        page.keyboard.press("j")
        page.keyboard.press("Enter")
        page.wait_for_function(f"() => location.hash === '#run={second}'")
        page.wait_for_selector("#run-detail:not([hidden]) #fact-name")
        assert page.locator("#fact-name").inner_text() in ("align", "index")
        assert page.evaluate("() => location.search") == f"?program={program}&sort=-wall_seconds"
        page.keyboard.press("Escape")
        page.wait_for_selector("#run-detail", state="hidden")
        assert page.evaluate("() => location.hash") == ""
        assert page.evaluate("() => document.activeElement.dataset.runId") == second

    width, _, pixels = png_rgb(shot.read_bytes())
    assert width == 1280
    # the failed run's status in red, the others' in ink: text in the table, not a blank page
    assert count(pixels, "#c0262d") > 20
    assert dark(pixels, (0, 0, width, len(pixels))) > 2000


# --- a run ----------------------------------------------------------------------------------------------------

BUSY = """
import time
x = bytearray(60 * 1024 * 1024)
for i in range(0, len(x), 4096):
    x[i] = 1
end = time.monotonic() + 4
while time.monotonic() < end:
    pass
"""


def test_a_runs_charts_have_axes_units_and_values_under_the_mouse(
    receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    prog = tmp_path / "busy.py"
    prog.write_text(BUSY)
    env = client_env(receiver.url, tmp_path / "spool")  # the default sampling settings
    proc = subprocess.run(
        [GLIA, "run", "--name", "busy", "--", sys.executable, str(prog)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = sql("SELECT span_id FROM spans")
    points = sql("SELECT time, value FROM metric_points WHERE metric_name = 'process.memory.usage' ORDER BY time")
    assert len(points) >= 3
    started = sql("SELECT start_time FROM spans")[0]["start_time"]

    with browser_page(receiver) as page:
        page.goto(f"{receiver.url}/#run={run['span_id']}")
        page.wait_for_selector("#cpu-plot canvas")
        assert page.locator("#run-detail h2").inner_text().startswith("Run busy ok")
        memory, cpu = chart(page, "#memory-plot"), chart(page, "#cpu-plot")
        assert memory["points"] == len(points) and cpu["points"] >= 3
        # axes with their units: seconds since the start below, bytes and percent of a core at the side
        assert memory["labels"] == ["seconds since the run started", "RSS"]
        assert cpu["labels"] == ["seconds since the run started", "CPU (% of one core)"]
        assert len(memory["x"]) >= 3 and all(t.endswith("s") for t in memory["x"]), memory["x"]
        assert any(t.endswith(" MiB") for t in memory["y"]), memory["y"]
        assert all(t.endswith("%") for t in cpu["y"]) and len(cpu["y"]) >= 3, cpu["y"]

        # the mouse on the last memory sample: the tooltip says its value and when
        last = points[-1]
        at = (last["time"] - started).total_seconds()
        text = hover(page, "#memory-plot", at, last["value"])
        mib = last["value"] / MIB
        assert text.splitlines()[0] == f"{to_fixed(mib, 1)} MiB", text
        # the page reads the times with Date.parse (whole milliseconds), the test in microseconds: near a rounding
        # boundary (4.005 s) the two round apart, so the time shown is checked to within its last digit
        shown = text.splitlines()[1]
        assert re.fullmatch(r"at \d+\.\d{1,2}s", shown), text
        decimals = len(shown[3:-1].partition(".")[2])
        assert abs(float(shown[3:-1]) - at) <= 0.5 * 10**-decimals + 0.001, (text, at)  # the rounding, the ms
        assert mib > 60
        shot = tmp_path / "run.png"
        page.locator("#run-detail .plots").screenshot(path=str(shot))
        plot_box = page.locator("#run-detail .plots").bounding_box()

    width, height, pixels = png_rgb(shot.read_bytes())
    assert width >= 1000 and height >= 200
    # tick labels are drawn on the canvas: dark text left of the memory plot (y ticks) and below it (x ticks)
    x0, y0, x1, y1 = (round(v - o) for v, o in zip(memory["box"], [plot_box["x"], plot_box["y"]] * 2, strict=True))
    assert dark(pixels, (0, y0, x0 - 2, y1)) > 100, "no y tick labels"
    # about 7 dark pixels a character at this size; the ticks chosen depend on the run's length (0s..4s by halves,
    # or by whole seconds when a loaded machine's run ends a little later), so the figure scales with their text
    chars = sum(len(t) for t in memory["x"])
    assert dark(pixels, (x0, y1 + 2, x1, min(height, y1 + 20))) > 4 * chars, ("no x tick labels", memory["x"])
    assert count(pixels, "#2563eb", (x0, y0, x1, y1)) > 50, "no line"


# --- a program ------------------------------------------------------------------------------------------------

VERSION_A, VERSION_B = "a1" * 32, "b2" * 32
# (span id, version, days ago, wall s, peak MiB, failed): version b takes twice the time and memory of a
PROGRAM_RUNS = [
    *((f"{i:016x}", VERSION_A, 20 - i, 100.0 + i, 500 + 4 * i, False) for i in range(1, 9)),
    *((f"{i:016x}", VERSION_B, 20 - i, 200.0 + i, 1000 + 8 * i, i == 11) for i in range(9, 17)),
]


def test_a_programs_view_charts_its_runs_by_script_version(receiver: ReceiverServer, tmp_path: Path) -> None:
    now = time.time_ns()
    for span_id, version, days, wall, mib, failed in PROGRAM_RUNS:
        attrs: dict[str, object] = {
            "glia.run.kind": "command", "process.exit.code": 137 if failed else 0,
            "glia.memory.peak_rss_bytes": mib * MIB, "glia.memory.peak_rss_method": "wait4",
            "glia.cpu.percent": 90.0 + int(span_id, 16),  # a p95 above one core: 2 CPUs
        }  # fmt: skip
        post_run(receiver, span_id, "align", "align", now - days * 86400 * S, wall, attrs,
                 {"glia.script.sha256": version}, status=2 if failed else 0)  # fmt: skip

    with browser_page(receiver) as page:
        page.goto(f"{receiver.url}/#program=align")
        page.wait_for_selector("#program-memory-plot canvas")
        detail = page.locator("#program-detail")
        assert "Program align" in detail.inner_text()
        assert "16 most recent runs, 2 script versions, 1 failed" in detail.inner_text()
        versions = page.locator("#program-versions tbody tr")
        colours = [versions.nth(i).get_attribute("data-colour") for i in range(2)]
        assert [versions.nth(i).get_attribute("data-version") for i in range(2)] == [VERSION_A, VERSION_B]
        assert [versions.nth(i).locator("td").nth(0).inner_text().strip() for i in range(2)] == ["a1a1a1a1", "b2b2b2b2"]
        assert colours[0] != colours[1]
        assert versions.nth(1).locator("td").nth(3).inner_text() == "1"  # failed
        wall, memory = chart(page, "#program-wall-plot"), chart(page, "#program-memory-plot")
        assert wall["points"] == memory["points"] == 16
        assert wall["labels"] == ["started (UTC)", "wall time"] and memory["labels"] == ["started (UTC)", "peak RSS"]
        # dates below (the runs span 12 days), bytes and durations at the side
        assert len(memory["x"]) >= 2 and all(len(t) == 10 and t[4] == "-" for t in memory["x"] if t), memory["x"]
        assert any(t.endswith(" MiB") or t.endswith(" GiB") for t in memory["y"]), memory["y"]
        assert any(t.endswith("m") or t.endswith("s") for t in wall["y"]), wall["y"]

        # compare: version b flagged against a for its time and memory, as /api/compare says, in the versions'
        # colours; its successful runs only (the failed one left out)
        compared = httpx.get(f"{receiver.url}/api/compare", params={"program": "align"}).json()
        findings = page.locator("#compare-findings li").all_inner_texts()
        assert findings == compared["findings"] and len(findings) == 2, findings
        assert findings[0].startswith("version b2b2 takes 2.0x the wall time of a1a1 (p = 0.00"), findings
        assert findings[1].startswith("version b2b2 uses 2.1x the memory of a1a1 (p = 0.00"), findings
        table = page.locator("#compare-table tbody tr")
        assert [table.nth(i).get_attribute("data-version") for i in range(2)] == [VERSION_A, VERSION_B]
        b = table.nth(1).locator("td")
        assert b.nth(1).inner_text() == "7"  # runs
        b_wall = compared["groups"][1]["wall_seconds"]
        assert b_wall["median"] == 213.0  # runs 9, 10 and 12 to 16
        assert b.nth(2).inner_text() == f"{seconds_text(213)} · p95 {seconds_text(b_wall['p95'])}"
        assert b.nth(4).inner_text().startswith("1.1 GiB · p95 ")
        assert b.nth(5).inner_text().startswith("2.0x p = 0.00") and "flagged" in (
            b.nth(5).get_attribute("class") or ""
        )
        assert b.nth(7).inner_text().startswith("2.1x p = 0.00") and "flagged" in (
            b.nth(7).get_attribute("class") or ""
        )
        assert table.nth(0).locator("td").nth(5).inner_text() == "-"  # the first version has nothing before it
        swatches = table.locator(".swatch").evaluate_all("(s) => s.map((e) => getComputedStyle(e).backgroundColor)")
        assert swatches == [rgb(c) for c in colours]

        # suggest: what to request, the receiver's numbers in the page's units and as #SBATCH lines
        suggested = httpx.get(f"{receiver.url}/api/suggest", params={"program": "align"}).json()
        (group,) = suggested["groups"]
        rec = group["recommended"]
        assert group["runs"] == 15
        cells = page.locator("#suggest-table tbody tr td").all_inner_texts()
        gib = to_fixed(rec["memory_bytes"] / MIB / 1024, 1)
        assert cells[:5] == ["align", "15", f"{gib} GiB", seconds_text(rec["seconds"]), str(rec["cpus"])], cells
        slurm = page.locator("#suggest-slurm").inner_text().splitlines()
        assert slurm[0] == f"#SBATCH --mem={rec['memory_bytes'] // MIB}M"
        assert slurm[1] == f"#SBATCH --time=00:{rec['seconds'] // 60:02d}:00"
        assert rec["cpus"] == 2 and slurm[2] == "#SBATCH --cpus-per-task=2"

        # the mouse on version b's largest run: its value, version and status
        span_id, _, days, _, mib, _ = PROGRAM_RUNS[-1]
        x = (now - days * 86400 * S) / S
        text = hover(page, "#program-memory-plot", x, mib * MIB)
        assert text.splitlines()[0] == f"{to_fixed(mib / 1024, 1)} GiB", text
        assert "version b2b2b2b2" in text and "· ok" in text, text
        assert page.locator("#program-memory-plot").get_attribute("data-hover") == span_id
        shot = tmp_path / "program.png"
        page.screenshot(path=str(shot), full_page=True)
        box = [round(v) for v in wall["box"]]  # the memory chart has the tooltip over some of its points

        # a click on the point opens that run
        page.mouse.down()
        page.mouse.up()
        page.wait_for_function(f"() => location.hash === '#run={span_id}'")
        page.wait_for_selector("#run-detail:not([hidden]) #program-link")

    _, _, pixels = png_rgb(shot.read_bytes())
    # each version's points in its own colour inside the plot, version a's left of version b's, the failed run ringed
    a_px, b_px = count(pixels, colours[0], box), count(pixels, colours[1], box)
    assert a_px > 6 * 20 and b_px > 5 * 20, (a_px, b_px)
    mid = (box[0] + box[2]) // 2
    assert count(pixels, colours[0], (mid, box[1], box[2], box[3])) < a_px / 4
    assert count(pixels, "#c0262d", box) > 20
    # the legend's swatches in the same colours
    assert count(pixels, colours[0]) > a_px and count(pixels, colours[1]) > b_px


def seconds_text(v: float) -> str:
    """The page's format for a duration of a minute or more (1m43s)."""
    s = round(v)
    return f"{s // 60}m{s % 60:02d}s"


def rgb(colour: str) -> str:
    """#rrggbb as the CSSOM gives a computed colour."""
    r, g, b = bytes.fromhex(colour.lstrip("#"))
    return f"rgb({r}, {g}, {b})"


def test_run_statuses_follow_status_and_exit_code(receiver: ReceiverServer) -> None:
    """ok for an unset or OK span with exit 0 or none; error for span status ERROR or a non-zero exit."""
    now = time.time_ns()
    cases = {  # span id: (status code, exit code, what the page says)
        "c1" * 8: (0, None, "ok"), "c2" * 8: (1, 0, "ok"), "c3" * 8: (0, 2, "error"), "c4" * 8: (2, None, "error"),
        "c5" * 8: (0, 0, "ok"),
    }  # fmt: skip
    for i, (span_id, (status, code, _)) in enumerate(cases.items()):
        attrs: dict[str, object] = {} if code is None else {"process.exit.code": code}
        post_run(receiver, span_id, f"s{i}", "statuses", now - (10 - i) * S, 1.0, attrs, {}, status=status)
    with browser_page(receiver) as page:
        page.goto(receiver.url + "/")
        page.wait_for_function("() => document.querySelectorAll('#runs tbody tr').length === 5")
        shown = {
            r.get_attribute("data-run-id"): r.locator("td.status").inner_text()
            for r in page.locator("#runs tbody tr").all()
        }
        assert shown == {k: v[2] for k, v in cases.items()}


# --- running runs (issue 13's live runs) ----------------------------------------------------------------------


def post_live(receiver: ReceiverServer, span_id: str, name: str, start_ns: int, rss_mib: int, state: str) -> None:
    """A start record or heartbeat of a run still going (docs/attributes.md, "Live runs"): no end, the memory now."""
    attrs: dict[str, object] = {
        "glia.run.kind": "command", "glia.run.state": state, "glia.run.heartbeat_unix_nano": time.time_ns(),
        "glia.memory.rss_bytes": rss_mib * MIB, "glia.cpu.user_seconds": 12.5,
    }  # fmt: skip
    post_run(receiver, span_id, name, "live", start_ns, 0.0, attrs, {"host.name": "node7"})


def running_for(page: Any, span_id: str) -> float:
    """The seconds the running list says a run has gone (1m30s -> 90)."""
    text: str = page.locator(f"#running-runs tr[data-run-id='{span_id}'] td.running-for").inner_text()
    minutes, _, rest = text.rpartition("m")
    return 60 * float(minutes or 0) + float(rest.rstrip("s"))


def test_running_runs_are_listed_at_the_top_and_refresh_themselves(
    receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    now = time.time_ns()
    long_start, short_start = now - 90 * S, now - 30 * S
    post_live(receiver, "d1" * 8, "assemble", long_start, 300, "started")
    post_live(receiver, "d2" * 8, "polish", short_start, 100, "started")
    post_run(receiver, "d3" * 8, "fetch", "live", now - 600 * S, 5.0, {"process.exit.code": 0}, {})
    assert {r["run_id"]: r["status"] for r in sql("SELECT run_id, status FROM runs")} == {
        "d1" * 8: "running", "d2" * 8: "running", "d3" * 8: "ok",
    }  # fmt: skip

    with browser_page(receiver) as page:
        page.goto(receiver.url + "/")
        page.wait_for_selector("#running:not([hidden]) #running-runs")
        running = page.locator("#running-runs tbody tr")
        assert [running.nth(i).get_attribute("data-run-id") for i in range(2)] == ["d2" * 8, "d1" * 8]  # newest first
        assert "Running now: 2" in page.locator("#running h2").inner_text()
        first = running_for(page, "d1" * 8)
        assert 89 <= first < 150, first
        assert (
            page.locator("#running-runs tr[data-run-id='d1d1d1d1d1d1d1d1'] td.memory-now").inner_text() == "300.0 MiB"
        )
        # the table lists them too, running, with the time so far
        row = page.locator("#runs tr[data-run-id='d1d1d1d1d1d1d1d1']")
        assert row.locator("td.status").inner_text() == "running"
        assert row.locator("td").nth(7).inner_text().endswith("…")
        # elapsed time counts on by itself, without a reload: the page ticks every second, though on a loaded
        # machine a tick comes late or a refresh from the server sets it back a moment, so it is waited for
        poll(lambda: running_for(page, "d1" * 8) >= first + 2, 10.0, step=0.2)
        shot = tmp_path / "running.png"
        page.screenshot(path=str(shot), full_page=True)

        # a running run's view: how long so far and its memory now, read again while it runs
        page.goto(f"{receiver.url}/#run={'d1' * 8}")
        page.wait_for_selector("#run-detail #fact-memory-now")
        assert page.locator("#fact-memory-now").inner_text() == "300.0 MiB"
        assert page.locator("#fact-status").inner_text() == "running"
        post_live(receiver, "d1" * 8, "assemble", long_start, 400, "running")  # a heartbeat
        page.wait_for_function(
            "() => document.querySelector('#fact-memory-now')?.textContent === '400.0 MiB'", timeout=15000
        )

        # the run ends: it leaves the running list, and the table shows its final figures
        attrs: dict[str, object] = {"glia.run.kind": "command", "process.exit.code": 0}
        post_run(receiver, "d1" * 8, "assemble", "live", long_start, 95.0, attrs, {"host.name": "node7"})
        page.wait_for_function("() => document.querySelector('#fact-status')?.textContent === 'ok'", timeout=15000)
        page.keyboard.press("Escape")
        page.wait_for_function("() => document.querySelectorAll('#running-runs tbody tr').length === 1", timeout=15000)
        row = page.locator("#runs tr[data-run-id='d1d1d1d1d1d1d1d1']")
        ended = "#runs tr[data-run-id='d1d1d1d1d1d1d1d1'] td.status"
        page.wait_for_function(f'() => document.querySelector("{ended}")?.textContent === "ok"', timeout=15000)
        assert row.locator("td").nth(7).inner_text() == "1m35s"

    _, _, pixels = png_rgb(shot.read_bytes())
    assert count(pixels, "#2563eb") > 200  # the running list's frame and heading, and its status in the table


# --- what a failed run said (issue 13's failure output) -------------------------------------------------------

RAISES = """
import glia_otel
def load(batch):
    raise ValueError(f"bad batch {batch}")
with glia_otel.track("train"):
    load(17)
"""
STDERR = 'for i in 1 2 3 4 5; do echo "step $i failed" >&2; done; exit 3'


def post_logs(receiver: ReceiverServer, trace_id: str, span_id: str, records: list[tuple[int, str, int]]) -> None:
    """Log records (time ns, body, severity number) of a run, as an application's OTLP/JSON logs."""
    body = {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "train"}}]},
        "scopeLogs": [{"logRecords": [
            {"timeUnixNano": str(t), "severityNumber": severity, "body": {"stringValue": text},
             "traceId": trace_id, "spanId": span_id}
            for t, text, severity in records
        ]}],
    }]}  # fmt: skip
    response = httpx.post(
        f"{receiver.url}/v1/logs", content=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200 and response.content == b"{}", response.text


def test_a_failed_runs_view_shows_its_stderr_tail_exception_and_logs(
    receiver: ReceiverServer, sql: Sql, tmp_path: Path
) -> None:
    env = client_env(receiver.url, tmp_path / "spool")
    proc = subprocess.run(
        [GLIA, "run", "--keep-stderr", "--name", "steps", "--", "sh", "-c", STDERR],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3 and "step 5 failed" in proc.stderr
    script = tmp_path / "train.py"
    script.write_text(RAISES)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "bad batch 17" in proc.stderr
    runs = {r["name"]: r for r in sql("SELECT name, trace_id, span_id, start_time_unix_nano AS t FROM spans")}
    train = runs["train"]
    post_logs(receiver, train["trace_id"], train["span_id"], [
        (train["t"] + 2_000_000, "giving up\n  after 3 tries", 17),
        (train["t"] + 1_000_000, "loading batch 17", 9),
    ])  # fmt: skip
    assert len(sql("SELECT 1 FROM log_records WHERE span_id = $1", runs["steps"]["span_id"])) == 1

    with browser_page(receiver) as page:
        page.goto(f"{receiver.url}/#run={runs['steps']['span_id']}")
        page.wait_for_selector("#run-detail #run-stderr")
        assert page.locator("#run-stderr").inner_text().splitlines() == [f"step {i} failed" for i in range(1, 6)]
        assert "(5 lines, 70 B written)" in page.locator("#run-detail .stderr h3").inner_text()
        assert page.locator("#fact-status").inner_text().startswith("error")
        shot = tmp_path / "stderr.png"
        page.screenshot(path=str(shot), full_page=True)

        page.goto(f"{receiver.url}/#run={train['span_id']}")
        page.wait_for_selector("#run-detail #exception")
        assert page.locator("#exception h3").inner_text() == "Exception ValueError: bad batch 17"
        trace = page.locator("#exception pre").inner_text().splitlines()
        assert trace[0] == "Traceback (most recent call last):" and trace[-1] == "ValueError: bad batch 17"
        rows = page.locator("#run-logs tbody tr")
        assert [rows.nth(i).locator("td.severity").inner_text() for i in range(2)] == ["INFO", "ERROR"]  # newest last
        assert rows.nth(1).locator("td.body").inner_text() == "giving up\n  after 3 tries"
        assert page.locator("#run-stderr").count() == 0
        # a failed run's output comes before its samples and child spans
        assert page.evaluate(
            "() => { const d = document.querySelector('#run-detail'), h = [...d.querySelectorAll('h3')];"
            " return h.findIndex((e) => e.textContent.startsWith('Exception'))"
            " < h.findIndex((e) => e.textContent === 'Child spans'); }"
        )

    _, _, pixels = png_rgb(shot.read_bytes())
    assert count(pixels, "#1d2330") > 2000  # the output block's dark background
