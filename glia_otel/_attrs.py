"""Custom values -> OpenTelemetry attribute values: scalars and homogeneous lists of scalars; nested mappings
flatten to dotted keys. Anything else is converted or dropped with one warning, never an exception."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ._log import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:  # `typing` imports `re` and more: several milliseconds a tracked script need not pay
    from typing import Any

    Scalar = str | bool | int | float
    AttrValue = Scalar | list[str] | list[bool] | list[int] | list[float]


def _scalar(v: Any) -> tuple[Scalar | None, str | None]:
    """(value, problem): a usable scalar, or None with the reason it was dropped/converted."""
    if isinstance(v, bool | str):
        return v, None
    if isinstance(v, int):
        if -(2**63) <= v < 2**63:
            return v, None
        return str(v), "an integer beyond int64 was converted to a string"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return None, f"{v!r} is not a finite number; dropped"
        return v, None
    if v is None:
        return None, "None has no attribute value; dropped"
    if isinstance(v, bytes | bytearray | memoryview):
        return None, "bytes are not stored; dropped"
    try:
        return str(v), f"a {type(v).__name__} was converted to its string form"
    except Exception:
        return None, f"a {type(v).__name__} could not be converted; dropped"


def _list(
    values: list[Any] | tuple[Any, ...] | set[Any] | frozenset[Any],
) -> tuple[AttrValue | None, str | None]:
    items = list(values)
    scalars: list[Scalar] = []
    problem = None
    for item in items:
        if isinstance(item, Mapping | list | tuple | set | frozenset):
            s: Scalar | None = str(item)
            why: str | None = "a nested container in a list was converted to its string form"
        else:
            s, why = _scalar(item)
        if why:
            problem = why
        if s is not None:
            scalars.append(s)
    kinds = {bool if isinstance(x, bool) else type(x) for x in scalars}
    if kinds == {int, float}:
        return [float(x) for x in scalars], problem
    if len(kinds) > 1:
        return [str(x) for x in scalars], "a list of mixed types was converted to strings"
    return scalars, problem  # type: ignore[return-value]


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, AttrValue]:
    """Flatten custom values into attributes, logging one warning per converted/dropped value."""
    out: dict[str, AttrValue] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
            continue
        if isinstance(value, list | tuple | set | frozenset):
            converted, problem = _list(value)
        else:
            converted, problem = _scalar(value)
        if problem:
            get_logger().warning("glia: custom value %r: %s", name, problem)
        if converted is not None:
            out[name] = converted
    return out
