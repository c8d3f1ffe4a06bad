"""Custom values become attribute values, converted or dropped with one warning, never an exception."""

from __future__ import annotations

import logging

import pytest

from glia_otel._attrs import flatten


def test_scalars_and_lists_pass_through(caplog: pytest.LogCaptureFixture) -> None:
    values = {
        "s": "x",
        "b": True,
        "i": 3,
        "f": 1.5,
        "li": [1, 2],
        "ls": ["a"],
        "lf": [1.0, 2.5],
        "lb": [True],
    }
    assert flatten(values) == values
    assert not caplog.records


def test_nested_mappings_flatten_to_dotted_keys() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": "x"}}, "e": 2}) == {"a.b": 1, "a.c.d": "x", "e": 2}


def test_bad_values_are_converted_or_dropped_with_one_warning_each(caplog: pytest.LogCaptureFixture) -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing"

    with caplog.at_level(logging.WARNING, logger="glia_otel"):
        out = flatten(
            {
                "none": None,
                "nan": float("nan"),
                "inf": float("inf"),
                "raw": b"\x00",
                "obj": Thing(),
                "mixed": [1, "a"],
                "ints_floats": [1, 2.5],
                "tuple": (1, 2),
                "big": 2**70,
                "nested": [[1]],
            }
        )
    assert out == {
        "obj": "thing",
        "mixed": ["1", "a"],
        "ints_floats": [1.0, 2.5],
        "tuple": [1, 2],
        "big": str(2**70),
        "nested": ["[1]"],
    }
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 8
    for key in ("none", "nan", "inf", "raw", "obj", "mixed", "big", "nested"):
        assert any(repr(key) in w for w in warned), key


def test_a_value_whose_str_raises_is_dropped() -> None:
    class Evil:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert flatten({"e": Evil()}) == {}
