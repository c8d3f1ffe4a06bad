"""The interactive mode's pure parts: reading a `%%track` line, the transformer, and what `import glia_otel` loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from glia_otel._notebook import _CommentTrackLine, first_line, is_track_line, literal, parse_args, split_args


def test_split_keeps_quoted_and_bracketed_values_whole() -> None:
    assert split_args("fit  lr=0.1 note=\"two words\" tags=['a', 'b'] d={'k': (1, 2)}") == [
        "fit",
        "lr=0.1",
        'note="two words"',
        "tags=['a', 'b']",
        "d={'k': (1, 2)}",
    ]
    assert split_args(r"s='it\'s here' t=x") == [r"s='it\'s here'", "t=x"]
    assert split_args('open="unbalanced quote') == ['open="unbalanced quote']
    assert split_args("   ") == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.1", 0.1),
        ("10", 10),
        ("-3", -3),
        ("1e-3", 0.001),
        ("True", True),
        ("'1.10'", "1.10"),
        ('"two words"', "two words"),
        ("[1, 2]", [1, 2]),
        ("cifar10", "cifar10"),  # not a literal: the text
        ("1.10", 1.1),  # a literal: quote it to keep the text
        ("0123", "0123"),  # not a Python literal
        ("__import__('os')", "__import__('os')"),  # never evaluated
        ("", ""),
    ],
)
def test_values_are_python_literals_else_text(text: str, value: object) -> None:
    assert literal(text) == value
    assert type(literal(text)) is type(value)


def test_parse_args_name_then_key_values() -> None:
    assert parse_args(" fit lr=0.1 dataset=cifar10 url=http://x/?a=b") == (
        "fit",
        {"lr": 0.1, "dataset": "cifar10", "url": "http://x/?a=b"},
    )
    assert parse_args('"train model" params.lr=0.5') == ("train model", {"params.lr": 0.5})
    assert parse_args("lr=0.1") == (None, {"lr": 0.1})
    assert parse_args("") == (None, {})


def test_parse_args_ignores_stray_words_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_args("fit stray lr=1 =3") == ("fit", {"lr": 1})
    err = caplog.text
    assert "%%track: ignoring 'stray'" in err and "ignoring '=3'" in err


def test_the_track_line() -> None:
    assert is_track_line("%%track") and is_track_line("%%track fit lr=1") and is_track_line("%%track\tfit")
    assert not is_track_line("%%tracking") and not is_track_line("%track fit") and not is_track_line("# %%track")
    assert first_line("\n\n   %%track fit\r\nx = 1\n") == "%%track fit"


def test_the_transformer_comments_the_track_line_only() -> None:
    transform = _CommentTrackLine()
    assert transform(["%%track fit lr=1\n", "x = 1\n"]) == ["# %%track fit lr=1\n", "x = 1\n"]
    assert transform(["x = 1\n", "%%track fit\n"]) == ["x = 1\n", "%%track fit\n"]
    assert transform(["%%time\n", "x = 1\n"]) == ["%%time\n", "x = 1\n"]
    assert transform([]) == []
    assert transform.has_side_effects  # IPython's check_complete skips it: a terminal still waits for the body


def test_import_loads_neither_ipython_nor_the_extension() -> None:
    code = (
        "import sys, glia_otel\n"
        "assert callable(glia_otel.load_ipython_extension)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('IPython', 'glia_otel'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['glia_otel']"
