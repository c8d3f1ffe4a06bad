"""What `glia runs` and `glia show` print of stored text: nothing a terminal acts on, nothing a spreadsheet runs."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from glia_otel._format import csv_safe, format_csv, format_run, format_table, json_safe, terminal_safe

# a window title, a screen clear, a link (OSC 8), a C1 CSI, DEL, a right-to-left override, a line separator
HOSTILE = "\x1b]0;owned\x07\x1b[2J\x1b]8;;http://x\x1b\\click\x1b]8;;\x1b\\ \x9b31m \x7f \u202eevil\u202c \u2028 end"
RAW = ["\x1b", "\x07", "\x9b", "\x7f", "\u202e", "\u202c", "\u2028"]


def no_raw_controls(text: str, allowed: str = "\n") -> bool:
    return not any((ord(c) < 0x20 and c not in allowed) or c in RAW for c in text)


def test_terminal_safe_writes_controls_as_visible_escapes() -> None:
    assert terminal_safe("\x1b[31mred") == "\\x1b[31mred"
    assert terminal_safe("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert terminal_safe("\x00\x7f\x9b") == "\\x00\\x7f\\x9b"
    assert terminal_safe("\u202eevil\u202c \u2066x\u2069 \u200f \u061c \u2028") == (
        "\\u202eevil\\u202c \\u2066x\\u2069 \\u200f \\u061c \\u2028"
    )
    assert no_raw_controls(terminal_safe(HOSTILE), allowed="")


@pytest.mark.parametrize("text", ["align-reads", "Ünïcödé", "日本語のラン", "run 🧬 #3", "C:\\path", "a=b", "-"])
def test_terminal_safe_leaves_ordinary_text_alone(text: str) -> None:
    assert terminal_safe(text) == text


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x","click")', '\'=HYPERLINK("http://x","click")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("line one\nline two", "line one\nline two"),  # the writer quotes it; a newline is data in CSV
        ("\x1b[2Jx", "\\x1b[2Jx"),
        ("\u202eevil", "\\u202eevil"),
        (-1, -1),  # numbers stay numbers: a negative exit code is not a formula
        (-0.5, -0.5),
        (0, 0),
    ],
)
def test_csv_safe(value: Any, cell: Any) -> None:
    assert csv_safe(value) == cell


def test_json_safe_is_the_same_document() -> None:
    import orjson

    value = {"name": HOSTILE, "n": -1, "nested": ["\x9b", "\u202e"]}
    text = json_safe(orjson.dumps(value).decode())
    assert json.loads(text) == value
    assert no_raw_controls(text, allowed="")


def row(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": "0123456789abcdef",
        "trace_id": "0" * 32,
        "run_name": "run",
        "program_name": "prog",
        "user_name": "ada",
        "host_name": "node1",
        "status": "ok",
        "exit_code": -1,
        "started_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "ended_at": datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
        "wall_seconds": 1.0,
        "cpu_percent": 50.0,
        "peak_rss_bytes": 1024,
        "attributes": {},
    }
    return {**base, **values}


def test_the_table_escapes_every_cell() -> None:
    table = format_table([row(program_name=HOSTILE, user_name="\x1b[8m", host_name="h\u202eost")])
    assert no_raw_controls(table)
    assert "\\x1b]0;owned\\x07" in table and "h\\u202eost" in table
    assert len(table.splitlines()) == 2  # a newline in a value cannot add a row


def test_show_escapes_names_values_keys_and_children() -> None:
    run = row(
        run_name=HOSTILE,
        status_message="line\nbreak",
        attributes={"\x1b[1mkey": "\x9bvalue\u202e", "ok": 1},
        children=[{"name": "\x1b]0;child\x07", "depth": 1, "wall_seconds": 0.1, "status": "ok"}],
    )
    metrics = [{"name": "m\x1b", "unit": "By", "attributes": {"t": "\x7f"}, "points": [{"value": 1.0}]}]
    text = format_run(run, metrics)
    assert no_raw_controls(text)
    assert "line\\nbreak" in text and "\\x1b]0;child\\x07" in text and "\\u202e" in text


def test_csv_output_neutralises_formulas_and_keeps_numbers() -> None:
    out = format_csv([row(program_name='=HYPERLINK("http://x","y")', run_name="@cmd", attributes={"a": "\u202e="})])
    assert no_raw_controls(out)
    (cells,) = list(csv.DictReader(io.StringIO(out)))
    assert cells["program_name"] == '\'=HYPERLINK("http://x","y")' and cells["run_name"] == "'@cmd"
    assert cells["exit_code"] == "-1"
    assert json.loads(cells["attributes"]) == {"a": "\u202e="}  # the JSON cell is the same document
