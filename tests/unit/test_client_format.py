"""glia_otel/_format.py writes with the standard library what the database path wrote with orjson, so moving the
formatting into the client changed no byte of `glia runs` / `glia show`; and it writes valid JSON whatever it gets."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from glia_otel._format import format_csv, format_json, format_run, human_bytes, human_seconds

ROWS: list[dict[str, Any]] = [
    {
        "run_id": "0123456789abcdef",
        "started_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "ended_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "wall_seconds": 1e16,
        "cpu_percent": 0.0001,
        "peak_rss_bytes": 2**62,
        "exit_code": -1,
        "command_args": ["sh", "-c", "exit 3"],
        "attributes": {"z": 1, "a": [1.5, "é", None, True], "nested": {"k": "日本"}, "": "\x01"},
        "elided": [],
    },
    {"run_id": "fedcba9876543210", "started_at": datetime(2026, 5, 6, tzinfo=timezone(timedelta(hours=2)))},
]


def test_json_is_what_orjson_wrote() -> None:
    want = orjson.dumps(ROWS, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    assert format_json(ROWS) == want


def test_the_csv_attributes_cell_is_what_orjson_wrote() -> None:
    (cells,) = list(csv.DictReader(io.StringIO(format_csv(ROWS[:1]))))
    assert cells["attributes"] == orjson.dumps(ROWS[0]["attributes"], option=orjson.OPT_SORT_KEYS).decode()
    assert cells["started_at"] == "2026-01-02T03:04:05+00:00"


def test_show_writes_values_as_orjson_did() -> None:
    run = {**ROWS[0], "run_name": "r"}
    metrics = [{"name": "m", "unit": "1", "attributes": {"b": 1, "a": "x"}, "points": [{"value": 2.0}]}]
    text = format_run(run, metrics)
    for value in run["attributes"].values():
        assert orjson.dumps(value).decode() in text
    assert 'm{"b":1,"a":"x"}' in text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_float_json_cannot_hold_is_null(value: float) -> None:
    text = format_json({"wall_seconds": value, "attributes": {"x": [value]}})
    assert json.loads(text) == {"wall_seconds": None, "attributes": {"x": [None]}}
    assert "NaN" not in text and "Infinity" not in text


def test_human_figures() -> None:
    assert (human_bytes(None), human_bytes(512), human_bytes(1536), human_bytes(3 * 2**40)) == (
        "-",
        "512 B",
        "1.5 KiB",
        "3.0 TiB",
    )
    assert (human_seconds(None), human_seconds(3.14159), human_seconds(42.0), human_seconds(3725.0)) == (
        "-",
        "3.14s",
        "42.0s",
        "1h02m05s",
    )
